"""Soft mixture of adapters (Cappellazzo et al., Interspeech 2024, "Efficient fine-tuning of audio
spectrogram transformers via Soft Mixture of Adapters"; reference ``Soft-MoA``), the Soft MoE
layer of Puigcerver et al. (ICLR 2024) with adapter experts. Spec ``methods.md`` §9.

Axes: b batch, n tokens, e experts, s slots per expert, d hidden. With Φ ``[d, e, s]``:

1. (``normalize``) x ← x / ‖x‖ over d; Φ ← scale · Φ / ‖Φ‖ over d (Soft MoE; the reference
   normalises over the expert axis, R14). The normalised x is what gets dispatched.
2. logits ``[b, n, e, s]`` = x · Φ.
3. dispatch D = softmax over the n **tokens**: each slot is a convex combination of the tokens.
4. combine C = softmax over all e·s **slots**: each token's output is a convex combination of the
   slot outputs.
5. slots ``[b, e, s, d]`` = Σ_n D · x; expert i processes its s slots (all experts batched,
   :mod:`.experts`); output ``[b, n, d]`` = Σ_{e,s} C · expert outputs.

Each expert sees s slot vectors instead of n tokens, so the experts cost O(e·s) instead of Dense's
O(n·e). Placement and trainable set are those of Dense-MoA (:mod:`.dense_moa`), including the R13
double add. The dispatch softmax runs over every token of the sequence: AST's zero-padded fbank
frames are real patches. Padded frames of frame-model batches (wav2vec2, HuBERT, MERT, MusicFM)
are left out of the dispatch softmax whenever the model passes the attention mask
(``ModelOptions.pass_attention_mask``, the corrected profile; :mod:`.padding`), so a clip's output
does not depend on what it was batched with; the reference profile passes no mask, and the
mixture reads padded frames like any other, as the reference does. (The combine softmax is per
token, so padded tokens' own outputs cannot reach a real one.)

Count per mixture: ``E·A + D·E·s`` (+1 with ``normalize``), A = the expert block's parameters
(bottleneck, D = 768: 1,537r + 768).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ConfigError, option
from . import experts, padding
from .dense_moa import MIXTURE_RULES, MoAConfig, apply_mixture, identity_at_init
from .registry import MethodSpec, register_method


@dataclass(frozen=True)
class SoftMoAConfig(MoAConfig):
    """Soft-MoA options: those of :class:`.dense_moa.MoAConfig` and

    num_slots: s slots per expert (paper 2: 1 or 2).
    normalize: L2-normalise the tokens and Φ (with a learned scalar scale, init 1) before the
        logits (Soft MoE §2.3). Default False (paper 2 does not use it; its README example
        switches it on by accident, R16).
    soft_moa_phi_norm_axis: the axis Φ is normalised over (R14): ``'n'`` (the expert axis, as the
        reference) → ``'d'`` (the feature axis, as Soft MoE).
    """

    num_slots: int = 1
    normalize: bool = False
    soft_moa_phi_norm_axis: Literal["n", "d"] = option("n", "d")

    method_name = "soft_moa"

    def __post_init__(self):
        super().__post_init__()
        if self.num_slots < 1:
            raise ConfigError(f"soft_moa method_config.num_slots = {self.num_slots}; must be >= 1")


class SoftMoA(nn.Module):
    """Soft mixture of adapter experts: ``[b, n, d] -> [b, n, d]`` (module docstring, steps 1–5).

    ``router_phi``: Φ ``[d, e, s]``, Xavier-normal (std √(2 / (e·s + d·s)), as written in the
    reference; R2 leaves bare parameters alone). ``router_scale``: the learned scale (only with
    ``normalize``). With a :class:`petl_kit.routing.RoutingRecorder` attached (``self.recorder``)
    each call records ``dispatch`` and ``combine``, both ``[b, n, e, s]``.
    """

    def __init__(
        self,
        experts_: experts.GroupedExperts,
        *,
        dim: int,
        num_slots: int = 1,
        normalize: bool = False,
        phi_norm_axis: Literal["n", "d"] = "d",
    ):
        super().__init__()
        self.experts = experts_
        self.num_slots, self.normalize, self.phi_norm_axis = num_slots, normalize, phi_norm_axis
        self.router_phi = nn.Parameter(torch.empty(dim, experts_.num_experts, num_slots))
        nn.init.xavier_normal_(self.router_phi)  # fan_in e·s, fan_out d·s
        if normalize:
            self.router_scale = nn.Parameter(torch.ones(()))
        self.recorder = None
        self.site: tuple[int, str] = (-1, "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.router_phi  # [d, e, s]
        if self.normalize:  # step 1 (Soft MoE §2.3); the reference's Φ axis is e (R14)
            x = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
            axis = 0 if self.phi_norm_axis == "d" else 1
            phi = self.router_scale * phi / (phi.norm(dim=axis, keepdim=True) + 1e-6)
        logits = torch.einsum("bnd,des->bnes", x, phi)  # step 2
        valid = padding.token_mask(x, "Soft-MoA")  # [b, n] real frames, or None
        if valid is not None:  # padded frames never enter a slot: batch-independent outputs
            dispatch = torch.softmax(logits.masked_fill(~valid[:, :, None, None], -torch.inf), 1)
        else:
            dispatch = torch.softmax(logits, dim=1)  # step 3: over tokens
        combine = torch.softmax(logits.flatten(2), dim=-1).view_as(logits)  # step 4: over e·s
        if self.recorder is not None:
            self.recorder.record(self, dispatch=dispatch, combine=combine)
        slots = torch.einsum("bnes,bnd->besd", dispatch, x)  # step 5: slot inputs
        with padding.valid_frames(None):  # slots, not frames: every one is real
            out = self.experts(slots)  # [b, e, s, d]: expert i on its s slots, experts batched
        return torch.einsum("bnes,besd->bnd", combine, out)

    def extra_repr(self) -> str:
        return (
            f"slots={self.num_slots}, normalize={self.normalize}, phi_axis={self.phi_norm_axis!r}"
        )


def apply(model, cfg: SoftMoAConfig) -> None:
    apply_mixture(
        model,
        cfg,
        lambda grouped, d: SoftMoA(
            grouped,
            dim=d,
            num_slots=cfg.num_slots,
            normalize=cfg.normalize,
            phi_norm_axis=cfg.soft_moa_phi_norm_axis,
        ),
    )


def num_params(cfg: SoftMoAConfig, hidden: int = 768) -> int:
    """Parameters of one Soft mixture: E experts + Φ ``D·E·s`` (+1 scale with ``normalize``)."""
    r = cfg.bottleneck_size(hidden)
    n = experts.num_params(cfg.expert, cfg.num_adapters, hidden, r, cfg.kernel_size)
    return n + hidden * cfg.num_adapters * cfg.num_slots + int(cfg.normalize)


register_method(
    MethodSpec(
        name="soft_moa",
        config_cls=SoftMoAConfig,
        apply=apply,
        lr=5e-3,
        aliases=("softmoa",),
        identity_at_init=identity_at_init,
        paper="Cappellazzo et al., Interspeech 2024 (Soft-MoA); Puigcerver et al., ICLR 2024 "
        "(Soft MoE)",
        test_config={
            "reduction_rate": 8,
            "num_adapters": 3,
            "num_slots": 2,
            "adapter_type": "Houlsby",
            "normalize": True,
        },
        needs_grad_steps=2,
        **MIXTURE_RULES,
    )
)
