"""What the routers of the mixtures of adapters do: an opt-in recorder, token-grid mapping and
diagnostics (spec ``methods.md`` §8, §9 "introspection"). Figures live in
:mod:`petl_kit.routing_plots`; FLOPs and step times in :mod:`petl_kit.efficiency`.

Recording is opt-in and free when off: a mixture module (:class:`~.methods.dense_moa.DenseMoA`,
:class:`~.methods.soft_moa.SoftMoA`) only checks ``self.recorder is None``. Inside the context
manager every call is kept, detached (on the CPU by default)::

    with RoutingRecorder(model) as rec:
        model(x)
    rec.sites                      # [(layer, 'MHSA' | 'FFN'), ...]
    rec.get("probs", layer=3)      # Dense-MoA router probabilities      [b, n, e]
    rec.get("dispatch", layer=3)   # Soft-MoA dispatch weights (over n)  [b, n, e, s]
    rec.get("combine", layer=3)    # Soft-MoA combine weights (over e·s) [b, n, e, s]
    special, grid = rec.on_grid("dispatch", layer=3)   # AST: [b, 2, e, s], [b, F, T, e, s]

Axes: b batch, n tokens, e experts, s slots. AST tokens are CLS, DIST, then the patch grid in
frequency-major order (token ``2 + f·T + t`` is frequency row f, lowest mel band first, and time
column t); wav2vec2/HuBERT tokens are frames, one per ``prod(conv_stride)`` samples (20 ms).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from ..model.checkpointing import recomputing

# ---------------------------------------------------------------------------- the recorder


def mixture_modules(model: nn.Module) -> list[nn.Module]:
    """Every mixture module (anything with a ``recorder`` slot and a ``site``) in ``model``."""
    return [m for m in model.modules() if hasattr(m, "recorder") and hasattr(m, "site")]


class RoutingRecorder:
    """Context manager recording every mixture's routing weights during forward passes.

    Args:
        model: a :class:`~petl_kit.model.PetlModel` (or any module holding mixtures).
        to_cpu: move recorded tensors to the CPU (default True).

    Each forward call of a mixture appends one record ``{name: tensor}`` to its site
    ``(layer, 'MHSA' | 'FFN')``: Dense-MoA ``probs [b, n, e]``; Soft-MoA ``dispatch`` and
    ``combine`` ``[b, n, e, s]``. Outputs are unchanged (the tensors are detached copies).
    """

    def __init__(self, model: nn.Module, *, to_cpu: bool = True):
        self.model, self.to_cpu = model, to_cpu
        self.modules = mixture_modules(model)
        if not self.modules:
            raise ValueError(
                "RoutingRecorder: the model has no mixture of adapters "
                "(method 'dense_moa' or 'soft_moa')"
            )
        self.records: dict[tuple[int, str], list[dict[str, torch.Tensor]]] = defaultdict(list)
        self.kinds = {m.site: type(m).__name__ for m in self.modules}

    def __enter__(self) -> RoutingRecorder:
        for m in self.modules:
            if m.recorder is not None:
                raise RuntimeError("another RoutingRecorder is already attached to this model")
            m.recorder = self
        return self

    def __exit__(self, *exc) -> None:
        for m in self.modules:
            m.recorder = None

    def record(self, module: nn.Module, **tensors: torch.Tensor) -> None:
        """Called by a mixture's forward: keep detached copies of ``tensors`` (not when
        activation checkpointing recomputes the block in backward: that forward was recorded)."""
        if recomputing():
            return
        kept = {}
        for name, t in tensors.items():
            t = t.detach()
            kept[name] = t.cpu() if self.to_cpu else t.clone()
        self.records[module.site].append(kept)

    def clear(self) -> None:
        self.records.clear()

    @property
    def sites(self) -> list[tuple[int, str]]:
        """Mixture sites ``(layer, 'MHSA' | 'FFN')``, in layer order."""
        return sorted(self.kinds, key=lambda s: (s[0], s[1] != "MHSA"))

    @property
    def num_layers(self) -> int:
        return len({layer for layer, _ in self.kinds})

    def _site(self, layer: int, site: str | None) -> tuple[int, str]:
        here = [s for s in self.sites if s[0] == layer]
        if not here:
            raise KeyError(
                f"no mixture at layer {layer}; layers: {sorted({s[0] for s in self.sites})}"
            )
        if site is None:
            if len(here) > 1:
                raise KeyError(f"layer {layer} has mixtures at {[s[1] for s in here]}; give site=")
            return here[0]
        if (layer, site) not in here:
            raise KeyError(
                f"no mixture at ({layer}, {site!r}); sites there: {[s[1] for s in here]}"
            )
        return layer, site

    def get(self, name: str, layer: int, site: str | None = None) -> torch.Tensor:
        """``name`` (``'probs'`` | ``'dispatch'`` | ``'combine'``) at one site, every recorded call
        concatenated along the batch axis (calls must share the token count)."""
        key = self._site(layer, site)
        calls = self.records.get(key, [])
        if not calls:
            raise KeyError(f"nothing recorded at {key}; run the model inside the recorder")
        if name not in calls[0]:
            raise KeyError(f"{self.kinds[key]} at {key} records {sorted(calls[0])}, not {name!r}")
        tensors = [c[name] for c in calls]
        if len({t.shape[1] for t in tensors}) > 1:
            raise ValueError(f"calls at {key} have different token counts; use .records[{key}]")
        return torch.cat(tensors)

    def layout(self, num_tokens: int) -> TokenLayout:
        return token_layout(self.model, num_tokens)

    def on_grid(self, name: str, layer: int, site: str | None = None):
        """``(special [b, k, ...], grid [b, F, T, ...])`` of an AST recording (:func:`to_grid`)."""
        t = self.get(name, layer, site)
        return to_grid(t, self.layout(t.shape[1]))

    def summary(self):
        """One row of diagnostics per site (a pandas DataFrame): expert load, entropies, slots."""
        import pandas as pd

        rows = []
        for layer, site in self.sites:
            if not self.records.get((layer, site)):
                continue
            row = {"layer": layer, "site": site, "kind": self.kinds[(layer, site)]}
            calls = self.records[(layer, site)][0]
            if "probs" in calls:
                p = self.get("probs", layer, site)
                row.update(_load_stats(expert_load(p)))
                row["entropy"] = float(routing_entropy(p).mean() / math.log(p.shape[-1]))
            else:
                d, c = self.get("dispatch", layer, site), self.get("combine", layer, site)
                row.update(_load_stats(expert_load(c)))
                slots = c.shape[2] * c.shape[3]
                row["entropy"] = float(routing_entropy(c.flatten(2)).mean() / math.log(slots))
                row["dispatch_entropy"] = float(
                    routing_entropy(d, dim=1).mean() / math.log(d.shape[1])
                )
                row["tokens_per_slot"] = float(effective_tokens_per_slot(d).mean())
                row["tokens_unread"] = float((slot_coverage(d) < 0.5 / d.shape[1]).float().mean())
            rows.append(row)
        return pd.DataFrame(rows)


def _load_stats(load: torch.Tensor) -> dict:
    return {
        "load": [round(v, 4) for v in load.tolist()],
        "load_max": float(load.max()),
        "load_min": float(load.min()),
    }


@torch.no_grad()
def record_loader(model: nn.Module, loader, *, max_batches: int | None = None):
    """Run ``model`` (in eval mode) over ``loader`` inside a recorder.

    Returns ``(recorder, input_values, labels)``: the inputs and labels concatenated in loader
    order, aligned with the recorded batch axis (so ``rec.get(...)[i]`` belongs to clip i).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    inputs, labels = [], []
    try:
        with RoutingRecorder(model) as rec:
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                mask = batch.get("attention_mask")
                model(batch["input_values"].to(device), None if mask is None else mask.to(device))
                inputs.append(batch["input_values"].cpu())
                labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    return rec, torch.cat(inputs), torch.cat(labels)


