"""Runs of tiny backbones (saved checkpoints, so a run folder rebuilds them) shared by the
share/ tests: each trains once per session in a few seconds."""

import numpy as np
import pytest
import torch

import petl_kit as pk


def run_params(family, checkpoint, method, **over):
    params = dict(
        experiment="share", method=method, dataset="synthetic", data_path=None, n_per_class=3,
        backbone=family, checkpoint=str(checkpoint), max_length=100 if family == "ast" else 16000,
        epochs=1, batch_size=8, lr=None, seed=0, profile="corrected", device="cpu",
        progress=False, **pk.get_method(method).test_config,
    )  # fmt: skip
    return {**params, **over}


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "outputs"
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_run(tiny_checkpoints, tmp_path_factory):
    """``make_run(family, method, **params) -> run folder``, cached per arguments."""
    made = {}

    def make(family, method, **over):
        key = (family, method, tuple(sorted(over.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp("runs") / f"{family}-{method}"
            params = run_params(family, tiny_checkpoints[family], method, **over)
            made[key] = pk.run_experiment(params, run_dir=folder).run_dir
        return made[key]

    return make


def tone(seconds, rate=16000, freq=440.0, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)
