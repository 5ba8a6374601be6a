"""The music PETL reference's adapter layout (spec ``methods.md`` §11, quirks M3, M8), used by
the ``adapter`` method when ``music_adapter_position`` is set (preset ``'music_adapter'``).

The adapter is ``A(u) = u + f(u)`` with ``f`` a bottleneck (``W_up · GELU(W_down u + b_down) +
b_up``, b = 16; W_down Kaiming-uniform(a = √5), W_up = 0, so A is the identity at init). One per
sub-layer site: attention and FFN (MERT/HuBERT: 2 per block); the conformer's ``ffn1`` too (3 per
block), never its conv module (M8). Every per-block LayerNorm trains with them.

``music_adapter_position``:

- ``'after_residual'`` (the reference, M3): A acts on the residual sum. Post-LN block (MERT-95M)::

      u = x + MHSA(x);  v = LN_att(A_att(u));  w = v + FF(v);  out = LN_fin(A_ffn(w))

  The sum u is exactly the input of the LayerNorm that follows it, so A runs as a forward
  pre-hook of that LayerNorm (the block's own forward is untouched). Pre-LN blocks (AST,
  MERT-330M, the conformer) read the sum twice (next LN and next residual), so the sub-layer is
  wrapped instead: with the stream h (the input of the site's own pre-LN, captured by a pre-hook)
  and the sub-layer output y scaled by c in the block (0.5 for a macaron half-step FFN, 1
  otherwise), the wrapper returns ``y + f(h + c·y) / c``, so the block computes
  ``h + c·y + f(h + c·y) = A(h + c·y)``. A dropout between the sub-layer and the sum (HuBERT)
  then also sees f; it is off in eval mode and 0 in MERT-330M.
- ``'sublayer_output'`` (Houlsby's original, corrected default): A on the sub-layer's output
  before the residual, ``x + A(y)``: the kit's sequential adapter with residual.

Hooks are bound methods of modules the block owns, so ``copy.deepcopy`` rebinds them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backbones import anatomy
from ..config import ConfigError
from . import blocks

CONV_SITE = "conv"  # the conformer's convolution module: no music adapter there (M8)


def music_sites(anat: anatomy.Anatomy) -> list[str]:
    """Sites of a block that get a music adapter: every sub-layer except the conv module."""
    extra = getattr(anat, "extra_sites", {}) or {}
    return [anatomy.ATTENTION, anatomy.FFN, *(s for s in extra if s != CONV_SITE)]


def residual_scale(anat: anatomy.Anatomy, site: str) -> float:
    """c: how the block scales a site's output before adding it to the stream (the anatomy's
    ``residual_scales``; 1 where not declared)."""
    return float((getattr(anat, "residual_scales", {}) or {}).get(site, 1.0))


class DropoutBottleneck(blocks.Bottleneck):
    """The bottleneck with dropout ``p`` after the activation (``drop_rate``, quirk M11):
    ``W_up · Dropout(GELU(W_down x + b_down)) + b_up``, ``[B, M, D] -> [B, M, D]``."""

    def __init__(self, dim: int, r: int, p: float):
        super().__init__(dim, r)
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(torch.nn.functional.gelu(self.down(x))))


def make_music_block(hidden: int, r: int, dropout: float = 0.0) -> blocks.Bottleneck:
    """f of the music adapter: W_down Kaiming-uniform(a = √5), W_up = 0, biases 0; with
    ``dropout`` > 0 a :class:`DropoutBottleneck` (same parameters)."""
    block = DropoutBottleneck(hidden, r, dropout) if dropout else blocks.Bottleneck(hidden, r)
    with torch.no_grad():
        nn.init.kaiming_uniform_(block.down.weight, a=math.sqrt(5))
        block.down.bias.zero_()
        block.up.weight.zero_()
        block.up.bias.zero_()
    return block


class NormInputAdapter(nn.Module):
    """``A(u) = u + f(u)`` applied to a LayerNorm's input through a forward pre-hook (post-LN)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.block(u)  # [B, T, D]

    def pre_hook(self, module: nn.Module, args: tuple) -> tuple:
        return (self(args[0]), *args[1:])


class AfterResidualSublayer(anatomy.SublayerWrapper):
    """Pre-LN ``after_residual``: returns ``y + f(h + c·y) / c`` (see the module docstring).

    ``h`` ``[B, T, D]`` is the stream entering the site, captured by :meth:`capture` (a forward
    pre-hook on the site's pre-LN); ``c`` the block's scale of this site's output.
    """

    def __init__(self, inner: nn.Module, block: nn.Module, scale: float):
        super().__init__(inner)
        self.petl_adapter = block
        self.scale = scale
        self._stream: torch.Tensor | None = None

    def capture(self, module: nn.Module, args: tuple) -> None:
        self._stream = args[0]

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._stream is None:
            raise RuntimeError("after_residual adapter: the site's LayerNorm did not run first")
        h, self._stream = self._stream, None  # drop the reference: no stale graph kept
        return y + self.petl_adapter(h + self.scale * y) / self.scale

    def extra_repr(self) -> str:
        return f"position='after_residual', scale={self.scale:g}"


def apply_music_layout(model, position: str, r: int, dropout: float = 0.0) -> None:
    """Insert the music adapters into every block of ``model.backbone`` and unfreeze every
    per-block LayerNorm (spec §11's trainable set; the encoder's own LN stays frozen).
    ``dropout``: inside each adapter, after the activation (``drop_rate``, M11)."""
    from .adapter import AdapterSublayer

    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    hidden = backbone.config.hidden_size
    for layer in anatomy.layers(backbone):
        for site in music_sites(anat):
            block = make_music_block(hidden, r, dropout)
            norm = anatomy.layer_norm(layer, site, anat)
            if position == "sublayer_output":
                anatomy.wrap_sublayer(
                    layer,
                    site,
                    anat,
                    lambda inner, b=block: AdapterSublayer(inner, b, "sequential", True),
                )
            elif not anat.pre_ln:  # post-LN: the sum is the input of the LN after it
                adapter = NormInputAdapter(block)
                setattr(layer, f"petl_music_adapter_{site}", adapter)
                norm.register_forward_pre_hook(adapter.pre_hook)
            else:
                scale = residual_scale(anat, site)
                wrapper = anatomy.wrap_sublayer(
                    layer,
                    site,
                    anat,
                    lambda inner, b=block, c=scale: AfterResidualSublayer(inner, b, c),
                )
                norm.register_forward_pre_hook(wrapper.capture)
    names = anatomy.norm_parameter_names(backbone)
    params = dict(backbone.named_parameters())
    for name, group in names.items():
        if group == "norms":
            params[_unwrapped(name, params)].requires_grad_(True)


def _unwrapped(name: str, params: dict) -> str:
    """The live parameter name of an anatomy name (wrappers insert ``.inner``)."""
    if name in params:
        return name
    for live in params:
        if ".".join(p for p in live.split(".") if p != "inner") == name:
            return live
    raise ConfigError(f"music adapter: no parameter {name!r} in the backbone")
