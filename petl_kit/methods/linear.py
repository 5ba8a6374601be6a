"""Linear probing: the backbone is frozen; the head (and, as in the reference, the final LN) trains.

Reference ``linear`` of PETL_AST (paper 1, Cappellazzo et al., MLSP 2024): AST unfreezes its final
LayerNorm (quirk R30, kept in both profiles; ``probe_final_ln=False`` gives a pure linear probe);
wav2vec2 trains the head only and switches HF's SpecAugment masking off.
Count (AST) = 1,536 + dC + C; (wav2vec2-base) = dC + C.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backbones import anatomy
from .registry import MethodConfig, MethodSpec, register_method


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    """``probe_final_ln``: also train the LayerNorm after the last block, where there is one."""

    probe_final_ln: bool = True


def apply(model, cfg: LinearConfig) -> None:
    norm = anatomy.final_norm(model.backbone)
    if cfg.probe_final_ln and norm is not None:
        norm.requires_grad_(True)
    if hasattr(model.backbone.config, "apply_spec_augment"):
        model.backbone.config.apply_spec_augment = False


register_method(
    MethodSpec(
        name="linear",
        config_cls=LinearConfig,
        apply=apply,
        lr=1e-3,
        aliases=("linear_probing", "probe"),
        plain_wrapper=True,
        paper="Cappellazzo et al., MLSP 2024 (PETL_AST)",
    )
)
