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

``prefix_hidden`` = h switches on Li & Liang's reparameterisation, as the music reference's
(unwired) prefix (spec §5.2; preset ``'music_prefix'``: P = 64, h = 512): per block
``control(wte)`` with ``wte`` = Embedding(P/2, D) (N(0, 1)) and ``control`` = Linear(D, h) → Tanh →
Linear(h, 2D), split into P/2 key and P/2 value vectors. Queries are untouched, so on MusicFM's
rotary conformer the prefix keys get no rotary embedding (kit decision). Count per block
(P/2)·D + (D·h + h) + (2D·h + 2D): MERT-95M 6 layers 7,237,632, MusicFM 6 layers 9,649,152.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..backbones import anatomy
from ..config import ConfigError
from ._init import vpt_uniform_bound
from .registry import MethodConfig, MethodPreset, MethodSpec, register_method, register_preset

ATTN_IMPLEMENTATION = "petl_prefix"


@dataclass(frozen=True)
class PrefixTuningConfig(MethodConfig):
    """Prefix-tuning keys (design §4).

    num_tokens: P, even: P/2 key and P/2 value vectors per block (reference default 24).
    prefix_hidden: width h of the reparameterisation MLP (music reference 512), or None to learn
        the key/value vectors directly (PETL_AST).
    """

    num_tokens: int = 24
    prefix_hidden: int | None = None

    def __post_init__(self):
        if self.num_tokens < 2 or self.num_tokens % 2:
            raise ConfigError(
                f"prefix_tuning method_config: num_tokens = {self.num_tokens}; expected an even "
                "int >= 2 (P/2 key + P/2 value vectors)"
            )
        if self.prefix_hidden is not None and self.prefix_hidden < 1:
            raise ConfigError(
                f"prefix_tuning method_config: prefix_hidden = {self.prefix_hidden}; expected an "
                "int >= 1 or None"
            )


class PrefixMLP(nn.Module):
    """Reparameterised prefix: ``() -> (keys [n, D], values [n, D])`` = ``control(wte)`` split.

    ``wte``: Embedding(n, D), N(0, 1); ``control``: Linear(D, h) → Tanh → Linear(h, 2D).
    """

    def __init__(self, n: int, dim: int, hidden: int):
        super().__init__()
        self.wte = nn.Embedding(n, dim)
        self.control = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * dim))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.control(self.wte.weight).chunk(2, dim=-1)  # [n, 2D] -> 2 × [n, D]
        return keys, values


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
    mlp = getattr(module, "petl_prefix_mlp", None)
    if mlp is not None:
        prefix_k, prefix_v = mlp()
    else:
        prefix_k = getattr(module, "petl_prefix_k", None)
        prefix_v = getattr(module, "petl_prefix_v", None)
    if prefix_k is not None and prefix_k.shape[0] > 0:
        n = prefix_k.shape[0]
        key = torch.cat([_heads(prefix_k, key), key], dim=2)
        value = torch.cat([_heads(prefix_v, value), value], dim=2)
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
        if cfg.prefix_hidden is not None:
            attn.petl_prefix_mlp = PrefixMLP(half, hidden, cfg.prefix_hidden)
            continue
        attn.petl_prefix_k = nn.Parameter(torch.empty(half, hidden).uniform_(-bound, bound))
        attn.petl_prefix_v = nn.Parameter(torch.empty(half, hidden).uniform_(-bound, bound))
    backbone.set_attn_implementation(ATTN_IMPLEMENTATION)


register_method(
    MethodSpec(
        name="prefix_tuning",
        config_cls=PrefixTuningConfig,
        apply=apply,
        lr=1e-2,
        aliases=("prefix",),
        identity_at_init=lambda cfg: False,
        trains_final_norm=lambda cfg: True,
        paper="Li & Liang, ACL 2021; Cappellazzo et al., MLSP 2024 (PETL_AST)",
        test_config={"num_tokens": 4},
    )
)

_MUSIC = dict(num_tokens=64, prefix_hidden=512)
register_preset(
    MethodPreset(
        name="music_prefix",
        method="prefix_tuning",
        reference=_MUSIC,
        corrected=_MUSIC,
        doc="music PETL prefix (§5.2): 32 key + 32 value tokens per layer from Embedding(32, D) "
        "→ Linear(D, 512) → Tanh → Linear(512, 2D); MusicFM 6 layers: 9,649,152",
    )
)