# ---------------------------------------------------------------------------- token positions
@dataclass(frozen=True)
class TokenLayout:
    """Where a backbone's tokens come from.

    kind: ``'patches'`` (AST) or ``'frames'`` (wav2vec2/HuBERT).
    num_special: leading non-patch tokens (AST: CLS, DIST).
    grid: ``(F, T)`` frequency rows × time columns (AST), else None.
    stride: AST ``(frequency_stride, time_stride)`` in mel bins / fbank frames, and ``patch``
        the patch size: patch (f, t) covers bins ``[f·fs, f·fs + patch)`` and frames
        ``[t·ts, t·ts + patch)`` (10 ms each). Frame models: ``hop_seconds`` between frames.
    """

    kind: str
    num_special: int = 0
    grid: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    patch: int | None = None
    hop_seconds: float | None = None


def token_layout(model: nn.Module, num_tokens: int) -> TokenLayout:
    """The :class:`TokenLayout` of ``model``'s backbone for a sequence of ``num_tokens``."""
    from ..backbones.registry import get_family, patch_grid

    backbone = getattr(model, "backbone", model)
    grid = patch_grid(backbone)
    cfg = backbone.config
    if grid is not None:
        special = num_tokens - grid[0] * grid[1]
        if special < 0:
            raise ValueError(f"{num_tokens} tokens < the {grid[0]}x{grid[1]} patch grid")
        return TokenLayout(
            "patches", special, tuple(grid), (cfg.frequency_stride, cfg.time_stride), cfg.patch_size
        )
    hop = get_family(backbone.petl_family).token_seconds(cfg)
    return TokenLayout("frames", hop_seconds=hop)


