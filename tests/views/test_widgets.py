"""The comparison dashboard: its logic on a hand-written outputs tree, and the widgets wired to it
(values changed programmatically, no browser)."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt

from petl_kit.views import widgets
from petl_kit.views.widgets import ALL, Dashboard
from tests.conftest import write_run


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    root = tmp_path / "outputs"
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(root))
    write_run(root, "exp_a", "lora", seed=0, trainable=5000, score=0.8, gflops=1.1)
    write_run(root, "exp_a", "lora", seed=1, trainable=5000, score=0.9, gflops=1.1)
    write_run(root, "exp_a", "lora", seed=1, trainable=5000, score=0.1, stamp="20251231-000000")
    write_run(root, "exp_a", "bitfit", trainable=1000, score=0.7, gflops=1.0, nested_ledger=True)
    write_run(root, "exp_a", "adapter", trainable=6000, score=0.75, gflops=1.2)
    write_run(root, "exp_a", "linear", dataset="esc50", backbone="wav2vec2", trainable=100,
              score=0.5, gflops=2.0)  # fmt: skip
    write_run(root, "exp_a", "full_ft", status="failed")
    write_run(root, "exp_b", "lora", metric="map", score=0.4, trainable=5000)
    (root / "empty").mkdir()
    yield root
    plt.close("all")


# ---------------------------------------------------------------------------- the logic
def test_experiments_and_choices(outputs):
    assert widgets.list_experiments() == ["exp_a", "exp_b"]  # 'empty' holds no run
    write_run(outputs, "a_failed", "lora", status="failed")
    assert widgets.list_experiments()[0] == "a_failed"
    assert widgets.list_experiments(completed=True) == ["exp_a", "exp_b"]
    assert Dashboard().controls["experiment"].value == "exp_a"  # the first with results
    runs = widgets.load_runs("exp_a")
    assert len(runs) == 7
    assert runs.set_index("name").loc["bitfit", "gflops"] == pytest.approx(1.0)  # nested ledger
    options = widgets.choices(runs)
    assert options["dataset"] == [ALL, "esc50", "synthetic"]
    assert options["backbone"] == [ALL, "ast", "wav2vec2"]
    assert options["metric"] == ["test_accuracy", "val_accuracy"]
    assert options["cost"][:3] == ["trainable_params", "gflops", "latency_ms"]
    assert widgets.choices(widgets.load_runs("exp_b"))["metric"] == ["test_map", "val_map"]


def test_select_and_compare_table(outputs):
    runs = widgets.load_runs("exp_a")
    chosen = widgets.select_runs(runs, dataset="synthetic")
    # the failed run and the earlier lora seed-1 run (rerun since) are left out
    assert sorted(chosen["name"]) == ["adapter", "bitfit", "lora", "lora"]
    assert widgets.select_runs(runs, dataset="synthetic", backbone="wav2vec2").empty
    table = widgets.compare_table(chosen, "test_accuracy")
    assert table["method"].tolist() == ["bitfit", "lora", "adapter"]  # by trainable params
    lora = table.set_index("method").loc["lora"]
    assert lora["test_accuracy"] == pytest.approx(0.85) and lora["n_runs"] == 2
    assert lora["test_accuracy_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert table["pareto"].tolist() == [True, True, False]  # adapter: dearer and worse than lora
    by_flops = widgets.compare_table(chosen, "test_accuracy", cost="gflops")
    assert by_flops["method"].tolist() == ["bitfit", "lora", "adapter"]
    assert list(by_flops.columns[:6]) == [
        "method", "trainable_params", "test_accuracy", "test_accuracy_std", "n_runs", "gflops"
    ]  # fmt: skip
    assert widgets.compare_table(chosen.iloc[:0], "test_accuracy").empty


def test_settings_sharing_a_method_are_told_apart():
    lr = [json.dumps({"method": "lora", "lr": v}) for v in (0.01, 0.001, 0.01)]
    runs = pd.DataFrame(
        {
            "name": ["lora", "lora", "lora", "bitfit"],
            "config": [*lr, "{}"],
            "trainable_params": [5, 5, 5, 1],
            "test_accuracy": [0.5, 0.6, 0.7, 0.4],
        }
    )
    table = widgets.compare_table(runs, "test_accuracy")
    assert table["method"].tolist() == ["bitfit", "lora (lr=0.001)", "lora (lr=0.01)"]
    assert table.set_index("method").loc["lora (lr=0.01)", "test_accuracy"] == pytest.approx(0.6)
    assert table["n_runs"].tolist() == [1, 1, 2]


def test_histories_and_curve_column(outputs):
    chosen = widgets.select_runs(widgets.load_runs("exp_a"), dataset="synthetic")
    curves = widgets.histories(chosen)
    assert sorted(curves) == ["adapter", "bitfit", "lora · seed 0", "lora · seed 1"]
    assert curves["bitfit"]["val_accuracy"].iloc[-1] == pytest.approx(0.65)
    assert widgets.curve_column("test_accuracy", curves["bitfit"].columns) == "val_accuracy"
    assert widgets.curve_column("test_loss", curves["bitfit"].columns) == "train_loss"
    assert widgets.curve_column("test_map", curves["bitfit"].columns) is None


def test_ledger_columns_of_old_and_new_ledgers():
    nested = {"flops_per_example": {"total": 2e9, "method": 3e6},
              "inference": {"ms_per_example": 0.25}, "merged": {"ms_per_example": 0.2,
              "outputs_agree": True}}  # fmt: skip
    cols = widgets.ledger_columns(nested)
    assert cols["gflops"] == 2.0 and cols["method_mflops"] == 3.0 and cols["latency_ms"] == 0.25
    assert cols["merged_agree"] is True and cols["stored_bytes"] is None
    assert widgets.ledger_columns({**nested, "gflops": 5.0})["gflops"] == 5.0


# ---------------------------------------------------------------------------- the widgets
def _labels(fig):
    return sorted(line.get_label() for line in fig.axes[0].lines if not line.get_label()[0] == "_")


def test_dashboard_follows_its_controls(outputs):
    dash = Dashboard("exp_a")
    c = dash.controls
    assert c["experiment"].options == ("exp_a", "exp_b") and c["metric"].value == "test_accuracy"
    assert dash.table["method"].tolist() == ["linear", "bitfit", "lora", "adapter"]
    front = np.asarray(dash.figures["pareto"].axes[0].collections[1].get_offsets())
    assert np.allclose(front[np.argsort(front[:, 0])], [[100, 0.5], [1000, 0.7], [5000, 0.85]])
    assert "lora · seed 1" in _labels(dash.figures["curves"])

    c["dataset"].value = "synthetic"
    assert dash.table["method"].tolist() == ["bitfit", "lora", "adapter"]
    assert _labels(dash.figures["curves"]) == ["adapter", "bitfit", "lora · seed 0",
                                                "lora · seed 1"]  # fmt: skip
    c["cost"].value = "gflops"
    assert dash.figures["pareto"].axes[0].get_xlabel() == "gflops"
    c["metric"].value = "val_accuracy"
    assert dash.table["val_accuracy"].tolist() == pytest.approx([0.65, 0.8, 0.7])
    c["backbone"].value = "wav2vec2"  # nothing trained on synthetic with wav2vec2
    assert dash.table.empty and not dash.figures and not dash.images  # cleared, with the reason

    c["experiment"].value = "exp_b"  # options follow the experiment
    assert c["metric"].options == ("test_map", "val_map") and c["metric"].value == "test_map"
    assert c["dataset"].value == "synthetic"  # still a choice there: kept
    assert c["backbone"].options == (ALL, "ast") and c["backbone"].value == ALL  # reset
    assert dash.table["method"].tolist() == ["lora"] and dash.table["pareto"].all()
    assert _labels(dash.figures["curves"]) == ["lora"]


def test_dashboard_without_runs(tmp_path, monkeypatch, outputs):
    with pytest.raises(ValueError, match=r"'nope'.*experiments: \['exp_a', 'exp_b'\]"):
        Dashboard("nope")
    with pytest.raises(ValueError, match=r"metric 'test_map' is not in experiment 'exp_a'"):
        Dashboard("exp_a", metric="test_map")
    dash = Dashboard("exp_b", metric="val_map", cost="gflops")
    assert "val_map" in dash.table and dash.figures["pareto"].axes[0].get_xlabel() == "gflops"
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "nothing"))
    dash = Dashboard()
    assert dash.controls["experiment"].options == () and dash.table.empty and not dash.figures


def test_demo_experiment_is_made_once(tmp_path, monkeypatch, tiny_checkpoints):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    make = dict(methods=("linear", "lora"), seeds=(0,), epochs=1, n_per_class=3,
                checkpoint=str(tiny_checkpoints["ast"]))  # fmt: skip
    assert widgets.demo_experiment("demo", **make) == "demo"
    assert widgets.demo_experiment("demo", **make) == "demo"  # already there: no new runs
    runs = widgets.load_runs("demo")
    assert sorted(runs["name"]) == ["linear", "lora"] and runs["gflops"].notna().all()
    dash = Dashboard()
    assert dash.controls["experiment"].value == "demo" and len(dash.table) == 2
