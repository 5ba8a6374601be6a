"""Runs: parameter validation, run folders, run_experiment end to end, sweeps, reports."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import petl_kit as pk
from petl_kit.config import ConfigError
from petl_kit.experiments import claims, runs
from petl_kit.experiments.report import collect_results, summary_table, write_report
from petl_kit.experiments.sweep import plan_sweep, run_sweep
from petl_kit.training.train import evaluate
from tests.conftest import LIGHT_CODE, LIGHT_PARAMS, write_notebook


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    """Every test writes its runs under its own outputs folder; one torch thread (tiny models)."""
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))  # feature cache
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # papermill kernels inherit it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "outputs"
    torch.set_num_threads(threads)


@pytest.fixture
def light(tmp_path):
    return write_notebook(tmp_path / "light.ipynb", LIGHT_PARAMS, LIGHT_CODE)


def tiny_params(checkpoint, **over):
    params = dict(
        experiment="e2e",
        method="bitfit",
        dataset="synthetic",
        data_path=None,
        n_per_class=3,
        backbone="ast",
        checkpoint=str(checkpoint),
        max_length=100,
        epochs=2,
        batch_size=8,
        lr=None,
        seed=0,
        profile="corrected",
        device="cpu",
        bitfit_scope="reference",
        progress=False,
    )
    return {**params, **over}


# ---------------------------------------------------------------------------- parameters
def test_notebook_parameters_reads_every_line(light):
    spec = pk.notebook_parameters(light)
    assert list(spec) == ["experiment", "run_dir", "method", "x", "rate", "tag", "fail"]
    assert spec["run_dir"] == {"type": "str | None", "default": None, "help": "set by the runner"}
    assert spec["x"]["help"] == "a number; 0 is fine too"  # papermill's parser drops such lines
    assert spec["fail"]["type"] == "bool" and spec["rate"]["default"] == 0.5


def test_unknown_key_names_key_file_and_valid_keys(light):
    with pytest.raises(ConfigError) as err:
        pk.validate_params(light, {"x": 2, "epochs": 3}, source="params/a.yaml")
    msg = str(err.value)
    assert "'epochs'" in msg and "params/a.yaml" in msg and str(light) in msg
    assert "valid keys: experiment, run_dir, method, x, rate, tag, fail" in msg


@pytest.mark.parametrize(
    "key,value,ok",
    [
        ("x", 3, True),
        ("x", "3", False),
        ("x", 2.5, False),
        ("x", True, False),
        ("rate", 1, True),
        ("rate", 0.1, True),
        ("rate", None, False),
        ("tag", None, True),
        ("tag", "a", True),
        ("tag", 1, False),
        ("fail", 1, False),
        ("fail", False, True),
    ],
)
def test_wrong_type_names_key_value_type_and_file(light, key, value, ok):
    if ok:
        assert pk.validate_params(light, {key: value}) == {key: value}
        return
    with pytest.raises(ConfigError) as err:
        pk.validate_params(light, {key: value}, source="my.yaml")
    msg = str(err.value)
    expected = pk.notebook_parameters(light)[key]["type"]
    assert f"{key} = {value!r}" in msg and expected in msg and "my.yaml" in msg
    assert str(light) in msg


def test_load_params_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 3\nlr: 1e-3\ncheckpoint: null\nbetas: [0.9, 0.99]\n")
    assert pk.load_params_file(good) == {
        "epochs": 3,
        "lr": 0.001,
        "checkpoint": None,
        "betas": [0.9, 0.99],
    }
    (tmp_path / "empty.yaml").write_text("")
    assert pk.load_params_file(tmp_path / "empty.yaml") == {}
    nested = tmp_path / "nested.yaml"
    nested.write_text("method_config:\n  rank: 4\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: method_config is a nested mapping"):
        pk.load_params_file(nested)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="flat mapping"):
        pk.load_params_file(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        pk.load_params_file(tmp_path / "missing.yaml")


def test_collect_params_takes_known_names_only():
    namespace = {"method": "lora", "rank": 4, "epochs": 1, "pk": object(), "In": [], "x": 1}
    assert runs.collect_params(namespace) == {"method": "lora", "rank": 4, "epochs": 1}


# ---------------------------------------------------------------------------- run folders
def test_new_run_dir_layout_and_uniqueness(outputs, monkeypatch):
    first = pk.new_run_dir("exp", "lora")
    assert first.parent == outputs / "exp" and first.is_dir()
    assert re.fullmatch(r"lora-\d{8}-\d{6}-[0-9a-f]{4}", first.name)
    (first / "metrics.json").write_text("{}")
    # same second and same random suffix: the second run must get a folder of its own
    monkeypatch.setattr(claims.time, "strftime", lambda fmt, *a: "20250101-000000")
    tokens = iter(["abcd", "abcd", "ef01"])
    monkeypatch.setattr(claims.secrets, "token_hex", lambda n: next(tokens))
    a, b = pk.new_run_dir("exp", "lora"), pk.new_run_dir("exp", "lora")
    assert a.name == "lora-20250101-000000-abcd" and b.name == "lora-20250101-000000-ef01"
    assert (first / "metrics.json").read_text() == "{}"
    with pytest.raises(ConfigError, match="cannot name a folder"):
        pk.new_run_dir("../escape", "lora")


# ---------------------------------------------------------------------------- run_experiment
def test_run_experiment_end_to_end(tiny_checkpoints, outputs):
    result = pk.run_experiment(tiny_params(tiny_checkpoints["ast"]))
    run_dir = result.run_dir
    assert run_dir.parent == outputs / "e2e" and run_dir.name.startswith("bitfit-")
    for name in (
        "params.yaml",
        "versions.json",
        "metrics.json",
        "history.csv",
        "ledger.json",
        "learning_curves.png",
        "weights/trainable.safetensors",
    ):
        assert (run_dir / name).is_file(), name

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["method"] == "bitfit"
    for key in (
        "dataset",
        "backbone",
        "profile",
        "trainable_params",
        "total_params",
        "param_groups",
        "val",
        "test",
        "test_last",
        "test_best_val",
        "select",
        "best_epoch",
        "train_seconds",
        "peak_memory_mb",
        "examples_per_second",
        "device",
    ):
        assert key in metrics, key
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and "accuracy" in metrics["val"]
    counts = pk.count_parameters(result.model)
    assert metrics["trainable_params"] == counts["trainable"] == sum(counts["groups"].values())

    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["run_dir"] == str(run_dir) and params["n_per_class"] == 3
    versions = json.loads((run_dir / "versions.json").read_text())
    for key in (
        "petl_kit",
        "git",
        "torch",
        "transformers",
        "torchaudio",
        "python",
        "device",
        "seed",
    ):
        assert key in versions, key
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    ledger = json.loads((run_dir / "ledger.json").read_text())
    assert ledger["stored_bytes"] > 0 and ledger["parameters"]["trainable"] == counts["trainable"]

    # the stored trainable weights alone rebuild the model that was tested
    reloaded = pk.load_trained(run_dir / "weights")
    again = evaluate(reloaded, result.loaders["test"], "multiclass", "cpu")
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert result.param_table().loc["all trainable", "trainable"] == counts["trainable"]


def test_run_experiment_on_given_splits(tiny_checkpoints):
    from petl_kit.data import make_synthetic

    splits = make_synthetic("source", n_per_class=3, seed=1)  # 16 classes, 1 test clip each
    params = tiny_params(tiny_checkpoints["ast"], epochs=1, method="linear", cache=True)
    del params["bitfit_scope"]
    result = pk.run_experiment(params, splits=splits)
    assert result.splits is splits and result.model.head.out_features == 16
    assert result.metrics["sizes"] == splits.sizes()


def test_probe_cache_trains_the_same_linear_probe(tiny_checkpoints):
    """``probe_cache``: the frozen backbone runs once per clip; the probe that trains on its
    cached outputs is the probe the full model trains (same batches, same selected weights)."""
    params = tiny_params(tiny_checkpoints["ast"], method="linear", epochs=3, cache=True)
    del params["bitfit_scope"]
    plain = pk.run_experiment(params)
    cached = pk.run_experiment({**params, "probe_cache": True})
    assert cached.metrics["probe_cache"] is True and plain.metrics["probe_cache"] is False
    assert cached.metrics["test"]["accuracy"] == pytest.approx(plain.metrics["test"]["accuracy"])
    for name, value in plain.model.trainable_state_dict().items():
        assert torch.allclose(cached.model.trainable_state_dict()[name], value, atol=1e-4), name


@pytest.mark.parametrize(
    "over,match",
    [
        ({"method": "lora", "rank": 2}, "only the head and final norm may train"),
        ({"method": "linear", "freq_mask": 4}, "SpecAugment"),
    ],
)
def test_probe_cache_refuses_what_it_cannot_reproduce(tiny_checkpoints, over, match):
    params = {**tiny_params(tiny_checkpoints["ast"], epochs=1, probe_cache=True), **over}
    del params["bitfit_scope"]
    with pytest.raises(ConfigError, match=f"probe_cache=True: .*{match}"):
        pk.run_experiment(params)


def test_run_experiment_failure_is_recorded(tiny_checkpoints, outputs):
    params = tiny_params(tiny_checkpoints["ast"], dataset="no_such_set")
    with pytest.raises(ValueError, match="no_such_set"):
        pk.run_experiment(params)
    (run_dir,) = (outputs / "e2e").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "no_such_set" in metrics["error"]
    assert "Traceback" in metrics["traceback"] and (run_dir / "params.yaml").is_file()


def test_run_experiment_rejects_bad_keys_before_making_a_folder(outputs):
    params = {**tiny_params("x", method="lora"), "rnak": 4}
    del params["bitfit_scope"]
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'rnak' for method 'lora'"):
        pk.run_experiment(params)
    with pytest.raises(ConfigError, match="missing seed"):
        pk.run_experiment({k: v for k, v in tiny_params("x").items() if k != "seed"})
    assert not outputs.exists()


# ---------------------------------------------------------------------------- papermill
def test_run_notebook_records_completed_and_failed(light, outputs):
    run_dir = pk.run_notebook(light, {"x": 2})
    assert run_dir.parent == outputs / "light" and (run_dir / "light.ipynb").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["x"] == 2

    with pytest.raises(pk.RunFailed, match="boom 3") as err:
        pk.run_notebook(light, {"x": 3, "fail": True}, experiment="other")
    failed = err.value.run_dir
    assert failed.parent == outputs / "other" and (failed / "light.ipynb").is_file()
    metrics = json.loads((failed / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "ValueError: boom 3" in metrics["error"]

    with pytest.raises(ConfigError, match="'y'"):
        pk.run_notebook(light, {"y": 1})


def test_sweep_resumes_and_goes_on_after_a_failure(light, tmp_path, outputs):
    sweep = tmp_path / "sweep.yaml"
    runs_ = [
        {"notebook": str(light), "params": {"x": 1}, "name": "one"},
        {"notebook": str(light), "params": {"x": 2, "fail": True}, "name": "bad"},
        {"notebook": str(light), "params_file": "two.yaml", "name": "two"},
    ]
    (tmp_path / "two.yaml").write_text("x: 2\n")
    sweep.write_text(yaml.safe_dump({"experiment": "sw", "params": {"rate": 1.0}, "runs": runs_}))
    lines = []
    first = run_sweep(sweep, log=lines.append)
    assert [r["status"] for r in first] == ["completed", "failed", "completed"]
    assert "[2/3] bad: failed" in "\n".join(lines)

    second = run_sweep(sweep, log=lines.append)
    assert [r["status"] for r in second] == ["skipped", "failed", "skipped"]
    assert second[0]["run_dir"] == first[0]["run_dir"]

    # a changed parameter is a new run; the others stay done
    sweep.write_text(
        yaml.safe_dump(
            {
                "experiment": "sw",
                "params": {"rate": 1.0},
                "runs": [*runs_[:1], {**runs_[0], "params": {"x": 3}}],
            }
        )
    )
    third = run_sweep(sweep, log=lines.append)
    assert [r["status"] for r in third] == ["skipped", "completed"]
    assert len(list((outputs / "sw").iterdir())) == 5  # 3 + the failed one again + the new one


def test_sweep_is_validated_before_any_run(light, tmp_path, outputs):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "experiment": "sw",
                "runs": [
                    {"notebook": str(light), "params": {"x": 1}},
                    {"notebook": str(light), "params": {"x": "two"}},
                ],
            }
        )
    )
    with pytest.raises(ConfigError, match=r"runs\[1\]\.params: x = 'two'"):
        plan_sweep(sweep)
    assert not outputs.exists()


# ---------------------------------------------------------------------------- reports
def _fake_run(outputs, name, stamp, params, metrics):
    run_dir = outputs / "rep" / f"{name}-20250101-{stamp}-abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_report_tables_and_files(outputs):
    def done(acc, n, secs=2.0):
        return {
            "status": "completed",
            "task": "multiclass",
            "trainable_params": n,
            "test": {"accuracy": acc},
            "val": {"accuracy": acc},
            "train_seconds": secs,
        }

    _fake_run(outputs, "full_ft", "000001", {"method": "full_ft", "seed": 0}, done(0.9, 5000))
    _fake_run(outputs, "linear", "000002", {"method": "linear", "seed": 0}, done(0.5, 100))
    _fake_run(outputs, "linear", "000003", {"method": "linear", "seed": 1}, done(0.7, 100))
    _fake_run(outputs, "bitfit", "000004", {"method": "bitfit", "seed": 0}, done(0.6, 300))
    _fake_run(outputs, "bitfit", "000005", {"method": "bitfit", "seed": 0}, done(0.8, 300))  # rerun
    _fake_run(
        outputs,
        "lora",
        "000006",
        {"method": "lora", "seed": 0},
        {"status": "failed", "error": "boom"},
    )

    df = collect_results("rep")
    assert len(df) == 6 and set(df["status"]) == {"completed", "failed"}
    assert {"test_accuracy", "val_accuracy", "trainable_params", "seed", "name"} <= set(df.columns)
    table = summary_table(df)
    assert list(table["method"]) == ["linear", "bitfit", "full_ft"]  # by trainable params
    assert table.loc[0, "test_accuracy"] == pytest.approx(0.6) and table.loc[0, "n_runs"] == 2
    assert table.loc[1, "test_accuracy"] == pytest.approx(0.8)  # the rerun replaced the first

    paths = write_report("rep")
    names = {p.name for p in paths.values()}
    assert {"results.csv", "results.md", "accuracy_vs_params.png"} <= names
    assert {f"{s}.{e}" for s in ("summary", "paper_table") for e in ("csv", "md", "tex")} <= names
    md = paths["md"].read_text()
    assert "| method | trainable params | test accuracy | train time [s] |" in md
    assert md.index("| linear") < md.index("| bitfit") < md.index("| full_ft")
    assert "0.600 ± 0.100 (n=2)" in md and "| 5,000 |" in md and "1 failed" in md
    assert "## Failed runs\n\n- `lora-20250101-000006-abcd`: boom\n" in md
    assert len(pd.read_csv(paths["csv"])) == 6
    with pytest.raises(FileNotFoundError, match="no experiment folder"):
        write_report("nothing_here")


# ---------------------------------------------------------------------------- insight
def test_insight_weight_change_and_features(tiny_checkpoints):
    from petl_kit.analysis import insight
    from petl_kit.data import FbankExtractor, make_synthetic

    def build():
        return pk.build_model(
            "ast", str(tiny_checkpoints["ast"]), num_classes=12, method="bitfit", seed=0
        )

    before, after = build(), build()
    with torch.no_grad():
        after.backbone.layers[1].mlp.fc2.bias.add_(1.0)
    changes = insight.weight_change(after, before, only="bias")
    assert set(changes["kind"]) == {"bias"} and (changes["rel_change"] >= 0).all()
    moved = changes[changes["abs_change"] > 0]
    assert list(moved["name"]) == ["backbone.layers.1.mlp.fc2.bias"]
    assert moved.iloc[0][["layer", "module"]].tolist() == ["1", "fc2"]
    assert moved.iloc[0]["abs_change"] == pytest.approx(1.0)
    table = insight.by_layer(changes, "abs_change")
    assert list(table.index) == ["0", "1", "head", "layernorm"]
    assert table.loc["1", "fc2"] == pytest.approx(1.0)

    splits = make_synthetic(n_per_class=2)
    loaders = splits.loaders(FbankExtractor(max_length=100), batch_size=8)
    feats, labels = insight.pooled_features(before, loaders["train"])
    assert feats.shape == (len(splits.train), 32) and labels.shape == (len(splits.train),)
    assert insight.project_2d(feats).shape == (len(splits.train), 2)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = np.stack([y + 0.05 * rng.normal(size=60), y - 0.05 * rng.normal(size=60)], 1)
    scores = insight.separability((x, y), (x, y))
    assert scores == {"logistic": 1.0, "nearest_centroid": 1.0}
