"""Shared fixtures: offline Hugging Face, tiny backbones saved with save_pretrained."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

FAMILIES = ("ast", "wav2vec2", "hubert")


def example_input(family: str, batch: int = 2, seed: int = 0):
    """``(input_values, attention_mask)`` for a tiny backbone of ``family``."""
    from petl_kit.backbones.registry import get_family

    g = torch.Generator().manual_seed(seed)
    if get_family(family).input_kind == "fbank":
        return torch.randn(batch, 100, 128, generator=g), None
    wave = torch.randn(batch, 4000, generator=g)
    mask = torch.ones(batch, 4000, dtype=torch.long)
    mask[-1, 3000:] = 0  # a padded example
    wave[-1, 3000:] = 0
    return wave, mask


class Known(torch.nn.Module):
    """A fixed non-linear stand-in for an adapter or a mixture ``[..., d] -> [..., d]``, so each
    placement formula can be written by hand."""

    def __init__(self, d, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(d, d, generator=g) / d**0.5)

    def forward(self, x):
        return torch.tanh(x @ self.w) + 0.1


def train_steps(model, x, mask, y, n: int) -> dict[str, bool]:
    """``n`` AdamW steps (lr 1e-2, no weight decay) of cross-entropy on ``(x, mask) → y``;
    returns ``{name: True if that trainable tensor ever got a non-zero gradient}``."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.0)  # fmt: skip
    grads = {}
    model.train()
    for _ in range(n):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, mask), y).backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                g = p.grad
                grads[name] = grads.get(name, False) or (g is not None and bool(g.abs().sum() > 0))
        opt.step()
    return grads


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """``{family: folder}`` of tiny random-weight backbones written by ``save_pretrained``."""
    from petl_kit.backbones.registry import load_backbone, tiny_config

    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        model = load_backbone(family, None, tiny_config(family))
        with torch.no_grad():  # non-trivial position embeddings / special tokens
            for name, p in model.named_parameters():
                if "position_embeddings" in name or "token" in name:
                    p.normal_(0, 0.5)
        model.save_pretrained(root / family)
        out[family] = root / family
    return out


# --------------------------------------------------------------------------- run notebooks
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}

# A notebook that needs no model: it records a completed run (or raises when fail is True).
LIGHT_PARAMS = """experiment: str = "light"  # outputs/<experiment>/
run_dir: str | None = None  # set by the runner
method: str = "linear"
x: int = 1  # a number; 0 is fine too
rate: float = 0.5
tag: str | None = None  # optional text
fail: bool = False
"""
LIGHT_CODE = """import json, pathlib
if fail:
    raise ValueError(f"boom {x}")
pathlib.Path(run_dir, "metrics.json").write_text(json.dumps({
    "status": "completed", "method": method, "task": "multiclass", "trainable_params": 10 * x,
    "total_params": 1000, "test": {"accuracy": x / 10}, "val": {"accuracy": x / 10},
    "train_seconds": 0.5}))
"""


def write_notebook(path: Path, params_src: str, code_src: str) -> Path:
    """A two-cell notebook at ``path``: a ``parameters``-tagged cell and a code cell."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL})
    cell = nbformat.v4.new_code_cell(params_src)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(code_src)]
    nbformat.write(nb, path)
    return path


def write_run(root, experiment, name, *, seed=0, dataset="synthetic", backbone="ast",
              trainable=1000, score=0.5, metric="accuracy", gflops=1.0, status="completed",
              nested_ledger=False, stamp="20260101-000000"):  # fmt: skip
    """One run folder as run_experiment writes it: params, metrics, history, ledger."""
    run_dir = root / experiment / f"{name}-{stamp}-{seed:02d}{len(name):02d}"
    run_dir.mkdir(parents=True)
    params = {"experiment": experiment, "method": name, "dataset": dataset, "backbone": backbone,
              "seed": seed, "epochs": 3}  # fmt: skip
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = {"status": status, "method": name, "dataset": dataset, "backbone": backbone,
               "task": "multiclass", "trainable_params": trainable, "total_params": 10**6,
               "train_seconds": 2.0 + seed}  # fmt: skip
    if status == "completed":
        metrics.update(val={metric: score - 0.05}, test={metric: score})
        curve = [score - 0.2, score - 0.1, score - 0.05]
        history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.6],
                                f"val_{metric}": curve})  # fmt: skip
        history.to_csv(run_dir / "history.csv", index=False)
        flops = {"total": gflops * 1e9, "method": 1e6}
        ledger = {"stored_bytes": 4 * trainable, "flops_per_example": flops,
                  "inference": {"ms_per_example": 0.5 * gflops}, "merged": None}  # fmt: skip
        if not nested_ledger:
            ledger.update(gflops=gflops, method_mflops=1.0, latency_ms=0.5 * gflops)
        (run_dir / "ledger.json").write_text(json.dumps(ledger))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def write_sweep(path: Path, data: dict) -> Path:
    """A sweep file holding ``data`` (YAML, keys in the given order)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
