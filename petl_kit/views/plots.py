"""Figures as plain functions: data in, ``matplotlib.figure.Figure`` out (seaborn styling).

Nothing here trains or reads run folders; notebooks and :mod:`petl_kit.report` pass data in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_SKIP = {"epoch", "lr", "epoch_seconds", "step", "steps"}


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def chance_level(task: str, num_classes: int) -> float | None:
    """Accuracy of guessing one class uniformly at random: ``1 / num_classes`` for single-label
    tasks (``multiclass``, ``key``); None where accuracy is not the score (multilabel, tempo)."""
    return 1.0 / num_classes if task in ("multiclass", "key") and num_classes > 0 else None


def draw_chance(ax, chance: float | None) -> None:
    """A dotted horizontal line at the chance level, labelled (nothing when ``chance`` is None)."""
    if chance is not None:
        ax.axhline(chance, ls=":", color="0.4", lw=1.2, label=f"chance ({chance:.3f})", zorder=1)


def log_scale_fits(values) -> bool:
    """A log axis only for positive values spanning at least an order of magnitude."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return bool(len(v)) and bool((v > 0).all()) and v.max() / v.min() >= 10


def waveform(wave, sr: int, *, title: str = "") -> Figure:
    """A mono waveform ``[time]`` against seconds."""
    y = _array(wave).reshape(-1)
    fig, ax = plt.subplots(figsize=(8, 2.2))
    ax.plot(np.arange(len(y)) / sr, y, lw=0.6, color=sns.color_palette()[0])
    ax.set(xlabel="time [s]", ylabel="amplitude", title=title, xlim=(0, len(y) / sr))
    sns.despine(fig)
    fig.tight_layout()
    return fig


def fbank(features, *, hop_ms: float = 10.0, title: str = "") -> Figure:
    """A log-mel filterbank ``[frames, mel bins]`` (AST input) as an image, time on x."""
    x = _array(features)
    if x.ndim != 2:
        raise ValueError(f"fbank expects [frames, mel bins], got shape {x.shape}")
    fig, ax = plt.subplots(figsize=(8, 2.8))
    extent = (0, x.shape[0] * hop_ms / 1000, 0, x.shape[1])
    im = ax.imshow(x.T, origin="lower", aspect="auto", cmap="magma", extent=extent)
    ax.set(xlabel="time [s]", ylabel="mel bin", title=title)
    fig.colorbar(im, ax=ax, pad=0.01, label="normalised log-mel")
    fig.tight_layout()
    return fig


