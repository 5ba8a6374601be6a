"""Dense mixture of adapters (Cappellazzo et al., Interspeech 2024, "Efficient fine-tuning of audio
spectrogram transformers via Soft Mixture of Adapters": the dense baseline; reference
``Dense-MoA``). Spec ``methods.md`` §8; placement and trainable set shared with :mod:`.soft_moa`.

Per token, a router ``Linear(D, E)`` gives ``p = softmax(W_r x + b_r)`` over E adapter experts and
the mixture is ``MoA(x) = Σ_i p_i(x) · A_i(x)``: every expert sees every token; no top-k, no noise,
no auxiliary loss. The experts run together (:mod:`.experts`), never in a loop.

Placement (always parallel; x = the sub-layer's input):

====================  ====================================================================
layout                AST (pre-LN), z = LN2(h')
====================  ====================================================================
Pfeiffer, ``MHSA``    h' = h + a + MoA(LN1 h);  out = h' + f [+ MoA(LN1 h) again, R13]
Pfeiffer, ``FFN``     out = h' + f + MoA(z)
Houlsby               both, each with its own router and experts (``location`` ignored)
====================  ====================================================================

Post-LN frame models (wav2vec2/HuBERT base) wrap the same sub-layers: the attention MoA sees the
un-normalised layer input x, the FFN MoA sees v = LN_att(u) (as the adapters of §10); the R13
double add lands in the FFN output, before ``final_layer_norm``.

Trainable: AST — experts + routers + the LN of each mixed sub-layer (LN1 at MHSA, LN2 at FFN)
+ final LN + head; frame models — experts + routers + head (+ the unused ``masked_spec_embed`` in
the reference, R24). Count per mixture (bottleneck experts, r = round(D / RR)):
``M = E·(2Dr + r + D) + (D + 1)·E`` (D = 768: E(1,537r + 768) + 769E); AST totals
Pfeiffer 12(M + 1,536) + 1,536 + head, Houlsby 12(2M + 3,072) + 1,536 + head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..backbones import anatomy
from ..backbones.registry import get_family
from ..config import ConfigError, option
from . import blocks, experts
from ._init import trunc_normal_
from .registry import MethodConfig, MethodSpec, register_method

DEFAULT_REDUCTION_RATE = 128
LOCATIONS = {"MHSA": anatomy.ATTENTION, "FFN": anatomy.FFN}


@dataclass(frozen=True)
class MoAConfig(MethodConfig):
    """Options shared by Dense- and Soft-MoA (reference CLI names; quirk switches ref → corrected).

    reduction_rate: r = round(hidden / reduction_rate), round-half-even (default 128: r = 6 on a
        768-wide backbone). bottleneck: r directly; give one of the two.
    adapter_type: ``'Pfeiffer'`` (one mixture per block, at ``location``) or ``'Houlsby'`` (one at
        the attention and one at the FFN; ``location`` is then ignored, as in the reference).
    location: ``'MHSA'`` | ``'FFN'`` (Pfeiffer).
    expert: ``'bottleneck'`` | ``'convpass'`` | ``'conformer'`` (all three in both profiles;
        the reference reaches only bottleneck, R22).
    num_adapters: E experts per mixture (paper 2: 2 to 15).
    kernel_size: the conformer experts' depthwise kernel (Convpass's conv is 3 wide).
    expert_init: ``'reference_effective'`` (R2: every Linear trunc-normal(0, 0.02), bias 0) →
        ``'zero_up'`` (W_up = 0: the mixture outputs 0 at init). ``'written_zero'`` is a
        diagnostic (R3, warns). Routers are trunc-normal(0, 0.02), bias 0, in both.
    moa_double_add: R13, Pfeiffer + MHSA adds the mixture output a second time at the layer
        output: True → False.
    conformer_ln: ``'dead'`` → ``'applied'`` (R5, conformer experts).
    convpass_conv: ``'unused'`` → ``'used'`` (R6, Convpass experts).
    w2v_train_mask_emb: frame models leave ``masked_spec_embed`` trainable (R24): True → False.
    """

    reduction_rate: int | None = None
    bottleneck: int | None = None
    adapter_type: Literal["Pfeiffer", "Houlsby"] = "Pfeiffer"
    location: Literal["MHSA", "FFN"] = "MHSA"
    expert: Literal["bottleneck", "convpass", "conformer"] = "bottleneck"
    num_adapters: int = 7
    kernel_size: int = 31
    expert_init: Literal["reference_effective", "zero_up", "written_zero"] = option(
        "reference_effective", "zero_up"
    )
    moa_double_add: bool = option(True, False)
    conformer_ln: Literal["dead", "applied"] = option("dead", "applied")
    convpass_conv: Literal["unused", "used"] = option("unused", "used")
    w2v_train_mask_emb: bool = option(True, False)

    method_name = "dense_moa"  # class attribute (not a field): names the method in errors

    def __post_init__(self):
        for f in dataclasses.fields(self):  # direct construction: unset quirks follow the profile
            if "profile" in f.metadata and getattr(self, f.name) is None:
                object.__setattr__(self, f.name, f.metadata["profile"][self.profile == "corrected"])
        where = f"{self.method_name} method_config"
        if self.reduction_rate is not None and self.bottleneck is not None:
            raise ConfigError(
                f"{where}: give reduction_rate ({self.reduction_rate}) or bottleneck "
                f"({self.bottleneck}), not both"
            )
        if self.bottleneck is None and self.reduction_rate is None:
            object.__setattr__(self, "reduction_rate", DEFAULT_REDUCTION_RATE)
        for name in ("reduction_rate", "bottleneck", "kernel_size", "num_adapters"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{name} = {value}; must be a positive int")

    def bottleneck_size(self, hidden: int) -> int:
        """r for a backbone of width ``hidden`` (round-half-even, as the reference)."""
        if self.bottleneck is not None:
            return self.bottleneck
        return round(hidden / self.reduction_rate)

    def sites(self) -> list[str]:
        """The sub-layers (``anatomy.ATTENTION`` / ``anatomy.FFN``) that get a mixture."""
        if self.adapter_type == "Houlsby":
            return [anatomy.ATTENTION, anatomy.FFN]
        return [LOCATIONS[self.location]]

    def double_add(self) -> bool:
        """R13 applies: Pfeiffer at the MHSA with ``moa_double_add``."""
        return self.moa_double_add and self.sites() == [anatomy.ATTENTION]


@dataclass(frozen=True)
class DenseMoAConfig(MoAConfig):
    """Dense-MoA options: those of :class:`MoAConfig` (design §4: ``reduction_rate`` 128,
    ``adapter_type``, ``location``, ``expert``, ``num_adapters`` 7)."""


# --------------------------------------------------------------------------- modules
class DenseMoA(nn.Module):
    """``MoA(x) = Σ_i softmax(router(x))_i · A_i(x)``: ``[b, n, d] -> [b, n, d]``.

    Axes: b batch, n tokens, e experts, d hidden. ``router``: ``Linear(d, e)``; ``experts``: a
    :class:`.experts.GroupedExperts` (all E experts in one batched computation).

    When a :class:`petl_kit.routing.RoutingRecorder` is attached (``self.recorder``), each call
    records ``probs [b, n, e]``; otherwise nothing is kept.
    """

    def __init__(self, experts_: experts.GroupedExperts, *, dim: int):
        super().__init__()
        self.experts = experts_
        self.router = make_router(dim, experts_.num_experts)
        self.recorder = None
        self.site: tuple[int, str] = (-1, "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.router(x), dim=-1)  # [b, n, e], per token over the experts
        if self.recorder is not None:
            self.recorder.record(self, probs=probs)
        return self.experts.mix(x, probs)  # Σ_i p_i A_i(x), experts batched


class MoASublayer(anatomy.SublayerWrapper):
    """A sub-layer with a parallel mixture ``petl_moa``: returns ``y + MoA(x)``.

    ``keep_output``: also keep MoA(x) for a :class:`AddAgain` on the FFN (R13).
    """

    def __init__(self, inner: nn.Module, moa: nn.Module, *, keep_output: bool = False):
        super().__init__(inner)
        self.petl_moa = moa
        self.keep_output = keep_output
        self._kept: torch.Tensor | None = None

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.petl_moa(x)
        if self.keep_output:
            self._kept = out
        return y + out

    def take_kept(self) -> torch.Tensor:
        out, self._kept = self._kept, None
        if out is None:
            raise RuntimeError("R13 double add: the attention mixture did not run before the FFN")
        return out


class AddAgain(anatomy.SublayerWrapper):
    """R13: the FFN output plus the attention mixture's output once more (reference only)."""

    def __init__(self, inner: nn.Module, source: MoASublayer):
        super().__init__(inner)
        self.__dict__["_source"] = source  # a reference, not a sub-module (no second registration)

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + self._source.take_kept()


