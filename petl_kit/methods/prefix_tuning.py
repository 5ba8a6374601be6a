"""Prefix tuning (Li & Liang, ACL 2021; AST reference ``prefix-tuning`` of PETL_AST).

Every block's self-attention gets P/2 learned key vectors and P/2 learned value vectors, joined to
its keys and values **after** the k/v projections (biases included) and the head split. Queries,
and so the output length, are unchanged. Spec ``methods.md`` §5.1.

Mechanism (design §3): the attention code reshapes keys/values with the query's length, so the
projections cannot be lengthened. Instead the kit registers the attention function
:func:`prefix_attention` under the name ``'petl_prefix'`` in transformers' public
``AttentionInterface`` (and ``sdpa_mask`` under the same name in ``AttentionMaskInterface``, so
padded batches still get their mask) and switches the backbone to it with
``backbone.set_attn_implementation('petl_prefix')``. The function prepends the module's
``petl_prefix_k`` / ``petl_prefix_v`` (``[P/2, D]`` → ``[B, H, P/2, D/H]``), opens the prefix
columns of any attention mask (always attended to), then calls transformers' standard SDPA
attention. A module without a prefix (or with a zero-length one) gets exactly the stock output.

The reference inserts the prefix after the CLS key; attention has no positional term over keys,
so prepending is the same computation.

Init: U(−v, v), v = √(6 / (3·16·16 + D)) = 0.0625 on AST base (bare parameters, so R2 leaves them
alone). No reparameterisation MLP, no dropout.
Trainable: prefixes + head (+ final LN on AST, as the reference wrapper).
Count (AST base) = 12 · P · 768 = 9,216 · P (+ 1,536 + head); P = 24 → 221,184.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .. import anatomy
from ..config import ConfigError
from ._init import vpt_uniform_bound
from .registry import MethodConfig, MethodSpec, register_method

ATTN_IMPLEMENTATION = "petl_prefix"


@dataclass(frozen=True)
class PrefixTuningConfig(MethodConfig):
    """Prefix-tuning keys (design §4).

    num_tokens: P, even: P/2 key and P/2 value vectors per block (reference default 24).
    """

    num_tokens: int = 24

    def __post_init__(self):
        if self.num_tokens < 2 or self.num_tokens % 2:
            raise ConfigError(
                f"prefix_tuning method_config: num_tokens = {self.num_tokens}; expected an even "
                "int >= 2 (P/2 key + P/2 value vectors)"
            )


def _heads(prefix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[P/2, H·d] -> [B, H, P/2, d]`` in the layout of ``like`` (``[B, H, T, d]``)."""
    b, h, _, d = like.shape
    return prefix.to(like.dtype).view(1, -1, h, d).transpose(1, 2).expand(b, -1, -1, -1)


def prefix_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """SDPA attention with the module's learned key/value prefix prepended.

    Args (transformers attention-function convention):
        query, key, value: ``[B, H, T, d]`` after the projections and the head split.
        attention_mask: None or a 4-D mask ``[B, 1, Tq, Tk]`` (bool: True attends; float: additive).

    Returns:
        ``(output [B, Tq, H, d], None)`` from ``sdpa_attention_forward`` on keys/values of length
        ``P/2 + Tk``; with no ``petl_prefix_k`` on ``module`` (or a zero-length one) the call is
        passed through unchanged.
    """
    prefix_k = getattr(module, "petl_prefix_k", None)
    if prefix_k is not None and prefix_k.shape[0] > 0:
        n = prefix_k.shape[0]
        key = torch.cat([_heads(prefix_k, key), key], dim=2)
        value = torch.cat([_heads(module.petl_prefix_v, value), value], dim=2)
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor):
                raise TypeError(
                    f"prefix attention cannot widen a {type(attention_mask).__name__} mask"
                )
            fill = (torch.ones if attention_mask.dtype == torch.bool else torch.zeros)(
                (*attention_mask.shape[:-1], n),
                dtype=attention_mask.dtype,
                device=attention_mask.device,
            )
            attention_mask = torch.cat([fill, attention_mask], dim=-1)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTN_IMPLEMENTATION, prefix_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def apply(model, cfg: PrefixTuningConfig) -> None:
    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    hidden = backbone.config.hidden_size
    bound = vpt_uniform_bound(backbone.config)
    half = cfg.num_tokens // 2
    for layer in anatomy.layers(backbone):
        attn = anatomy.sublayer(layer, anatomy.ATTENTION, anat)
        attn.petl_prefix_k = nn.Parameter(torch.empty(half, hidden).uniform_(-bound, bound))
        attn.petl_prefix_v = nn.Parameter(torch.empty(half, hidden).uniform_(-bound, bound))
    backbone.set_attn_implementation(ATTN_IMPLEMENTATION)
    norm = anatomy.final_norm(backbone)
    if model.family == "ast" and norm is not None:  # the reference AST wrapper trains it
        norm.requires_grad_(True)


register_method(
    MethodSpec(
        name="prefix_tuning",
        config_cls=PrefixTuningConfig,
        apply=apply,
        lr=1e-2,
        aliases=("prefix",),
        identity_at_init=lambda cfg: False,
        paper="Li & Liang, ACL 2021; Cappellazzo et al., MLSP 2024 (PETL_AST)",
        test_config={"num_tokens": 4},
    )
)
