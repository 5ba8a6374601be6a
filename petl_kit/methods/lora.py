"""LoRA (Hu et al., ICLR 2022): low-rank updates of the attention projections.

Each target projection (found through :func:`petl_kit.anatomy.projections`) is swapped for a
:class:`LoRALinear` computing ``W x + b + s · B(A(x))`` with the original ``W``, ``b`` frozen,
``A = Linear(D → r)`` and ``B = Linear(r → D)`` (no bias, no dropout). The ``o`` target acts on the
attention context (the input of the output projection). Spec ``methods.md`` §4.

Profiles (quirks R4, R8, R9):

==================  ==============================  =====================================
option              reference                       corrected (default)
==================  ==============================  =====================================
``lora_scaling``    ``'alpha_over_rr'``: s = α / RR  ``'alpha_over_r'``: s = α / r
``lora_init``       ``'reference_effective'``: A, B  ``'zero_B'``: A Kaiming-uniform(a=√5),
                    trunc-normal(0, 0.02) (ΔW ≠ 0)   B = 0 (ΔW = 0 at init)
==================  ==============================  =====================================

``lora_init`` is the LoRA face of R2: it alone decides the LoRA matrices' init (each method's
init switch is the one way to say R2).

Rank: give ``reduction_rate`` RR (r = round(D / RR), Python round-half-even, as the reference
does) or ``rank`` r, not both. Neither given → RR = 64 in both profiles (r = 12 on a 768-wide
backbone; a rank that rounds to 0 is an error). With ``rank`` and ``'alpha_over_rr'``, RR = D / r.

Targets: any of ``q, k, v, o`` (``"Wq,Wv"``, ``"q_proj"``, ``"out_proj"`` spellings accepted);
Q, V by default in both profiles (R9). ``lora_variant='shared_qk_legacy'`` reproduces the PETL_AST
code before its January 2024 fix: one (A, B) pair per layer whose delta is added to both Q and K
(set ``targets='q,k'``).

Trainable: the LoRA matrices + head, and on AST also the final LN (the reference wrapper leaves it
trainable; both profiles keep it so the counts equal the published tables).
Count (AST base, Q,V) = 12 · 2 · 2 · 768 · r = 36,864 · r (+ 1,536 + head). Merging folds
``s · B A`` into ``W`` (:meth:`PetlModel.merge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import anatomy
from ..config import ConfigError, option
from . import reparam
from ._init import trunc_normal_
from .registry import MethodConfig, MethodPreset, MethodSpec, register_method, register_preset

TARGETS = reparam.TARGETS
CONV_SITE = reparam.CONV_SITE
_canonical_target = reparam.canonical_target


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    """LoRA keys (design §4): ``reduction_rate`` or ``rank``, ``alpha``, ``targets``.

    Beyond the attention projections, ``targets`` may name ``ffn_in`` / ``ffn_out`` (the FFN's
    two Linears, on every FFN of a block: both of a conformer's macaron FFNs) and ``conv`` (the
    pointwise, kernel-1 Conv1d layers of a conformer's conv module), as the music reference does
    (§4.3; preset ``'music_lora'``: rank 2 on all of them with s = 1). ``conv`` adapts nothing
    on blocks without a conv module (Transformers), so one config serves MERT and MusicFM.

    reduction_rate: RR, r = round(hidden / RR) (reference semantics). Default 64 when neither
        ``reduction_rate`` nor ``rank`` is given.
    rank: r given directly (exclusive with ``reduction_rate``).
    alpha: α of the scaling (8, the reference CLI default).
    targets: projections to adapt, any of q, k, v, o.
    lora_scaling: R8, ``'alpha_over_rr'`` (reference) → ``'alpha_over_r'``; ``'alpha'``: s = α
        whatever the rank (the music reference's loralib scaling with α = 1, M4).
    lora_init: R4, ``'reference_effective'`` (A, B trunc-normal 0.02) → ``'zero_B'``.
    lora_variant: ``'separate'`` (one pair per target) or ``'shared_qk_legacy'`` (one pair per
        layer added to Q and K; pre-January-2024 reference code).
    merge_on_eval: the music reference merges ``s · B A`` into W at every switch to eval mode and
        subtracts it at every switch back to train mode (M5: small floating-point drift); False
        merges only on request (:meth:`PetlModel.merge`). Set by preset ``'music_lora'``.
    """

    reduction_rate: int | None = None
    rank: int | None = None
    alpha: float = 8.0
    targets: tuple[str, ...] = ("q", "v")
    lora_scaling: Literal["alpha_over_rr", "alpha_over_r", "alpha"] = option(
        "alpha_over_rr", "alpha_over_r"
    )
    lora_init: Literal["reference_effective", "zero_B"] = option("reference_effective", "zero_B")
    lora_variant: Literal["separate", "shared_qk_legacy"] = "separate"
    merge_on_eval: bool = False

    def __post_init__(self):
        if self.reduction_rate is not None and self.rank is not None:
            raise ConfigError(
                f"lora method_config: give reduction_rate ({self.reduction_rate}) or rank "
                f"({self.rank}), not both"
            )
        for key in ("reduction_rate", "rank"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"lora method_config: {key} = {value}; expected an int >= 1")
        targets = []
        for t in self.targets:
            c = _canonical_target(t)
            if c not in TARGETS:
                raise ConfigError(
                    f"lora method_config: unknown target {t!r}; valid targets: "
                    f"{', '.join(TARGETS)} (also Wq.., q_proj/out_proj, fc1/fc2 spellings)"
                )
            if c not in targets:
                targets.append(c)
        if not targets:
            raise ConfigError(
                f"lora method_config: targets is empty; choose from {', '.join(TARGETS)}"
            )
        targets = tuple(t for t in TARGETS if t in targets)
        if self.lora_variant == "shared_qk_legacy" and targets != ("q", "k"):
            raise ConfigError(
                "lora method_config: lora_variant='shared_qk_legacy' adds one shared delta to "
                f"Q and K; set targets='q,k' (got {','.join(targets)})"
            )
        object.__setattr__(self, "targets", targets)

    def resolve(self, hidden: int) -> tuple[int, float]:
        """``(rank r, scaling s)`` on a backbone of width ``hidden``."""
        if self.rank is not None:
            r, rr = self.rank, hidden / self.rank
        else:
            rr = self.reduction_rate or 64
            r = round(hidden / rr)  # Python round-half-even, as the reference
            if r < 1:
                raise ConfigError(
                    f"lora method_config: reduction_rate {rr} gives rank round({hidden}/{rr}) = 0 "
                    f"on this {hidden}-wide backbone; use reduction_rate < {2 * hidden} or rank"
                )
        if self.lora_scaling == "alpha":
            return r, self.alpha
        s = self.alpha / rr if self.lora_scaling == "alpha_over_rr" else self.alpha / r
        return r, s


class LoRAPair(nn.Module):
    """The low-rank factors: ``A = Linear(d_in → r)`` ("down"), ``B = Linear(r → d_out)`` ("up")."""

    def __init__(self, d_in: int, d_out: int, rank: int, init: str):
        super().__init__()
        self.A = nn.Linear(d_in, rank, bias=False)
        self.B = nn.Linear(rank, d_out, bias=False)
        with torch.no_grad():
            if init == "reference_effective":  # R2/R4: both factors trunc-normal(0, 0.02)
                trunc_normal_(self.A.weight)
                trunc_normal_(self.B.weight)
            else:  # zero_B: ΔW = 0 at init, A gets gradient from step 2
                nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
                self.B.weight.zero_()

    def delta_weight(self) -> torch.Tensor:
        """``B A``: ``[d_out, d_in]``."""
        return self.B.weight @ self.A.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))


class LoRALinear(reparam.MergeableWrapper):
    """A frozen ``Linear`` plus a scaled low-rank update: ``y = W x + b + s · B(A(x))``.

    Holds the original ``weight`` ``[d_out, d_in]`` and ``bias`` parameters under their own names
    (state-dict keys of the backbone are unchanged) and the factors under ``petl_lora``.
    :meth:`merge` folds ``s · B A`` into ``weight`` and short-circuits the forward to one
    ``F.linear``; :meth:`unload` returns the plain ``nn.Linear`` (merged or not).

    Shapes: ``x [..., d_in] -> [..., d_out]``.
    """

    def __init__(self, base: nn.Linear, pair: LoRAPair, scaling: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.petl_lora = pair
        self.scaling = float(scaling)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + self.scaling * self.petl_lora(x)

    def _fold(self, sign: int) -> None:
        """``W ← W ± s · B A``."""
        self.weight.add_(sign * self.scaling * self.petl_lora.delta_weight().to(self.weight.dtype))

    def unload(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this module's (merged or original) weight and bias."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device="meta"
        )
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        r, s = self.petl_lora.A.out_features, self.scaling
        return (
            f"in={self.in_features}, out={self.out_features}, r={r}, s={s:g}, merged={self.merged}"
        )


class LoRAConv1d(LoRALinear):
    """A frozen kernel-1 ``Conv1d`` plus a low-rank update of its ``[out, in, 1]`` weight.

    ``y = conv(x) + s · B(A(x))`` channel-wise, i.e. the conv with ``W + s · (B A)[..., None]``
    (the music reference's ConvLoRA for k = 1; stride, padding and groups must be trivial).
    Shapes: ``x [B, in, T] -> [B, out, T]``.
    """

    def __init__(self, base: nn.Conv1d, pair: LoRAPair, scaling: float):
        if base.kernel_size != (1,) or base.groups != 1 or base.stride != (1,):
            raise ValueError(f"LoRAConv1d needs a pointwise Conv1d (k=1, groups=1), got {base}")
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_channels, base.out_channels
        self.weight, self.bias = base.weight, base.bias
        self.petl_lora = pair
        self.scaling = float(scaling)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv1d(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + self.scaling * self.petl_lora(x.transpose(1, 2)).transpose(1, 2)

    def _fold(self, sign: int) -> None:
        delta = self.petl_lora.delta_weight()[..., None].to(self.weight.dtype)
        self.weight.add_(sign * self.scaling * delta)

    def unload(self) -> nn.Conv1d:
        conv = nn.Conv1d(
            self.in_features, self.out_features, 1, bias=self.bias is not None, device="meta"
        )
        conv.weight, conv.bias = self.weight, self.bias
        return conv


def apply(model, cfg: LoRAConfig) -> None:
    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    rank, scaling = cfg.resolve(backbone.config.hidden_size)

    def wrap(parent: nn.Module, attr: str, base: nn.Module, pair: LoRAPair | None = None):
        if isinstance(base, LoRALinear):
            raise ValueError(f"{attr} already carries LoRA")
        if isinstance(base, nn.Conv1d):
            pair = LoRAPair(base.in_channels, base.out_channels, rank, cfg.lora_init)
            setattr(parent, attr, LoRAConv1d(base, pair, scaling))
            return
        pair = pair or LoRAPair(base.in_features, base.out_features, rank, cfg.lora_init)
        setattr(parent, attr, LoRALinear(base, pair, scaling))

    for layer in anatomy.layers(backbone):
        shared = None
        if cfg.lora_variant == "shared_qk_legacy":
            q = anatomy.projections(layer, anat)["q"]
            shared = LoRAPair(q.in_features, q.out_features, rank, cfg.lora_init)
        for target, parent, attr, base in reparam.block_targets(layer, anat, cfg.targets):
            wrap(parent, attr, base, shared if target in ("q", "k") else None)


register_method(
    MethodSpec(
        name="lora",
        config_cls=LoRAConfig,
        apply=apply,
        lr=5e-3,
        identity_at_init=lambda cfg: cfg.lora_init == "zero_B",
        trains_final_norm=lambda cfg: True,
        merges=True,
        paper="Hu et al., ICLR 2022 (LoRA); Cappellazzo et al., MLSP 2024 (PETL_AST)",
        test_config={"reduction_rate": 8},
        needs_grad_steps=2,
    )
)

_MUSIC = dict(rank=2, targets=("q", "k", "v", "o", "ffn_in", "ffn_out", "conv"), lora_init="zero_B")
register_preset(
    MethodPreset(
        name="music_lora",
        method="lora",
        # s = lora_alpha = 1 for every rank (M4) → s = α / r with α = r: also 1 at r = 2
        reference=dict(_MUSIC, alpha=1.0, lora_scaling="alpha", merge_on_eval=True),
        corrected=dict(_MUSIC, alpha=2.0, lora_scaling="alpha_over_r"),
        doc="music PETL LoRA (§4.3): rank 2 on q, k, v, o, the FFN Linears (and a conformer's "
        "pointwise convs), s = 1; MERT 6 layers: 165,888",
    )
)
