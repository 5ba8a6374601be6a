"""Figures: every function takes plain data and returns a matplotlib Figure."""

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from petl_kit import plots


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
