"""Parameter counts by group, stored bytes, FLOPs per example (``torch.utils.flop_counter``),
and the Pareto front of a table of runs (see :mod:`petl_kit.efficiency`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..backbones import anatomy

GROUPS = ("head", "final_norm", "norms", "router", "method", "backbone")


# ---------------------------------------------------------------------------- parameters, bytes
def parameter_group(name: str, norm_names: dict[str, str]) -> str:
    """The group of a parameter of a :class:`~petl_kit.model.PetlModel` by its qualified name."""
    if name.startswith("head."):
        return "head"
    parts = name.split(".")
    if any(p.startswith("petl_") for p in parts):
        return "router" if "router" in name else "method"
    relative = name.removeprefix("backbone.")
    # wrapped sub-layers keep the original module under `.inner.`
    relative = ".".join(p for p in relative.split(".") if p != "inner")
    return norm_names.get(relative, "backbone")


def count_parameters(model: nn.Module) -> dict:
    """``{'total', 'trainable', 'frozen', 'groups': {group: trainable count}}``.

    ``trainable`` is Σ numel over parameters with ``requires_grad`` (the reference's "printed"
    count); BatchNorm running statistics are buffers and never counted.
    """
    norm_names = anatomy.norm_parameter_names(model.backbone) if hasattr(model, "backbone") else {}
    groups = dict.fromkeys(GROUPS, 0)
    total = trainable = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            groups[parameter_group(name, norm_names)] += p.numel()
    return {"total": total, "trainable": trainable, "frozen": total - trainable, "groups": groups}


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the weights a run stores: ``trainable_state_dict()`` (trainable + their buffers)."""
    state = model.trainable_state_dict() if hasattr(model, "trainable_state_dict") else {}
    return sum(t.numel() * t.element_size() for t in state.values())


# ---------------------------------------------------------------------------- FLOPs
def _forward(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None):
    return model(inputs) if mask is None else model(inputs, mask)


def _method_flops(counts: dict[str, dict]) -> int:
    """FLOPs inside injected modules: the outermost ``petl_`` module of each path (a parent's
    count already holds its children's)."""
    total = 0
    for name, ops in counts.items():
        parts = name.split(".")
        if parts[-1].startswith("petl_") and not any(p.startswith("petl_") for p in parts[:-1]):
            total += sum(ops.values())
    return total


def _sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention() -> dict:
    """Formulas for the CPU attention kernels torch's counter has none for (it counts the CUDA
    flash / efficient / cuDNN kernels only): QKᵀ and AV, as for those. Passed per counter, not
    registered globally."""
    aten = torch.ops.aten
    name = "_scaled_dot_product_flash_attention_for_cpu"
    pairs = ((name, _sdpa_flop), (f"{name}_backward", _sdpa_backward_flop))
    return {getattr(aten, name): f for name, f in pairs if hasattr(aten, name)}


def _counter():
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_cpu_attention())


def flops_per_example(
    model: nn.Module,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    backward: bool = False,
) -> dict:
    """FLOPs per example of one forward (and backward) pass, by torch's ``FlopCounterMode``.

    Args:
        inputs: a batch ``[b, L, mel]`` (fbank) or ``[b, S]`` (waveform); ``attention_mask``
            ``[b, S]`` for padded waveform batches.
        backward: also count the backward pass of ``sum(logits)``.

    Counts matmuls, convolutions and attention (QKᵀ and AV, CPU kernels included); elementwise
    ops, softmax and norms are not counted. Returns ``{'total': ..., 'method': ...}``; ``method``
    is the forward FLOPs inside injected ``petl_`` modules (prompt and prefix tuning inject no
    compute of their own: their cost is the longer attention, in ``total`` only).
    """
    batch = inputs.shape[0]
    # grad stays on: the counter's module tracker fails under no_grad when a module is called on
    # a trainable leaf tensor (prompt tuning's dropout on its prompts)
    with _counter() as counter, torch.enable_grad():
        out = _forward(model, inputs, attention_mask)
        if backward:
            out.float().sum().backward()
    counts = counter.get_flop_counts()
    if backward:  # attribute forward FLOPs alone to the method
        with _counter() as fwd, torch.enable_grad():
            _forward(model, inputs, attention_mask)
        method = _method_flops(fwd.get_flop_counts())
    else:
        method = _method_flops(counts)
    return {"total": sum(counts.get("Global", {}).values()) / batch, "method": method / batch}


# ---------------------------------------------------------------------------- trade-offs
def pareto_front(
    table: pd.DataFrame, *, cost: str = "trainable_params", score: str = "test_accuracy"
) -> pd.Series:
    """Which rows of ``table`` are Pareto-optimal for lower ``cost`` and higher ``score``.

    Returns a boolean Series aligned with ``table.index`` (``table[pareto_front(table)]`` is the
    front). A row is on the front when no other row dominates it, i.e. has ``cost <=`` and
    ``score >=`` with at least one strict. Ties: rows with equal cost *and* equal score do not
    dominate each other, so all of them are on the front (or none); among rows of equal cost
    only those with the highest score can be; a row whose score only ties that of a cheaper row
    is dominated. Rows with a missing (NaN) cost or score are never on the front and dominate
    nothing.
    """
    for col in (cost, score):
        if col not in table:
            raise KeyError(f"pareto_front: no column {col!r}; columns: {list(table.columns)}")
    c = pd.to_numeric(table[cost], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(table[score], errors="coerce").to_numpy(dtype=float)
    on = np.zeros(len(table), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(c) | np.isnan(s)))
    order = valid[np.lexsort((-s[valid], c[valid]))]  # cost ascending, score descending
    best_cheaper, i = -np.inf, 0
    while i < len(order):  # one group of equal cost at a time
        j = i
        while j < len(order) and c[order[j]] == c[order[i]]:
            j += 1
        group_best = s[order[i]]
        if group_best > best_cheaper:
            on[order[i:j][s[order[i:j]] == group_best]] = True
        best_cheaper, i = max(best_cheaper, group_best), j
    return pd.Series(on, index=table.index, name="pareto")
