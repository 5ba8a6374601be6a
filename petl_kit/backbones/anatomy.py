"""The one place that knows each backbone family's block internals.

Methods never copy a Hugging Face ``forward``: they ask the anatomy where a transformer block's
attention and feed-forward sub-layers are, which Linear modules project queries/keys/values, and
which LayerNorms belong to which sub-layer, and then wrap those modules. A family's record
(``Family.anatomy`` in :mod:`.registry`) names its layout here; :func:`anatomy_of` asks it.

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

MusicFM (conformer, pre-LN, ``Wav2Vec2ConformerEncoderLayer``; macaron FFNs with half steps)::

    h = x + 0.5 * ffn1(ffn1_layer_norm(x))            # site 'ffn1'
    h = h + self_attn(self_attn_layer_norm(h))[0]     # site 'attention': linear_q/k/v/out
    h = h + conv_module(h)                            # site 'conv' (its LN is inside it)
    h = h + 0.5 * ffn2(ffn2_layer_norm(h))            # site 'ffn'
    out = final_layer_norm(h)
    ... then ``conformer.layer_norm`` after the last layer.

    The kit's 'ffn' site is ``ffn2``: the FFN after attention (and convolution) that closes the
    block, where a Transformer's FFN sits, so Pfeiffer adapters / FFN mixtures go there and
    Houlsby puts one at the attention and one there. ``ffn1`` and ``conv_module`` are extra sites
    (:data:`FFN1`, :data:`CONV`) for methods that ask for them. Whatever wraps an FFN site is
    inside its half step: a parallel adapter's output is scaled by 0.5 with the FFN's.

A sub-layer is wrapped by :func:`wrap_sublayer`, which swaps the module on the layer for a
:class:`SublayerWrapper` holding the original as ``inner``; the wrapper keeps the original call
signature and tuple convention (attention modules return ``(output, weights)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigError
from .registry import FAMILIES, get_family

ATTENTION, FFN = "attention", "ffn"
FFN1, CONV = "ffn1", "conv"  # conformer extra sites: the first macaron FFN, the conv module
# Token roles of a backbone's output sequence, used by pooling: AST's CLS and DIST tokens, the
# PROMPT tokens that prompt methods insert, and PATCH for spectrogram patches or frames
CLS, DIST, PROMPT, PATCH = 0, 1, 2, 3


@dataclass(frozen=True)
class Anatomy:
    """Where things live in one backbone family.

    Attributes:
        family: the layout's name, for messages (``'ast'``, ``'wav2vec2'``, ``'musicfm'``, ...).
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
        extra_sites: further sub-layers of a block, ``{site: (module path, its LayerNorm path)}``
            (conformer: ``'ffn1'`` and ``'conv'``); :func:`sublayer`, :func:`layer_norm` and
            :func:`wrap_sublayer` accept these names too.
        extra_norms: per-block LayerNorms besides ``ln_attention`` / ``ln_ffn`` (counted in the
            ``norms`` group: conformer ``ffn1_layer_norm``, ``final_layer_norm``).
        residual_scales: ``{site: c}`` where the block adds ``c · output`` of a site to the
            stream (conformer macaron FFNs: 0.5); 1 for sites not listed.
        feature_encoder: dotted path of the front end in front of the blocks that full
            fine-tuning may keep frozen (wav2vec2's conv feature encoder), or None (AST).
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
    extra_sites: dict = field(default_factory=dict)
    extra_norms: tuple[str, ...] = ()
    residual_scales: dict = field(default_factory=dict)
    feature_encoder: str | None = None


def frame_anatomy(family: str, config) -> Anatomy:
    """wav2vec2-style blocks (``*EncoderLayer``): post-LN, or pre-LN with
    ``config.do_stable_layer_norm`` (large models), which then have a final LN."""
    pre_ln = bool(getattr(config, "do_stable_layer_norm", False))
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
        feature_encoder="feature_extractor",
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


CONFORMER_ANATOMY = Anatomy(
    family="musicfm",
    pre_ln=True,
    layers_path="conformer.layers",
    attention="self_attn",
    ffn="ffn2",
    ln_attention="self_attn_layer_norm",
    ln_ffn="ffn2_layer_norm",
    projections={"q": "linear_q", "k": "linear_k", "v": "linear_v", "o": "linear_out"},
    ffn_linears=("intermediate_dense", "output_dense"),
    final_norm="conformer.layer_norm",
    embeddings="conv",
    block_input="conformer.dropout",  # after the conv front end, before rotary and layer 1
    feature_encoder="conv",
    extra_sites={
        FFN1: ("ffn1", "ffn1_layer_norm"),
        CONV: ("conv_module", "conv_module.layer_norm"),
    },
    extra_norms=("ffn1_layer_norm", "final_layer_norm"),
    residual_scales={FFN: 0.5, FFN1: 0.5},
)


def anatomy_of(backbone: nn.Module) -> Anatomy:
    """The :class:`Anatomy` of a backbone, from its family record (``Family.anatomy``)."""
    family = getattr(backbone, "petl_family", None)
    record = get_family(family) if family else _family_from_class(backbone)
    return record.anatomy(backbone.config)


def _family_from_class(backbone: nn.Module):
    """The first registered family whose model class ``backbone`` is (a model built outside
    :func:`~petl_kit.backbones.load_backbone` has no ``petl_family``)."""
    for record in FAMILIES.values():
        if isinstance(backbone, record.model_cls):
            return record
    classes = dict.fromkeys(r.model_cls.__name__ for r in FAMILIES.values())
    raise TypeError(
        f"no anatomy for backbone class {type(backbone).__name__}; supported: {', '.join(classes)}"
    )


def get_path(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks, in order."""
    return get_path(backbone, anatomy_of(backbone).layers_path)


def truncate_encoder(backbone: nn.Module, depth: int) -> nn.Module:
    """Keep the first ``depth`` transformer blocks of ``backbone`` in place (any family).

    Everything around the blocks stays: a pre-LN model's final LayerNorm then normalises block
    ``depth``'s output (as the music reference's 6-layer MusicFM), a post-LN model (MERT-95M)
    returns block ``depth``'s own output. ``config.num_hidden_layers`` follows.
    """
    blocks = layers(backbone)
    n = len(blocks)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= n:
        raise ConfigError(
            f"encoder_depth={depth!r}; the {getattr(backbone, 'petl_family', '')} backbone has "
            f"{n} blocks: choose an int from 1 to {n}, or None for all"
        )
    path = anatomy_of(backbone).layers_path
    before = set(backbone.state_dict())
    replace_module(backbone, path, nn.ModuleList(list(blocks)[:depth]))
    backbone.config.num_hidden_layers = depth
    report = getattr(backbone, "petl_load_report", None)
    if report is not None and report["source"] == "checkpoint":  # loaded, then sliced off
        gone = before - set(backbone.state_dict())
        report["dropped"].update({k: f"beyond encoder_depth={depth}" for k in sorted(gone)})
        report["loaded"] -= len(gone)
    return backbone


def _site(which: str, anatomy: Anatomy) -> tuple[str, str]:
    """``(module path, LayerNorm path)`` of sub-layer site ``which`` on a block."""
    if which == ATTENTION:
        return anatomy.attention, anatomy.ln_attention
    if which == FFN:
        return anatomy.ffn, anatomy.ln_ffn
    if which in anatomy.extra_sites:
        return anatomy.extra_sites[which]
    valid = ", ".join(map(repr, sites(anatomy)))
    raise ValueError(f"{anatomy.family} blocks have no sub-layer {which!r}; valid: {valid}")


def sites(anatomy: Anatomy) -> list[str]:
    """Sub-layer sites of a block: ``'attention'``, ``'ffn'`` and the family's extra sites."""
    return [ATTENTION, FFN, *anatomy.extra_sites]


def sublayer(layer: nn.Module, which: str, anatomy: Anatomy) -> nn.Module:
    """The attention (``which='attention'``) or FFN (``'ffn'``) module of a block, unwrapped."""
    module = get_path(layer, _site(which, anatomy)[0])
    while isinstance(module, SublayerWrapper):
        module = module.inner
    return module


def layer_norm(layer: nn.Module, which: str, anatomy: Anatomy) -> nn.LayerNorm:
    """The LayerNorm belonging to a block's attention or FFN sub-layer (see :class:`Anatomy`)."""
    return get_path(layer, _site(which, anatomy)[1])


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
        for ln in (anatomy.ln_attention, anatomy.ln_ffn, *anatomy.extra_norms):
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

    def __call__(self, *args, **kwargs):
        if not args and "hidden_states" in kwargs:  # conformer layers pass the input by keyword
            args = (kwargs.pop("hidden_states"),)
        return super().__call__(*args, **kwargs)

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
    attr = _site(which, anatomy)[0]
    wrapper = make(get_path(layer, attr))
    replace_module(layer, attr, wrapper)
    return wrapper


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    """Swap the sub-module at dotted ``path`` (relative to ``root``) for ``new``."""
    parent_path, _, name = path.rpartition(".")
    parent = get_path(root, parent_path) if parent_path else root
    setattr(parent, name, new)
