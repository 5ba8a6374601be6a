"""BitFit (Ben Zaken et al., ACL 2022): train bias terms only.

Reference scope (quirk R34, default in both profiles): the bias of every ``nn.Linear`` and
``nn.LayerNorm`` inside the backbone — LayerNorm weights stay frozen, the patch-embedding Conv2d
bias stays frozen, the final-LN bias is included. AST base: 12 × 8,448 + 768 = 102,144 (+ head).
``bitfit_scope='all_biases'`` trains every parameter named ``bias`` (convs included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from .registry import MethodConfig, MethodSpec, register_method


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    bitfit_scope: Literal["reference", "all_biases"] = "reference"


def apply(model, cfg: BitFitConfig) -> None:
    for module in model.backbone.modules():
        bias = getattr(module, "bias", None)
        if not isinstance(bias, nn.Parameter):
            continue
        if cfg.bitfit_scope == "all_biases" or isinstance(module, (nn.Linear, nn.LayerNorm)):
            bias.requires_grad_(True)


register_method(
    MethodSpec(
        name="bitfit",
        config_cls=BitFitConfig,
        apply=apply,
        lr=5e-3,
        aliases=("fitbit",),
        plain_wrapper=True,
        paper="Ben Zaken et al., ACL 2022",
    )
)