# --------------------------------------------------------------------------- apply (shared)
def identity_at_init(cfg: MoAConfig) -> bool:
    """Experts with a zero up-projection output 0, so does any mixture of them (Dense: Σ p_i·0;
    Soft: Σ C·A_i(slots) = 0), in every placement (the R13 double add adds 0 too)."""
    return blocks.zero_at_init(cfg.expert, cfg.expert_init)


def make_router(dim: int, num_outputs: int) -> nn.Linear:
    """``Linear(dim, num_outputs)``, trunc-normal(0, 0.02) weight and zero bias (R2's effective
    init; used in both profiles — a small router gives near-uniform routing at init)."""
    router = nn.Linear(dim, num_outputs)
    with torch.no_grad():
        trunc_normal_(router.weight)
        router.bias.zero_()
    return router


def apply_mixture(
    model, cfg: MoAConfig, make_moa: Callable[[experts.GroupedExperts, int], nn.Module]
):
    """Wrap the configured sub-layers of every block with a mixture and set the trainable set.

    ``make_moa(grouped_experts, hidden)`` builds one mixture module (Dense or Soft).
    """
    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    hidden = backbone.config.hidden_size
    r = cfg.bottleneck_size(hidden)  # >= 1: build_model checks the spec's bottleneck
    dead_ln = get_family(model.family).reference_dead_conformer_ln  # R5: the AST reference only
    ln = cfg.conformer_ln if dead_ln or cfg.profile != "reference" else "applied"
    for i, layer in enumerate(anatomy.layers(backbone)):
        wrappers = {}
        for which in cfg.sites():
            grouped = experts.make_experts(
                cfg.expert,
                cfg.num_adapters,
                hidden,
                r,
                init=cfg.expert_init,
                family=model.family,
                kernel_size=cfg.kernel_size,
                conformer_ln=ln,
                convpass_conv=cfg.convpass_conv,
            )
            moa = make_moa(grouped, hidden)
            moa.site = (i, "MHSA" if which == anatomy.ATTENTION else "FFN")
            keep = cfg.double_add()
            wrappers[which] = anatomy.wrap_sublayer(
                layer,
                which,
                anat,
                lambda inner, m=moa, k=keep: MoASublayer(inner, m, keep_output=k),
            )
        if cfg.double_add():
            source = wrappers[anatomy.ATTENTION]
            anatomy.wrap_sublayer(
                layer, anatomy.FFN, anat, lambda inner, s=source: AddAgain(inner, s)
            )
    # LNs that train with the mixtures: MIXTURE_RULES; frame models as the adapters (§10)
    blocks.no_masking_no_layerdrop(backbone, cfg.w2v_train_mask_emb)


