"""SSF (Lian et al., "Scaling & Shifting Your Features: A New Baseline for Efficient Model
Tuning", NeurIPS 2022): a learnt per-channel scale and shift of chosen frozen layers' outputs.

Each target layer (see :mod:`.reparam`: ``q, k, v, o``, ``ffn_in``, ``ffn_out``, ``conv``) is
swapped for an :class:`SSFLinear` computing ``y = (W x + b) ⊙ γ + β`` with ``W``, ``b`` frozen,
``γ ∈ ℝ^out ~ N(1, 0.02)`` and ``β ∈ ℝ^out ~ N(0, 0.02)`` — so SSF is not the identity at init.
A layer without a bias (the conformer's pointwise convs) gets the scale only. Spec ``methods.md``
§12, quirks M5, M20–M22 (the music PETL reference's "extended" SSF, unregistered there, M21).

Profiles:

==================  ====================================  ===================================
option              reference                             corrected (default)
==================  ====================================  ===================================
``ssf_flags``       ``'always_on'`` (M20): the reference      ``'honoured'``: exactly
                    tests its flags with ``is not None``,     ``targets``
                    so every target is on (MusicFM's
                    pointwise convs always get a scale)
``merge_on_eval``   True in preset ``'music_ssf'`` (M5)       False
==================  ====================================  ===================================

The width comes from each wrapped layer, never from a default (M22: the reference's MERT class
assumed 1,024 channels). Trainable: γ, β and the head; LayerNorms stay frozen.
Count = Σ_targets (out + out·[has bias]). Preset ``'music_ssf'``: MERT 13,824 per layer (82,944
for 6 layers); MusicFM 28,672 per layer, 172,032 for 6 layers, 190,464 with the pointwise-conv
scales of the reference (M20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import anatomy
from ..config import ConfigError, option
from . import reparam
from .registry import MethodConfig, MethodPreset, MethodSpec, register_method, register_preset

DEFAULT_TARGETS = ("q", "k", "v", "o", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class SSFConfig(MethodConfig):
    """SSF keys (Lian et al., NeurIPS 2022; spec ``methods.md`` §12).

    targets: layers whose outputs are scaled and shifted, any of q, k, v, o, ffn_in, ffn_out,
        conv (``Wq``, ``q_proj``, ``fc1`` spellings accepted). Default: the attention
        projections and every FFN Linear (the music reference's layers).
    ssf_flags: M20, ``'always_on'`` (every target on, whatever ``targets`` says: the reference's
        flag test) → ``'honoured'``.
    init_std: std of γ ~ N(1, std) and β ~ N(0, std) (0.02).
    merge_on_eval: fold γ, β into W, b at every switch to eval mode and take them out at every
        switch to train mode (M5, the music reference); False merges only on request
        (:meth:`PetlModel.merge`). Set by preset ``'music_ssf'``'s reference profile.
    """

    targets: tuple[str, ...] = DEFAULT_TARGETS
    ssf_flags: Literal["always_on", "honoured"] = option("always_on", "honoured")
    init_std: float = 0.02
    merge_on_eval: bool = False

    def __post_init__(self):
        targets = []
        for t in self.targets:
            c = reparam.canonical_target(t)
            if c not in reparam.TARGETS:
                raise ConfigError(
                    f"ssf method_config: unknown target {t!r}; valid targets: "
                    f"{', '.join(reparam.TARGETS)} (also Wq.., q_proj/out_proj, fc1/fc2 spellings)"
                )
            targets.append(c)
        if not targets:
            raise ConfigError(
                f"ssf method_config: targets is empty; choose from {', '.join(reparam.TARGETS)}"
            )
        if not self.init_std >= 0:
            raise ConfigError(f"ssf method_config: init_std = {self.init_std!r}; expected >= 0")
        object.__setattr__(self, "targets", tuple(t for t in reparam.TARGETS if t in targets))

    def active_targets(self) -> tuple[str, ...]:
        """The targets SSF is applied to: all of them under ``ssf_flags='always_on'`` (M20)."""
        return reparam.TARGETS if self.ssf_flags == "always_on" else self.targets


class SSFParams(nn.Module):
    """γ ``[out]`` (``scale``) and, for a layer with a bias, β ``[out]`` (``shift``)."""

    def __init__(self, out: int, shift: bool, std: float):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(out))
        self.shift = nn.Parameter(torch.empty(out)) if shift else None
        with torch.no_grad():
            nn.init.normal_(self.scale, 1.0, std)
            if self.shift is not None:
                nn.init.normal_(self.shift, 0.0, std)


class SSFLinear(reparam.MergeableWrapper):
    """A frozen ``Linear``, its output scaled and shifted per channel: ``y = (W x + b) ⊙ γ + β``.

    Holds the original ``weight`` ``[out, in]`` and ``bias`` under their own names (the
    backbone's state-dict keys are unchanged) and γ, β under ``petl_ssf``. Merged:
    ``W ← γ ⊙ W`` (row-wise), ``b ← γ ⊙ b + β``. Shapes: ``x [..., in] -> [..., out]``.
    """

    def __init__(self, base: nn.Linear, std: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.petl_ssf = SSFParams(self.out_features, base.bias is not None, std)
        self.merged = False

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _channels(self, t: torch.Tensor) -> torch.Tensor:
        return t  # channels last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._base(x)
        if self.merged:
            return y
        p = self.petl_ssf
        y = y * self._channels(p.scale)
        return y if p.shift is None else y + self._channels(p.shift)

    def _fold(self, sign: int) -> None:
        p = self.petl_ssf
        scale = p.scale.to(self.weight.dtype)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        if sign > 0:
            self.weight.mul_(scale.view(shape))
            if self.bias is not None:
                self.bias.mul_(scale)
                if p.shift is not None:
                    self.bias.add_(p.shift.to(self.bias.dtype))
        else:
            if self.bias is not None:
                if p.shift is not None:
                    self.bias.sub_(p.shift.to(self.bias.dtype))
                self.bias.div_(scale)
            self.weight.div_(scale.view(shape))

    def unload(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this module's (merged or original) weight and bias."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device="meta"
        )
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self) -> str:
        shift = self.petl_ssf.shift is not None
        out = self.out_features
        return f"in={self.in_features}, out={out}, shift={shift}, merged={self.merged}"


class SSFConv1d(SSFLinear):
    """A frozen pointwise ``Conv1d`` with per-channel scale (and shift where it has a bias).

    Shapes: ``x [B, in, T] -> [B, out, T]``.
    """

    def __init__(self, base: nn.Conv1d, std: float):
        if base.kernel_size != (1,) or base.groups != 1 or base.stride != (1,):
            raise ValueError(f"SSFConv1d needs a pointwise Conv1d (k=1, groups=1), got {base}")
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_channels, base.out_channels
        self.weight, self.bias = base.weight, base.bias
        self.petl_ssf = SSFParams(self.out_features, base.bias is not None, std)
        self.merged = False

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias)

    def _channels(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, None]  # [out, 1] against [B, out, T]

    def unload(self) -> nn.Conv1d:
        conv = nn.Conv1d(
            self.in_features, self.out_features, 1, bias=self.bias is not None, device="meta"
        )
        conv.weight, conv.bias = self.weight, self.bias
        return conv


def apply(model, cfg: SSFConfig) -> None:
    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    targets = cfg.active_targets()
    for layer in anatomy.layers(backbone):
        for _, parent, attr, base in reparam.block_targets(layer, anat, targets):
            if isinstance(base, reparam.MergeableWrapper):
                raise ValueError(f"{attr} is already reparameterised ({type(base).__name__})")
            wrapper = SSFConv1d if isinstance(base, nn.Conv1d) else SSFLinear
            setattr(parent, attr, wrapper(base, cfg.init_std))


register_method(
    MethodSpec(
        name="ssf",
        config_cls=SSFConfig,
        apply=apply,
        lr=1e-4,  # the music reference's PETL learning rate (training.md §2.3)
        identity_at_init=lambda cfg: cfg.init_std == 0,
        merges=True,
        paper="Lian et al., NeurIPS 2022 (SSF); Ding & Lerch, 2024 (music PETL)",
        test_config={},
    )
)

register_preset(
    MethodPreset(
        name="music_ssf",
        method="ssf",
        reference=dict(merge_on_eval=True),  # ssf_flags 'always_on' (M20) follows the profile
        corrected=dict(targets=DEFAULT_TARGETS),
        doc="music PETL SSF (§12): scale and shift of q, k, v, o and the FFN Linears (reference: "
        "also MusicFM's pointwise convs, M20); MERT 6 layers: 82,944",
    )
)
