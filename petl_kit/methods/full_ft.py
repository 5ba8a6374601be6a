"""Full fine-tuning: every backbone parameter trains (AST), with the wav2vec2 reference quirks.

AST (reference and corrected): patch and position embeddings, CLS/DIST, all blocks, final LN.
Count = 85,254,912 + 768 · (12 · t_dim + 2) + head for the base config.

wav2vec2 / HuBERT: the reference trains only the last three encoder layers (quirk R25,
``ft_last_n_layers=3``: 21,263,616 + head). The corrected default trains every transformer layer,
the feature projection and the positional conv; the CNN feature encoder stays frozen
(``freeze_feature_encoder=True``) and the unused ``masked_spec_embed`` stays frozen (R24).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..backbones import anatomy
from ..backbones.registry import get_family
from ..config import option
from .registry import MethodConfig, MethodPreset, MethodSpec, register_method, register_preset


@dataclass(frozen=True)
class FullFTConfig(MethodConfig):
    """``ft_last_n_layers``: train only the last N blocks (frame models); ``'auto'`` = the
    reference's 3 for wav2vec2/HuBERT and all for AST; ``'all'`` (or None under the corrected
    profile, where None is the default) = every block.
    ``freeze_feature_encoder``: keep the conv feature encoder of frame models frozen."""

    ft_last_n_layers: int | Literal["auto", "all"] | None = option("auto", None)
    freeze_feature_encoder: bool = True


def apply(model, cfg: FullFTConfig) -> None:
    backbone = model.backbone
    n_last = None if cfg.ft_last_n_layers == "all" else cfg.ft_last_n_layers
    if n_last == "auto":  # the reference's choice for the family (AST: all; wav2vec2: last 3)
        n_last = get_family(model.family).reference_ft_last_n_layers
    if n_last is not None:
        blocks = anatomy.layers(backbone)
        if not 1 <= n_last <= len(blocks):
            raise ValueError(f"ft_last_n_layers={n_last} but the backbone has {len(blocks)} layers")
        for block in list(blocks)[-n_last:]:
            block.requires_grad_(True)
        return
    backbone.requires_grad_(True)
    encoder = anatomy.anatomy_of(backbone).feature_encoder
    if encoder is not None and cfg.freeze_feature_encoder:
        anatomy.get_path(backbone, encoder).requires_grad_(False)
    if getattr(backbone, "masked_spec_embed", None) is not None:
        backbone.masked_spec_embed.requires_grad_(False)


register_method(
    MethodSpec(
        name="full_ft",
        config_cls=FullFTConfig,
        apply=apply,
        lr=5e-5,
        aliases=("full_fine_tuning", "fft", "finetune"),
        plain_wrapper=True,
        paper="Cappellazzo et al., MLSP 2024 (PETL_AST)",
    )
)

# The music reference fine-tunes everything, CNN feature encoder included (methods.md §2).
_MUSIC_FT = {"ft_last_n_layers": "all", "freeze_feature_encoder": False}
register_preset(
    MethodPreset(
        name="music_finetune",
        method="full_ft",
        reference=_MUSIC_FT,
        corrected=_MUSIC_FT,
        doc="music PETL fine-tuning (§2): every parameter trains, the conv feature encoder "
        "included; MERT 6 layers: 51,843,712 + head",
    )
)