def learning_curves(
    history: Sequence[dict] | pd.DataFrame, *, title: str = "", chance: float | None = None
) -> Figure:
    """Losses (left) and every other logged metric (right) per epoch, train vs val.

    Each metric has its colour and marker; metrics with identical curves (accuracy and balanced
    accuracy on balanced classes) share one line labelled with both names, so none is hidden.
    ``chance``: the accuracy of guessing (:func:`chance_level`), a dotted line on the right.
    """
    df = pd.DataFrame(history)
    if df.empty:
        raise ValueError("learning_curves: the history is empty")
    x = df["epoch"] if "epoch" in df else pd.Series(range(1, len(df) + 1))
    cols = [c for c in df.columns if c not in _SKIP and pd.api.types.is_numeric_dtype(df[c])]
    losses = [c for c in cols if c.endswith("loss")]
    scores = [c for c in cols if c not in losses]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    bases = list(dict.fromkeys(c.split("_", 1)[-1] for c in cols))  # 'val_accuracy' -> 'accuracy'
    colors = dict(zip(bases, sns.color_palette(n_colors=max(len(bases), 1)), strict=False))
    markers = dict(zip(bases, "osD^vP*X" * (len(bases) // 8 + 1), strict=False))
    for ax, group, label in ((axes[0], losses, "loss"), (axes[1], scores, "metric")):
        # identical curves (accuracy and balanced accuracy on balanced classes) are drawn once,
        # labelled with every name, so none hides under another
        same: dict[str, list[str]] = {}
        for col in group:
            twin = next((k for k in same if np.allclose(df[k], df[col], equal_nan=True)), None)
            if twin is None:
                same[col] = [col]
            else:
                same[twin].append(col)
        for rank, (col, names) in enumerate(same.items()):
            # one colour and marker per metric; train dashed, val solid; earlier lines wider
            base = col.split("_", 1)[-1]
            style = "--" if col.startswith("train") else "-"
            width = 1.2 + 1.2 * (len(same) - 1 - rank) / max(len(same) - 1, 1)
            ax.plot(x, df[col], style, color=colors[base], marker=markers[base], lw=width,
                    ms=3 + width, alpha=0.85, label=" = ".join(names), zorder=2 + rank)  # fmt: skip
        if ax is axes[1]:
            draw_chance(ax, chance)
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def accuracy_vs_params(
    df: pd.DataFrame,
    *,
    y: str | None = None,
    x: str = "trainable_params",
    label: str = "method",
    title: str = "",
    chance: float | None = None,
) -> Figure:
    """Trainable parameters against a test score, one labelled point per row (log x when the
    counts span an order of magnitude; ``chance``: a dotted line at the guessing score).

    ``df``: one row per method, e.g. :func:`petl_kit.report.summary_table`. ``y`` defaults to the
    first ``test_*`` column; a ``<y>_std`` column, when present, draws error bars.
    """
    if y is None:
        y = next((c for c in df.columns if c.startswith("test_") and not c.endswith("_std")), None)
        if y is None:
            raise ValueError(f"accuracy_vs_params: no test_* column in {list(df.columns)}")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if df.empty:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    palette = sns.color_palette("tab10", n_colors=max(len(df), 1))
    std = df[f"{y}_std"] if f"{y}_std" in df else None
    for i, (_, row) in enumerate(df.iterrows()):
        err = None if std is None or pd.isna(std.iloc[i]) else std.iloc[i]
        ax.errorbar(row[x], row[y], yerr=err, fmt="o", ms=8, color=palette[i], capsize=3)
        ax.annotate(str(row[label]), (row[x], row[y]), xytext=(6, 5), textcoords="offset points",
                    fontsize=9)  # fmt: skip
    draw_chance(ax, chance)
    log = log_scale_fits(df[x])
    lo, hi = df[x].min(), df[x].max()
    if log:
        ax.set_xscale("log")
        ax.set_xlim(lo / 2, hi * 3)
    xlabel = "trainable parameters" + (" (log scale)" if log else "")
    ax.set(xlabel=xlabel, ylabel=y.replace("_", " "), title=title)
    ax.grid(True, which="major", alpha=0.3)
    if chance is not None:
        ax.legend(fontsize=8, frameon=False)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def embedding_scatter(points, labels, classes: Sequence[str], *, title: str = "") -> Figure:
    """2-D points ``[N, 2]`` (e.g. a PCA of pooled features) coloured by class."""
    pts, labels = _array(points), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    names = [classes[int(i)] for i in labels]
    sns.scatterplot(x=pts[:, 0], y=pts[:, 1], hue=names, hue_order=list(classes), ax=ax,
                    palette="tab20", s=30)  # fmt: skip
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    ax.set(xlabel="component 1", ylabel="component 2", title=title)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def layer_heatmap(
    table: pd.DataFrame, *, title: str = "", fmt: str = ".2g", label: str = ""
) -> Figure:
    """A (row × column) table of numbers, e.g. relative weight change per layer × module."""
    size = (2.0 + 0.9 * table.shape[1], 1.6 + 0.45 * table.shape[0])
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    sns.heatmap(table, annot=True, fmt=fmt, cmap="viridis", ax=ax, cbar_kws={"label": label})
    ax.set(title=title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    return fig


# ---------------------------------------------------------------------------- comparing runs
def _score_column(df: pd.DataFrame, score: str | None, where: str) -> str:
    if score is None:
        score = next((c for c in df.columns if c.startswith("test_") and not c.endswith("_std")),
                     None)  # fmt: skip
        if score is None:
            raise ValueError(f"{where}: no test_* column in {list(df.columns)}; pass score=")
    elif score not in df:
        raise ValueError(f"{where}: no column {score!r}; columns: {list(df.columns)}")
    return score


def pareto_plot(
    df: pd.DataFrame,
    *,
    cost: str = "trainable_params",
    score: str | None = None,
    label: str | None = "method",
    log: bool | None = None,
    xlabel: str | None = None,
    title: str = "",
    chance: float | None = None,
) -> Figure:
    """Cost (x) against score (y) with the Pareto front highlighted.

    ``log`` None: a log x axis when the costs span an order of magnitude (:func:`log_scale_fits`);
    ``chance``: a dotted line at the guessing score.

    ``df``: one row per run or per method (e.g. :func:`petl_kit.report.summary_table`); the front
    (:func:`petl_kit.efficiency.pareto_front`: lower cost, higher score) is drawn as coloured
    points joined by a step line, every other row in grey. ``score`` defaults to the first
    ``test_*`` column; rows missing cost or score are left out. Each point is annotated with its
    ``label`` column when there is one.
    """
    from ..efficiency import pareto_front

    score = _score_column(df, score, "pareto_plot")
    if cost not in df:
        raise ValueError(f"pareto_plot: no column {cost!r}; columns: {list(df.columns)}")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    data = df[pd.to_numeric(df[cost], errors="coerce").notna() & df[score].notna()]
    if data.empty:
        ax.text(0.5, 0.5, "no runs with these values", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        return fig
    front = pareto_front(data, cost=cost, score=score)
    rest, best = data[~front], data[front].sort_values(cost)
    blue = sns.color_palette()[0]
    ax.scatter(rest[cost], rest[score], s=40, color="0.65", label="dominated", zorder=2)
    ax.step(best[cost], best[score], where="post", color=blue, alpha=0.6, zorder=2)
    ax.scatter(best[cost], best[score], s=70, color=blue, edgecolor="k", label="Pareto front",
               zorder=3)  # fmt: skip
    if label is not None and label in data:
        for _, row in data.iterrows():
            ax.annotate(str(row[label]), (row[cost], row[score]), xytext=(5, 4),
                        textcoords="offset points", fontsize=8)  # fmt: skip
    draw_chance(ax, chance)
    use_log = log_scale_fits(data[cost]) if log is None else log and (data[cost] > 0).all()
    if use_log:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or cost.replace("_", " "), ylabel=score.replace("_", " "), title=title)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def accuracy_vs_flops(
    df: pd.DataFrame, *, flops: str = "gflops", score: str | None = None, **kwargs
) -> Figure:
    """:func:`pareto_plot` against forward GFLOPs per example (the run ledger's ``gflops``)."""
    kwargs.setdefault("xlabel", "forward GFLOPs per example")
    return pareto_plot(df, cost=flops, score=score, **kwargs)


def overlaid_curves(
    histories: dict[str, pd.DataFrame | Sequence[dict]],
    *,
    metric: str = "val_accuracy",
    title: str = "",
    chance: float | None = None,
) -> Figure:
    """One line per run of ``metric`` (a ``history.csv`` column) against the epoch (integer
    ticks; ``chance``: a dotted line at the guessing score).

    ``histories``: ``{run label: history}``; runs without the column are skipped (named in the
    legend title), so a mixed selection still draws.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    missing = []
    colors = sns.color_palette("tab10", n_colors=max(len(histories), 1))
    for color, (name, history) in zip(colors, histories.items(), strict=False):
        df = pd.DataFrame(history)
        if metric not in df or df.empty:
            missing.append(name)
            continue
        x = df["epoch"] if "epoch" in df else range(1, len(df) + 1)
        ax.plot(x, df[metric], marker="o", ms=3, color=color, label=str(name))
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.lines:
        draw_chance(ax, chance)
        note = f"no {metric}: {', '.join(map(str, missing))}" if missing else None
        ax.legend(fontsize=8, frameon=False, title=note, title_fontsize=7,
                  bbox_to_anchor=(1.0, 1.0), loc="upper left")  # fmt: skip
    else:
        ax.text(0.5, 0.5, f"no run has {metric}", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    sns.despine(fig)
    fig.tight_layout()
    return fig


def spread(
    df: pd.DataFrame, *, x: str = "method", score: str | None = None, title: str = ""
) -> Figure:
    """Per-run scores (one dot per fold / seed) over a box per ``x`` group (e.g. method)."""
    score = _score_column(df, score, "spread")
    data = df[df[score].notna()]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * data[x].nunique() + 2), 3.8))
    if data.empty:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    order = list(dict.fromkeys(data[x]))
    groups = [data.loc[data[x] == key, score].to_numpy(dtype=float) for key in order]
    box = {"boxprops": {"facecolor": "0.92"}, "medianprops": {"color": "0.3"}}
    ax.boxplot(groups, positions=range(len(order)), widths=0.5, showfliers=False,
               patch_artist=True, **box)  # fmt: skip
    sns.stripplot(data=data, x=x, y=score, order=order, ax=ax, size=6, jitter=0.15)
    ax.set_xticks(range(len(order)), [str(o) for o in order])
    ax.set(xlabel=x, ylabel=score.replace("_", " "), title=title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    sns.despine(fig)
    fig.tight_layout()
    return fig