# what trains beside the mixtures (the spec's fields, applied by build_model): the reference
# unfreezes the LN of each mixed sub-layer (finetune_LN) and the final LN where the family's does
MIXTURE_RULES = dict(
    trains_final_norm=lambda cfg: True,
    wrapped_sites=lambda cfg: cfg.sites(),
    bottleneck=lambda cfg, hidden: cfg.bottleneck_size(hidden),
)


def apply(model, cfg: DenseMoAConfig) -> None:
    apply_mixture(model, cfg, lambda grouped, d: DenseMoA(grouped, dim=d))


def num_params(cfg: MoAConfig, hidden: int = 768) -> int:
    """Parameters of one Dense mixture: E experts + router ``(D + 1)·E``."""
    r = cfg.bottleneck_size(hidden)
    return (
        experts.num_params(cfg.expert, cfg.num_adapters, hidden, r, cfg.kernel_size)
        + (hidden + 1) * cfg.num_adapters
    )


register_method(
    MethodSpec(
        name="dense_moa",
        config_cls=DenseMoAConfig,
        apply=apply,
        lr=5e-3,
        aliases=("densemoa",),
        identity_at_init=identity_at_init,
        paper="Cappellazzo et al., Interspeech 2024 (Soft-MoA paper, dense baseline)",
        test_config={"reduction_rate": 8, "num_adapters": 3, "adapter_type": "Houlsby"},
        needs_grad_steps=2,
        **MIXTURE_RULES,
    )
)
