"""The one place that knows each backbone family's block internals.

Methods never copy a Hugging Face ``forward``: they ask the anatomy where a transformer block's
attention and feed-forward sub-layers are, which Linear modules project queries/keys/values, and
which LayerNorms belong to which sub-layer, and then wrap those modules.

Block layouts (transformers 5.x):

AST (pre-LN, ``ASTLayer``)::

    a   = attention(layernorm_before(h))[0]      # ASTAttention: q_proj k_proj v_proj o_proj
    h'  = h + a
    out = h' + mlp(layernorm_after(h'))          # ASTMLP: fc1 -> GELU -> fc2
    ... then ``model.layernorm`` (the final LN) after the last layer.

wav2vec2 / HuBERT base (post-LN, ``*EncoderLayer``)::

    u   = x + dropout(attention(x)[0])           # *Attention: q_proj k_proj v_proj out_proj
    v   = layer_norm(u)
    out = final_layer_norm(v + feed_forward(v))  # intermediate_dense -> GELU -> output_dense

wav2vec2 / HuBERT large with ``do_stable_layer_norm`` (pre-LN)::

    h'  = h + attention(layer_norm(h))[0];  out = h' + feed_forward(final_layer_norm(h'))
    ... then ``encoder.layer_norm`` after the last layer.

A sub-layer is wrapped by :func:`wrap_sublayer`, which swaps the module on the layer for a
:class:`SublayerWrapper` holding the original as ``inner``; the wrapper keeps the original call
signature and tuple convention (attention modules return ``(output, weights)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ATTENTION, FFN = "attention", "ffn"


@dataclass(frozen=True)
class Anatomy:
    """Where things live in one backbone family.

    Attributes:
        family: ``'ast'`` | ``'wav2vec2'`` | ``'hubert'`` | ``'mert'``.
        pre_ln: True when LayerNorms sit before the sub-layers (AST, stable-layer-norm models).
        layers_path: dotted path of the ``ModuleList`` of transformer blocks.
        attention: attribute of the attention sub-layer on a block.
        ffn: attribute of the feed-forward sub-layer on a block.
        ln_attention: the LayerNorm of the attention sub-layer (its input LN when pre-LN, the LN
            after the attention residual when post-LN).
        ln_ffn: the LayerNorm of the FFN sub-layer (input LN when pre-LN, output LN when post-LN).
        projections: q/k/v/o Linear attributes on the attention module.
        ffn_linears: the FFN's (in, out) Linear attributes on the FFN module.
        final_norm: dotted path of the LayerNorm after the last block, or None.
        embeddings: dotted path of the module that produces the block-1 input sequence.
        block_input: dotted path of the module whose output IS the block-1 input sequence, so a
            forward hook there can insert tokens (prompts): AST ``embeddings``; frame models
            ``encoder.dropout``, called after the positional conv (and, post-LN, the encoder
            LayerNorm) and before the first layer, whether or not LayerDrop skips that layer.
    """

    family: str
    pre_ln: bool
    layers_path: str
    attention: str
    ffn: str
    ln_attention: str
    ln_ffn: str
    projections: dict
    ffn_linears: tuple[str, str]
    final_norm: str | None
    embeddings: str
    block_input: str = ""


def _frame_anatomy(family: str, pre_ln: bool) -> Anatomy:
    return Anatomy(
        family=family,
        pre_ln=pre_ln,
        layers_path="encoder.layers",
        attention="attention",
        ffn="feed_forward",
        ln_attention="layer_norm",
        ln_ffn="final_layer_norm",
        projections={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"},
        ffn_linears=("intermediate_dense", "output_dense"),
        final_norm="encoder.layer_norm" if pre_ln else None,
        embeddings="encoder.pos_conv_embed",
        block_input="encoder.dropout",
    )


AST_ANATOMY = Anatomy(
    family="ast",
    pre_ln=True,
    layers_path="layers",
    attention="attention",
    ffn="mlp",
    ln_attention="layernorm_before",
    ln_ffn="layernorm_after",
    projections={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"},
    ffn_linears=("fc1", "fc2"),
    final_norm="layernorm",
    embeddings="embeddings",
    block_input="embeddings",
)


def anatomy_of(backbone: nn.Module) -> Anatomy:
    """The :class:`Anatomy` of a Hugging Face backbone (``ASTModel``, ``Wav2Vec2Model``, ...)."""
    family = getattr(backbone, "petl_family", None) or _family_from_class(backbone)
    if family == "ast":
        return AST_ANATOMY
    stable = bool(getattr(backbone.config, "do_stable_layer_norm", False))
    return _frame_anatomy(family, pre_ln=stable)


def _family_from_class(backbone: nn.Module) -> str:
    name = type(backbone).__name__.lower()
    for family in ("ast", "wav2vec2", "hubert"):
        if name.startswith(family):
            return family
    raise TypeError(
        f"no anatomy for backbone class {type(backbone).__name__}; "
        "supported: ASTModel, Wav2Vec2Model, HubertModel"
    )


def get_path(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks, in order."""
    return get_path(backbone, anatomy_of(backbone).layers_path)


