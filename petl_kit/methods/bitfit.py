"""BitFit (Ben Zaken et al., ACL 2022): train bias terms only.

Reference scope (quirk R34, default in both profiles): the bias of every ``nn.Linear`` and
``nn.LayerNorm`` inside the backbone — LayerNorm weights stay frozen, the patch-embedding Conv2d
bias stays frozen, the final-LN bias is included. AST base: 12 × 8,448 + 768 = 102,144 (+ head).
``bitfit_scope='all_biases'`` trains every parameter named ``bias`` (convs included).
``bitfit_scope='music'`` is the music reference's "extended" BitFit (spec ``methods.md`` §3.2),
found through the anatomy: per block, the biases of the Linear layers of every sub-layer but the
conformer's conv module, and the biases of the block's LayerNorms. MERT: 8,448 per layer (6 layers
50,688); MusicFM: 18,432 per layer (6 layers 110,592); ``bitfit_conv`` adds the conv module's
BatchNorm bias (MusicFM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..backbones import anatomy
from .registry import MethodConfig, MethodSpec, register_method


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    bitfit_scope: Literal["reference", "all_biases", "music"] = "reference"
    bitfit_conv: bool = False


def _music_scope(backbone: nn.Module, with_conv: bool) -> None:
    anat = anatomy.anatomy_of(backbone)
    for layer in anatomy.layers(backbone):
        for site in anatomy.sites(anat):
            for m in anatomy.sublayer(layer, site, anat).modules():
                biased = isinstance(m, nn.Linear) and site != anatomy.CONV
                if with_conv and site == anatomy.CONV:
                    biased = isinstance(m, nn.modules.batchnorm._BatchNorm)
                if biased and m.bias is not None:
                    m.bias.requires_grad_(True)
        for ln in (anat.ln_attention, anat.ln_ffn, *anat.extra_norms):
            getattr(layer, ln).bias.requires_grad_(True)


def apply(model, cfg: BitFitConfig) -> None:
    if cfg.bitfit_scope == "music":
        _music_scope(model.backbone, cfg.bitfit_conv)
        return
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
