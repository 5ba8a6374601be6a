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


def _patch_extent(layout: TokenLayout | None, f: int, t: int):
    """imshow extent placing patch (f, t) at its centre in frames and mel bins (AST layout),
    and the axis labels; without a layout, patch indices."""
    if layout is None or layout.stride is None:
        return None, ("time patch", "frequency patch")
    (fs, ts), half = layout.stride, layout.patch / 2  # patch centres: t·ts + p/2, f·fs + p/2
    extent = (half - ts / 2, half + (t - 0.5) * ts, half - fs / 2, half + (f - 0.5) * fs)
    return extent, ("frame (10 ms)", "mel bin")


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

    Every slot panel shares one colour scale (0 to the largest weight drawn) and one colorbar,
    so slots can be compared; the spectrogram has its own.

    Args:
        spectrogram: ``[L, mel]`` fbank of the clip (time × mel bins).
        dispatch_grid: ``[F, T, e, s]`` one clip's dispatch weights on the patch grid
            (:meth:`RoutingRecorder.on_grid`).
        layout: the AST :class:`TokenLayout`; given, each patch is drawn at its centre in frames
            and mel bins, so the panels line up with the spectrogram (else patch indices).
        slots: ``[(expert, slot), ...]`` to draw (default: all, up to ``max_panels``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    f, t, e, s = dispatch_grid.shape
    panels = list(slots) if slots is not None else [(i, j) for i in range(e) for j in range(s)]
    panels = panels[:max_panels]
    cols = max(min(4, len(panels)), 1)
    rows = 1 + math.ceil(len(panels) / cols)
    fig = plt.figure(figsize=(3.2 * max(cols, 2) + 1.0, 2.5 * rows), layout="constrained")
    grid_spec = fig.add_gridspec(rows, cols)
    spec = _np(spectrogram).T  # [mel, frames]
    ax = fig.add_subplot(grid_spec[0, :])
    im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma")
    ax.set(xlabel="frame (10 ms)", ylabel="mel bin", title=title or "input spectrogram")
    fig.colorbar(im, ax=ax, pad=0.01, label="log-mel (normalised)")
    extent, labels = _patch_extent(layout, f, t)
    weights = _np(dispatch_grid)
    norm = Normalize(0.0, max(float(weights[..., [i for i, _ in panels], :].max()), 1e-12))
    axes = []
    for k, (i, j) in enumerate(panels):
        ax = fig.add_subplot(grid_spec[1 + k // cols, k % cols])
        im = ax.imshow(weights[:, :, i, j], origin="lower", aspect="auto", cmap="viridis",
                       norm=norm, extent=extent)  # fmt: skip
        if extent is not None:
            ax.set(xlim=(0, spec.shape[1]), ylim=(0, spec.shape[0]))
        ax.set(title=f"expert {i} slot {j}", xlabel=labels[0], ylabel=labels[1])
        axes.append(ax)
    fig.colorbar(im, ax=axes, shrink=0.9, label="dispatch weight (softmax over tokens)")
    return fig


def token_labels(layout: TokenLayout | None, num_tokens: int) -> tuple[list[int], list[str]]:
    """Tick positions and labels of a token axis: the special tokens by name (AST: CLS, DIST),
    then the first patch of each frequency row with its mel bins (tokens are frequency-major);
    frame models: every tenth frame with its time."""
    if layout is None:
        return [], []
    if layout.kind != "patches":
        ticks = list(range(0, num_tokens, 10))
        return ticks, [f"{i * layout.hop_seconds:.1f}s" for i in ticks]
    names = ["CLS", "DIST", *[f"special {i}" for i in range(2, layout.num_special)]]
    ticks, labels = list(range(layout.num_special)), names[: layout.num_special]
    (rows, cols), fs = layout.grid, layout.stride[0]
    for row in range(rows):
        ticks.append(layout.num_special + row * cols)
        labels.append(f"bins {row * fs}-{row * fs + layout.patch}")
    return ticks, labels


def plot_combine(combine, *, layout: TokenLayout | None = None,
                 title: str = "combine weights per token"):  # fmt: skip
    """Heatmap of one clip's combine weights: slots × tokens (``[n, e, s]``), one colour scale
    with its colorbar. ``layout`` labels the tokens (:func:`token_labels`; AST: each frequency
    row of patches, frames left to right inside it, separated by lines)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    c = torch.as_tensor(combine)
    n, e, s = c.shape
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.3 * e * s), layout="constrained")
    slots = [f"e{i} s{j}" for i in range(e) for j in range(s)]
    sns.heatmap(_np(c.flatten(1).T), ax=ax, cmap="viridis", vmin=0, yticklabels=slots,
                cbar_kws={"label": "combine weight (softmax over slots)"})  # fmt: skip
    ticks, labels = token_labels(layout, n)
    ax.set_xticks([t + 0.5 for t in ticks], labels, rotation=60, ha="right", fontsize=7)
    if layout is not None and layout.kind == "patches":
        for tick in ticks[layout.num_special :]:
            ax.axvline(tick, color="white", lw=0.8)
    ax.set_yticks([i + 0.5 for i in range(len(slots))], slots, rotation=0, fontsize=8)
    ax.set(xlabel="token", ylabel="slot (expert e, slot s)", title=title)
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
    if layout.kind == "patches":  # each time column at its centre frame
        _, grid = to_grid(p[None], layout)
        centres = torch.arange(layout.grid[1]) * layout.stride[1] + layout.patch / 2
        p, x, xlabel = grid[0].mean(0), centres, "frame (10 ms), patch centre"
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


def plot_clip(rec: RoutingRecorder, clips, *, clip: int = 0, layer: int = -1, site=None,
              label: str | None = None):  # fmt: skip
    """The routing figure for one recorded clip at one layer (``-1``: the last); ``label``
    (the clip's class name) goes into the title.

    Soft-MoA on AST: :func:`plot_slot_dispatch` (spectrogram + each slot on the patch grid);
    Soft-MoA on frame models: :func:`plot_combine`; Dense-MoA: :func:`plot_probs_over_time`.
    """
    layers = sorted({s[0] for s in rec.sites})
    layer, site = rec._site(layers[layer], site)
    where = f"clip {clip}" + (f" ({label})" if label else "") + f", layer {layer} {site}"
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
    combine = rec.get("combine", layer, site)
    return plot_combine(combine[clip], layout=layout, title=f"combine weights, {where}")
