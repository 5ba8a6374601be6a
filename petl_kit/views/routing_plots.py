"""Figures of what the mixtures' routers do: data from :mod:`petl_kit.routing` in, a
``matplotlib.figure.Figure`` out (notebooks ``17_dense_moa``, ``18_soft_moa``, ``20_moa_analysis``,
``21_router_slots``).

Axes: b batch, n tokens, e experts, s slots; AST patch grids are ``[F, T]`` (frequency rows from
the lowest mel band, time columns).
"""

from __future__ import annotations

import math

import torch

from ..analysis.routing import RoutingRecorder, TokenLayout, frame_times, to_grid


def _np(t):
    return torch.as_tensor(t).detach().float().cpu().numpy()


def plot_slot_dispatch(
    spectrogram,
    dispatch_grid,
    *,
    layout: TokenLayout | None = None,
    slots=None,
    title: str = "",
    max_panels: int = 16,
):
    """A clip's spectrogram above each slot's dispatch weights on the frequency × time grid.

    Args:
        spectrogram: ``[L, mel]`` fbank of the clip (time × mel bins).
        dispatch_grid: ``[F, T, e, s]`` one clip's dispatch weights on the patch grid
            (:meth:`RoutingRecorder.on_grid`).
        layout: the AST :class:`TokenLayout`; given, each patch is drawn at its centre in frames
            and mel bins, so the panels line up with the spectrogram.
        slots: ``[(expert, slot), ...]`` to draw (default: all, up to ``max_panels``).
    """
    import matplotlib.pyplot as plt

    f, t, e, s = dispatch_grid.shape
    panels = list(slots) if slots is not None else [(i, j) for i in range(e) for j in range(s)]
    panels = panels[:max_panels]
    cols = max(min(4, len(panels)), 1)
    rows = 1 + math.ceil(len(panels) / cols)
    fig = plt.figure(figsize=(3.4 * max(cols, 2), 2.5 * rows), layout="constrained")
    grid_spec = fig.add_gridspec(rows, cols)
    spec = _np(spectrogram).T  # [mel, frames]
    ax = fig.add_subplot(grid_spec[0, :])
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma")
    ax.set(xlabel="frame (10 ms)", ylabel="mel bin", title=title or "input spectrogram")
    extent, labels = None, ("time patch", "freq. patch")
    if layout is not None and layout.stride is not None:
        (fs, ts), half = layout.stride, layout.patch / 2  # patch centres: t·ts + p/2, f·fs + p/2
        extent = (half - ts / 2, half + (t - 0.5) * ts, half - fs / 2, half + (f - 0.5) * fs)
        labels = ("frame", "mel bin")
    for k, (i, j) in enumerate(panels):
        ax = fig.add_subplot(grid_spec[1 + k // cols, k % cols])
        im = ax.imshow(
            _np(dispatch_grid[:, :, i, j]),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=extent,
        )
        if extent is not None:
            ax.set(xlim=(0, spec.shape[1]), ylim=(0, spec.shape[0]))
        ax.set(title=f"expert {i} slot {j}", xlabel=labels[0], ylabel=labels[1])
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_combine(combine, *, title: str = "combine weights per token"):
    """Heatmap of one clip's combine weights: tokens × slots (``[n, e, s]``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    c = torch.as_tensor(combine)
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    sns.heatmap(_np(c.flatten(1).T), ax=ax, cmap="viridis", cbar_kws={"label": "weight"})
    ax.set(xlabel="token", ylabel="slot (expert·slots + slot)", title=title)
    ax.set_xticks([])
    return fig


def plot_load_by_class(load, classes, *, title: str = "expert usage per class"):
    """Heatmap of :func:`load_by_class` (``[C, e]``) with class names."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    load = _np(load)
    fig, ax = plt.subplots(
        figsize=(3.0 + 0.6 * load.shape[1], 1.0 + 0.32 * len(classes)), layout="constrained"
    )
    sns.heatmap(
        load,
        ax=ax,
        annot=load.shape[1] <= 8,
        annot_kws={"fontsize": 7},
        fmt=".2f",
        cmap="rocket_r",
        yticklabels=list(classes),
        cbar_kws={"label": "mean share"},
    )
    ax.set(xlabel="expert", ylabel="class", title=title)
    return fig


def plot_probs_over_time(probs, layout: TokenLayout, *, title: str = "router probabilities"):
    """Dense router probabilities of one clip over time: ``probs [n, e]``; AST tokens are
    averaged over the frequency rows of each time column (CLS/DIST left out)."""
    import matplotlib.pyplot as plt

    p = torch.as_tensor(probs)
    if layout.kind == "patches":
        _, grid = to_grid(p[None], layout)
        p, x, xlabel = grid[0].mean(0), torch.arange(layout.grid[1]), "time patch"
    else:
        x, xlabel = frame_times(layout, p.shape[0]), "time (s)"
    fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
    ax.stackplot(x.numpy(), p.T.numpy(), labels=[f"expert {i}" for i in range(p.shape[1])])
    ax.set(xlabel=xlabel, ylabel="probability", ylim=(0, 1), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small")
    return fig


def plot_mixture_comparison(table, *, x: str = "experts", hue: str = "model"):
    """Accuracy, trainable parameters, FLOPs and step time against the number of experts.

    ``table``: one row per run with columns ``x``, ``hue`` and any of ``accuracy``,
    ``trainable``, ``method_mflops``, ``step_ms`` (notebook ``20_moa_analysis``).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = [
        (c, label)
        for c, label in (
            ("accuracy", "test accuracy"),
            ("trainable", "trainable parameters"),
            ("method_mflops", "mixture MFLOPs / example (fwd)"),
            ("step_ms", "training step (ms)"),
        )
        if c in table
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.6 * len(panels), 3.2), layout="constrained", squeeze=False
    )
    for i, (ax, (col, label)) in enumerate(zip(axes[0], panels, strict=True)):
        sns.lineplot(data=table, x=x, y=col, hue=hue, marker="o", ax=ax, legend=i == 0)
        ax.set(ylabel=label, xlabel=f"number of {x}")
    return fig


def plot_clip(rec: RoutingRecorder, clips, *, clip: int = 0, layer: int = -1, site=None):
    """The routing figure for one recorded clip at one layer (``-1``: the last).

    Soft-MoA on AST: :func:`plot_slot_dispatch` (spectrogram + each slot on the patch grid);
    Soft-MoA on frame models: :func:`plot_combine`; Dense-MoA: :func:`plot_probs_over_time`.
    """
    layers = sorted({s[0] for s in rec.sites})
    layer, site = rec._site(layers[layer], site)
    where = f"clip {clip}, layer {layer} {site}"
    if rec.kinds[(layer, site)] == "DenseMoA":
        probs = rec.get("probs", layer, site)
        return plot_probs_over_time(
            probs[clip], rec.layout(probs.shape[1]), title=f"router probabilities, {where}"
        )
    dispatch = rec.get("dispatch", layer, site)
    layout = rec.layout(dispatch.shape[1])
    if layout.kind == "patches":
        _, grid = to_grid(dispatch, layout)
        return plot_slot_dispatch(
            clips[clip], grid[clip], layout=layout, title=f"input and dispatch, {where}"
        )
    return plot_combine(rec.get("combine", layer, site)[clip], title=f"combine weights, {where}")