def sublayer(layer: nn.Module, which: str, anatomy: Anatomy) -> nn.Module:
    """The attention (``which='attention'``) or FFN (``'ffn'``) module of a block, unwrapped."""
    module = getattr(layer, anatomy.attention if which == ATTENTION else anatomy.ffn)
    while isinstance(module, SublayerWrapper):
        module = module.inner
    return module


def layer_norm(layer: nn.Module, which: str, anatomy: Anatomy) -> nn.LayerNorm:
    """The LayerNorm belonging to a block's attention or FFN sub-layer (see :class:`Anatomy`)."""
    return getattr(layer, anatomy.ln_attention if which == ATTENTION else anatomy.ln_ffn)


def projections(layer: nn.Module, anatomy: Anatomy) -> dict[str, nn.Linear]:
    """``{'q': Linear, 'k': ..., 'v': ..., 'o': ...}`` of a block's attention."""
    attn = sublayer(layer, ATTENTION, anatomy)
    return {k: getattr(attn, name) for k, name in anatomy.projections.items()}


def block_input(backbone: nn.Module) -> nn.Module:
    """The module whose output is the first block's input ``[B, T, D]`` (see :class:`Anatomy`)."""
    return get_path(backbone, anatomy_of(backbone).block_input)


def final_norm(backbone: nn.Module) -> nn.LayerNorm | None:
    path = anatomy_of(backbone).final_norm
    return get_path(backbone, path) if path else None


def norm_parameter_names(backbone: nn.Module) -> dict[str, str]:
    """Map parameter name (relative to the backbone) → ``'final_norm'`` | ``'norms'``.

    ``norms`` are the per-block LayerNorms of the attention and FFN sub-layers.
    """
    anatomy = anatomy_of(backbone)
    out: dict[str, str] = {}
    if anatomy.final_norm:
        for n, _ in get_path(backbone, anatomy.final_norm).named_parameters():
            out[f"{anatomy.final_norm}.{n}"] = "final_norm"
    for i, layer in enumerate(layers(backbone)):
        for ln in (anatomy.ln_attention, anatomy.ln_ffn):
            for n, _ in getattr(layer, ln).named_parameters():
                out[f"{anatomy.layers_path}.{i}.{ln}.{n}"] = "norms"
    return out


class SublayerWrapper(nn.Module):
    """Wraps a block's sub-layer module, keeping its call signature and output convention.

    Subclasses implement :meth:`combine`, which receives the sub-layer's input ``x`` (the tensor
    it was called with, ``[B, T, D]``) and its output ``y`` (``[B, T, D]``) and returns the new
    output. Attention modules return ``(y, weights)``; only ``y`` is replaced.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def run_inner(self, x: torch.Tensor, *args, **kwargs):
        return self.inner(x, *args, **kwargs)

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *args, **kwargs):
        out = self.run_inner(x, *args, **kwargs)
        if isinstance(out, tuple):
            return (self.combine(x, out[0]), *out[1:])
        return self.combine(x, out)


def wrap_sublayer(
    layer: nn.Module, which: str, anatomy: Anatomy, make: Callable[[nn.Module], SublayerWrapper]
) -> SublayerWrapper:
    """Replace a block's attention or FFN module by ``make(current_module)`` and return it."""
    attr = anatomy.attention if which == ATTENTION else anatomy.ffn
    wrapper = make(getattr(layer, attr))
    setattr(layer, attr, wrapper)
    return wrapper


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    """Swap the sub-module at dotted ``path`` (relative to ``root``) for ``new``."""
    parent_path, _, name = path.rpartition(".")
    parent = get_path(root, parent_path) if parent_path else root
    setattr(parent, name, new)