def to_grid(t: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """AST tokens onto the patch grid: ``[b, n, ...] -> (special [b, k, ...], grid [b, F, T, ...])``
    with ``n = k + F·T`` (frequency-major; row 0 = lowest mel band)."""
    if layout.kind != "patches":
        raise ValueError("to_grid needs an AST patch grid; frame models map with frame_times()")
    k, (f, tt) = layout.num_special, layout.grid
    if t.shape[1] != k + f * tt:
        raise ValueError(f"{t.shape[1]} tokens, expected {k} special + {f}x{tt} patches")
    return t[:, :k], t[:, k:].reshape(t.shape[0], f, tt, *t.shape[2:])


def frame_times(layout: TokenLayout, num_tokens: int) -> torch.Tensor:
    """Start time in seconds of each frame token (frame models): ``[n]``."""
    if layout.kind != "frames":
        raise ValueError("frame_times is for frame models; AST tokens map with to_grid()")
    return torch.arange(num_tokens) * layout.hop_seconds


# ---------------------------------------------------------------------------- diagnostics
def routing_entropy(weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy in nats of distributions along ``dim`` (``-Σ w log w``; 0·log 0 = 0)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(dim)


def expert_load(weights: torch.Tensor) -> torch.Tensor:
    """Mean share of the output each expert provides: ``[e]`` (sums to 1).

    Dense ``probs [b, n, e]``: mean router probability; Soft ``combine [b, n, e, s]``: mean
    combine weight summed over the expert's slots. (Soft dispatch weights are 1 per slot by
    construction, so they carry no load information.)
    """
    return per_example_load(weights).mean(0)


def per_example_load(weights: torch.Tensor) -> torch.Tensor:
    """:func:`expert_load` per example: ``[b, e]``."""
    if weights.dim() == 4:
        weights = weights.sum(-1)
    return weights.mean(1)


def load_by_class(weights: torch.Tensor, labels, num_classes: int | None = None) -> torch.Tensor:
    """Mean expert load per class: ``[C, e]`` (rows of absent classes are NaN)."""
    load, labels = per_example_load(weights), torch.as_tensor(labels)
    c = num_classes or int(labels.max()) + 1
    out = torch.full((c, load.shape[1]), float("nan"))
    for k in range(c):
        if (labels == k).any():
            out[k] = load[labels == k].mean(0)
    return out


def slot_coverage(dispatch: torch.Tensor) -> torch.Tensor:
    """Total dispatch weight each token contributes to all slots: ``[b, n, e, s] -> [b, n]``
    (sums to e·s over tokens; a token near 0 is read by no slot)."""
    return dispatch.sum((2, 3))


def effective_tokens_per_slot(dispatch: torch.Tensor) -> torch.Tensor:
    """``exp(entropy over tokens)`` per slot ``[b, e, s]``: 1 (one token) to n (uniform)."""
    return routing_entropy(dispatch, dim=1).exp()
