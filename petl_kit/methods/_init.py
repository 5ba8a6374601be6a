"""Initialisation helpers shared by methods that inject modules (spec ``methods.md`` §15, R2).

R2: in the PETL_AST reference every module added inside the backbone is re-initialised by the
backbone's initialiser when the pretrained weights load: every injected ``nn.Linear`` →
trunc-normal(0, 0.02) with absolute bounds ±2 (effectively N(0, 0.02²)), bias 0; every
``nn.LayerNorm`` → weight 1, bias 0; Conv1d, BatchNorm and bare ``nn.Parameter`` tensors keep
their written init. The kit does this explicitly, never through a Hugging Face loader, and each
method's own init switch is the one way to ask for it (``lora_init``, ``adapter_init``,
``expert_init``: ``'reference_effective'`` in the reference profile); there is no model-wide
switch.

VPT-style prompts and prefixes (bare parameters) are not touched by R2; they use
:func:`vpt_uniform_bound`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TRUNC_STD = 0.02


def trunc_normal_(tensor: torch.Tensor, std: float = TRUNC_STD) -> torch.Tensor:
    """In place: trunc-normal(0, ``std``) cut at the absolute bounds ±2 (HF/timm initialiser)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


def reference_init_(module: nn.Module) -> nn.Module:
    """R2 effective init of an injected ``module`` (and everything inside it), in place.

    Every ``nn.Linear``: weight trunc-normal(0, 0.02), bias 0. Every ``nn.LayerNorm``: 1 / 0.
    Other modules and bare parameters are left as written.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def vpt_uniform_bound(config, patch_size: int = 16) -> float:
    """v of the U(−v, v) init of VPT prompts and prefix tokens: √(6 / (3·p·p + D)).

    Kept as written in the reference (AST base: p = 16, D = 768 → v = 0.0625). ``p`` is the
    backbone's ``patch_size`` where it has one (AST); frame models have no patches, so VPT's
    ``patch_size`` (16 by default) is used with their hidden size D.
    """
    p = getattr(config, "patch_size", None) or patch_size
    return math.sqrt(6.0 / (3 * p * p + config.hidden_size))
