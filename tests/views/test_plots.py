"""Figures: every function takes plain data and returns a matplotlib Figure."""

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from petl_kit.views import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_waveform_and_fbank():
    fig = plots.waveform(torch.sin(torch.arange(1600) / 5.0), 16000, title="tone")
    assert isinstance(fig, Figure) and fig.axes[0].get_xlim()[1] == pytest.approx(0.1)
    fig = plots.fbank(np.random.default_rng(0).normal(size=(100, 128)))
    assert isinstance(fig, Figure) and fig.axes[0].get_xlim()[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[frames, mel bins\]"):
        plots.fbank(np.zeros(10))


def test_learning_curves_splits_losses_from_metrics():
    history = [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 2.0 / e,
            "val_loss": 2.1 / e,
            "train_accuracy": 0.1 * e,
            "val_accuracy": 0.09 * e,
            "epoch_seconds": 1.0,
        }
        for e in (1, 2, 3)
    ]
    fig = plots.learning_curves(history, title="bitfit")
    losses, scores = fig.axes
    assert {line.get_label() for line in losses.lines} == {"train_loss", "val_loss"}
    assert {line.get_label() for line in scores.lines} == {"train_accuracy", "val_accuracy"}
    with pytest.raises(ValueError, match="empty"):
        plots.learning_curves([])


def test_accuracy_vs_params_one_labelled_point_per_method():
    df = pd.DataFrame(
        {
            "method": ["linear", "bitfit", "full_ft"],
            "trainable_params": [1_000, 10_000, 1_000_000],
            "test_accuracy": [0.5, 0.6, 0.7],
            "test_accuracy_std": [np.nan, 0.1, 0.0],
        }
    )
    fig = plots.accuracy_vs_params(df)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "test accuracy"
    assert [t.get_text() for t in ax.texts] == ["linear", "bitfit", "full_ft"]
    empty = plots.accuracy_vs_params(df.iloc[:0])
    assert "no completed runs" in empty.axes[0].texts[0].get_text()


def test_embedding_scatter_and_heatmap():
    pts = np.random.default_rng(0).normal(size=(12, 2))
    fig = plots.embedding_scatter(pts, np.arange(12) % 3, ["a", "b", "c"])
    assert isinstance(fig, Figure)
    table = pd.DataFrame([[0.1, 0.2], [0.3, 0.4]], index=["0", "1"], columns=["fc1", "fc2"])
    assert isinstance(plots.layer_heatmap(table, title="change"), Figure)


# ---------------------------------------------------------------------------- comparing runs
RUNS = pd.DataFrame(
    {
        "method": ["linear", "bitfit", "lora", "full_ft", "adapter"],
        "trainable_params": [100, 1_000, 5_000, 100_000, 6_000],
        "gflops": [1.0, 1.0, 1.1, 1.0, 1.2],
        "test_accuracy": [0.5, 0.7, 0.8, 0.85, 0.75],
    }
)


def _points(ax):
    """``{label text: (x, y)}`` of the annotated points."""
    return {t.get_text(): tuple(t.xy) for t in ax.texts}


def test_pareto_plot_highlights_the_front():
    fig = plots.pareto_plot(RUNS, title="tiny")
    ax = fig.axes[0]
    dominated, front = ax.collections  # grey scatter first, then the front
    assert sorted(map(tuple, front.get_offsets().tolist())) == [
        (100, 0.5), (1_000, 0.7), (5_000, 0.8), (100_000, 0.85)
    ]  # fmt: skip
    assert dominated.get_offsets().tolist() == [[6_000, 0.75]]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "test accuracy"
    assert _points(ax)["adapter"] == (6_000, 0.75)
    step = ax.lines[0].get_xdata().tolist()
    assert step == [100, 1_000, 5_000, 100_000]
    with pytest.raises(ValueError, match="no column 'gflops'"):
        plots.pareto_plot(RUNS.drop(columns="gflops"), cost="gflops")
    with pytest.raises(ValueError, match="no test_\\* column"):
        plots.pareto_plot(RUNS[["method", "trainable_params"]])


def test_accuracy_vs_flops_and_missing_values():
    table = RUNS.assign(gflops=[1.0, np.nan, 1.1, 1.0, 1.2])
    ax = plots.accuracy_vs_flops(table).axes[0]
    assert ax.get_xlabel() == "forward GFLOPs per example"
    assert "bitfit" not in _points(ax)  # no FLOPs recorded: left out
    front = ax.collections[1].get_offsets().tolist()
    assert sorted(map(tuple, front)) == [(1.0, 0.85)]
    empty = plots.accuracy_vs_flops(table.assign(gflops=np.nan))
    assert "no runs" in empty.axes[0].texts[0].get_text()


def test_overlaid_curves_one_line_per_run():
    histories = {
        "lora": [{"epoch": e, "val_accuracy": 0.1 * e} for e in (1, 2, 3)],
        "bitfit": pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.2, 0.3]}),
        "no-val": [{"epoch": 1, "train_loss": 1.0}],
    }
    ax = plots.overlaid_curves(histories).axes[0]
    assert [line.get_label() for line in ax.lines] == ["lora", "bitfit"]
    assert ax.lines[1].get_ydata().tolist() == [0.2, 0.3]
    assert "no-val" in ax.get_legend().get_title().get_text()
    ax = plots.overlaid_curves(histories, metric="test_map").axes[0]
    assert not ax.lines and "no run has test_map" in ax.texts[0].get_text()


def test_spread_one_dot_per_run():
    runs = pd.DataFrame(
        {"method": ["lora"] * 3 + ["bitfit"] * 2, "test_accuracy": [0.7, 0.8, 0.75, 0.6, 0.65]}
    )
    ax = plots.spread(runs).axes[0]
    dots = [c for c in ax.collections if len(c.get_offsets())]
    assert sorted(len(c.get_offsets()) for c in dots) == [2, 3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lora", "bitfit"]
