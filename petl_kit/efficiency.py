"""Efficiency ledger: parameter counts by group (more measures join as the kit grows).

Groups of :func:`count_parameters` (spec ``reference_numbers.md`` §3.0):

- ``head``: the classifier;
- ``final_norm``: the LayerNorm after the last block (AST ``layernorm``);
- ``norms``: per-block LayerNorms of the attention and FFN sub-layers;
- ``router``: injected parameters whose name contains ``router`` (mixture routers);
- ``method``: every other injected (``petl_``) parameter: adapters, LoRA, prompts, prefixes;
- ``backbone``: other backbone parameters (BitFit biases, full fine-tuning, ``masked_spec_embed``).
"""

from __future__ import annotations

from torch import nn

from . import anatomy

GROUPS = ("head", "final_norm", "norms", "router", "method", "backbone")


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
    """Bytes of the trainable-only weights a run stores (parameters + injected buffers)."""
    state = model.trainable_state_dict() if hasattr(model, "trainable_state_dict") else {}
    return sum(t.numel() * t.element_size() for t in state.values())
