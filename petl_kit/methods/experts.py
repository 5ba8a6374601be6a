"""Grouped experts: E adapter blocks of one kind computed together (no loop over experts).

The mixtures of adapters (:mod:`.dense_moa`, :mod:`.soft_moa`) run E experts of one block kind
from :mod:`.blocks`. Here every weight is stacked along a leading expert axis ``[E, ...]`` and the
experts run as one einsum / batched matmul / grouped convolution. Einsum axes:

    b batch · n tokens (or slots) · e experts · d hidden · r bottleneck · c 2r (conformer GLU input)

Every grouped block is ``up(hidden(x))`` with a per-expert linear ``up`` (``up_weight [E, D, r]``,
``up_bias [E, D]``; the conformer's last pointwise conv is that linear), so it offers two calls:

- :meth:`GroupedExperts.forward` — each expert its own input (Soft-MoA slots):
  ``[b, e, n, d] -> [b, e, n, d]``, ``out[:, i] = A_i(x[:, i])``;
- :meth:`GroupedExperts.mix` — every expert on the same input, mixed by per-token gates
  (Dense-MoA): ``x [b, n, d], gate [b, n, e] -> [b, n, d]``, ``Σ_i gate_i · A_i(x)``. The gate is
  folded into the hidden activations before ``up``, so the E up-projections are one matmul over
  ``(e, r)``: the cost of one bottleneck of width E·r, never an ``[b, n, e, d]`` tensor.

Blocks are built and initialised as E separate :mod:`.blocks` instances (so init schemes and the
reference quirks R2/R3/R5/R6 are exactly those of the adapters) and then stacked
(:func:`make_experts`, ``from_blocks``); ``tests/methods/test_experts.py`` checks that a grouped
block equals its E separate blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import blocks, padding


def _stack(tensors) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


def _channels(h: torch.Tensor) -> torch.Tensor:
    """``[b, e, n, r] -> [b, e·r, n]``: channel-first layout for grouped convolutions/BatchNorm."""
    b, e, n, r = h.shape
    return h.transpose(2, 3).reshape(b, e * r, n)


def _unchannels(h: torch.Tensor, e: int) -> torch.Tensor:
    """``[b, e·r, n] -> [b, e, n, r]``."""
    b, er, n = h.shape
    return h.reshape(b, e, er // e, n).transpose(2, 3)


class GroupedExperts(nn.Module):
    """Base of the grouped blocks: subclasses give ``hidden(x) -> [b, e, n, r]``.

    ``x`` is ``[b, n, d]`` (shared by every expert) or ``[b, e, n, d]`` (one input per expert).
    """

    kind = ""

    def __init__(self, num_experts: int, dim: int, r: int):
        super().__init__()
        self.num_experts, self.dim, self.r = num_experts, dim, r
        self.up_weight = nn.Parameter(torch.empty(num_experts, dim, r))
        self.up_bias = nn.Parameter(torch.empty(num_experts, dim))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expert i on ``x[:, i]``: ``[b, e, n, d] -> [b, e, n, d]``."""
        h = self.hidden(x)  # [b, e, n, r]
        return torch.einsum("benr,edr->bend", h, self.up_weight) + self.up_bias[:, None, :]

    def mix(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``Σ_i gate[..., i] · A_i(x)``: ``x [b, n, d], gate [b, n, e] -> [b, n, d]``."""
        h = self.hidden(x) * gate.transpose(1, 2)[..., None]  # [b, e, n, r], gated per token
        # one matmul over (e, r): the E up-projections and the sum over experts together
        return torch.einsum("benr,edr->bnd", h, self.up_weight) + gate @ self.up_bias

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, dim={self.dim}, r={self.r}"

    def _load_up(self, parts) -> None:
        self.up_weight = _stack(
            p.up.weight if hasattr(p, "up") else p.pointwise_out.weight[..., 0] for p in parts
        )
        self.up_bias = _stack(
            p.up.bias if hasattr(p, "up") else p.pointwise_out.bias for p in parts
        )


def _down(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-expert linear ``[E, c, D]``: ``[b, n, d]`` or ``[b, e, n, d]`` -> ``[b, e, n, c]``."""
    if x.dim() == 3:  # shared input: one [b·n, d] x [d, e·c] matmul
        h = torch.einsum("bnd,ecd->becn", x, weight).transpose(2, 3)
    else:  # one input per expert: a matmul batched over e
        h = torch.einsum("bend,ecd->benc", x, weight)
    return h + bias[:, None, :]


class GroupedBottleneck(GroupedExperts):
    """E :class:`.blocks.Bottleneck` experts: ``up_i(act(down_i x))``.

    Weights: ``down_weight [E, r, D]``, ``down_bias [E, r]``, ``up_weight [E, D, r]``,
    ``up_bias [E, D]``; ``E · (2Dr + r + D)`` parameters.
    """

    kind = "bottleneck"

    def __init__(self, num_experts: int, dim: int, r: int, *, act: str = "gelu"):
        super().__init__(num_experts, dim, r)
        self.act = act
        self.down_weight = nn.Parameter(torch.empty(num_experts, r, dim))
        self.down_bias = nn.Parameter(torch.empty(num_experts, r))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        h = _down(x, self.down_weight, self.down_bias)  # [b, e, n, r]
        return F.gelu(h) if self.act == "gelu" else F.relu(h)

    @classmethod
    def from_blocks(cls, parts: list[blocks.Bottleneck]) -> GroupedBottleneck:
        first = parts[0]
        out = cls(len(parts), first.down.in_features, first.down.out_features, act=first.act)
        out.down_weight = _stack(p.down.weight for p in parts)
        out.down_bias = _stack(p.down.bias for p in parts)
        out._load_up(parts)
        return out


class GroupedConvpass(GroupedExperts):
    """E :class:`.blocks.Convpass` experts: ``up(drop(qgelu(conv(qgelu(down x)))))``.

    The E ``Conv1d(r, r, k)`` run as one convolution with ``groups=E`` along the token (or slot)
    axis. ``conv='unused'`` (R6): the conv is skipped and QuickGELU applied twice; its weights are
    still counted. Weights: ``down [E, r, D] / [E, r]``, ``conv_weight [E, r, r, k]``,
    ``conv_bias [E, r]``, ``up [E, D, r] / [E, D]``; ``E · (2Dr + 3r² + 2r + D)`` at k = 3.
    """

    kind = "convpass"

    def __init__(
        self,
        num_experts: int,
        dim: int,
        r: int,
        *,
        conv: str = "used",
        kernel_size: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__(num_experts, dim, r)
        self.use_conv, self.p = conv == "used", dropout
        self.down_weight = nn.Parameter(torch.empty(num_experts, r, dim))
        self.down_bias = nn.Parameter(torch.empty(num_experts, r))
        self.conv_weight = nn.Parameter(torch.empty(num_experts, r, r, kernel_size))
        self.conv_bias = nn.Parameter(torch.empty(num_experts, r))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        e, r = self.num_experts, self.r
        h = blocks.quick_gelu(_down(x, self.down_weight, self.down_bias))  # [b, e, n, r]
        if self.use_conv:
            h = padding.zero_padded(h, 2, "Convpass experts")  # padded frames read as zeros
            w = self.conv_weight.reshape(e * r, r, -1)  # grouped conv: expert i's r channels
            h = _unchannels(
                F.conv1d(_channels(h), w, self.conv_bias.reshape(-1), padding="same", groups=e), e
            )
        return F.dropout(blocks.quick_gelu(h), self.p, self.training)

    @classmethod
    def from_blocks(cls, parts: list[blocks.Convpass]) -> GroupedConvpass:
        first = parts[0]
        out = cls(
            len(parts),
            first.down.in_features,
            first.down.out_features,
            conv="used" if first.use_conv else "unused",
            kernel_size=first.conv.kernel_size[0],
            dropout=first.p,
        )
        out.down_weight = _stack(p.down.weight for p in parts)
        out.down_bias = _stack(p.down.bias for p in parts)
        out.conv_weight = _stack(p.conv.weight for p in parts)
        out.conv_bias = _stack(p.conv.bias for p in parts)
        out._load_up(parts)
        return out


class GroupedConformer(GroupedExperts):
    """E :class:`.blocks.Conformer` experts (sequence axis): LN → pointwise → GLU → depthwise →
    BatchNorm → SiLU → pointwise.

    The LN's affine is folded into the first pointwise weights (exact algebra, one matmul); the
    E depthwise convs are one depthwise conv over E·r channels and the E BatchNorms one
    ``BatchNorm1d(E·r)`` (per-channel statistics over batch × tokens, as E separate ones).
    ``ln='dead'`` (R5): the LN is skipped but counted. Weights: ``norm_weight/norm_bias [E, D]``,
    ``in_weight [E, 2r, D]``, ``in_bias [E, 2r]``, ``dw_weight [E, r, k]``, ``dw_bias [E, r]``,
    ``bn`` (E·r channels), ``up [E, D, r] / [E, D]``; ``E · (3Dr + 3D + r(k + 5))``.
    """

    kind = "conformer"

    def __init__(
        self, num_experts: int, dim: int, r: int, *, kernel_size: int = 31, ln: str = "applied"
    ):
        super().__init__(num_experts, dim, r)
        self.ln = ln
        self.norm_weight = nn.Parameter(torch.empty(num_experts, dim))
        self.norm_bias = nn.Parameter(torch.empty(num_experts, dim))
        self.in_weight = nn.Parameter(torch.empty(num_experts, 2 * r, dim))
        self.in_bias = nn.Parameter(torch.empty(num_experts, 2 * r))
        self.dw_weight = nn.Parameter(torch.empty(num_experts, r, kernel_size))
        self.dw_bias = nn.Parameter(torch.empty(num_experts, r))
        self.bn = nn.BatchNorm1d(num_experts * r)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        e, r = self.num_experts, self.r
        w, b = self.in_weight, self.in_bias
        if self.ln == "applied":  # W·(γ ⊙ x̂ + β) + c = (W diag γ) x̂ + (W β + c)
            x = F.layer_norm(x, (self.dim,))
            w, b = (
                w * self.norm_weight[:, None, :],
                b + torch.einsum("ecd,ed->ec", w, self.norm_bias),
            )
        h = F.glu(_down(x, w, b), dim=-1)  # [b, e, n, r]: first half gated by the second
        h = padding.zero_padded(h, 2, "conformer experts")  # padded frames read as zeros
        h = F.conv1d(
            _channels(h),
            self.dw_weight.reshape(e * r, 1, -1),
            self.dw_bias.reshape(-1),
            padding="same",
            groups=e * r,
        )
        return _unchannels(F.silu(self.bn(h)), e)

    @classmethod
    def from_blocks(cls, parts: list[blocks.Conformer]) -> GroupedConformer:
        first = parts[0]
        if first.axis != "sequence":
            raise ValueError("grouped conformer experts support axis='sequence' only")
        d, r = first.norm.normalized_shape[0], first.depthwise.in_channels
        out = cls(len(parts), d, r, kernel_size=first.depthwise.kernel_size[0], ln=first.ln)
        out.norm_weight = _stack(p.norm.weight for p in parts)
        out.norm_bias = _stack(p.norm.bias for p in parts)
        out.in_weight = _stack(p.pointwise_in.weight[..., 0] for p in parts)
        out.in_bias = _stack(p.pointwise_in.bias for p in parts)
        out.dw_weight = _stack(p.depthwise.weight[:, 0] for p in parts)
        out.dw_bias = _stack(p.depthwise.bias for p in parts)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(out.bn, name).copy_(torch.cat([getattr(p.bn, name) for p in parts]))
            out.bn.num_batches_tracked.copy_(first.bn.num_batches_tracked)
        out.bn.momentum, out.bn.eps = first.bn.momentum, first.bn.eps
        out._load_up(parts)
        return out


GROUPED = {
    "bottleneck": GroupedBottleneck,
    "convpass": GroupedConvpass,
    "conformer": GroupedConformer,
}


def group_blocks(parts: list[nn.Module]) -> GroupedExperts:
    """Stack E separate blocks of one kind (same shapes) into a grouped block."""
    kinds = {type(p) for p in parts}
    if len(kinds) != 1:
        raise ValueError(
            f"experts must share one block kind; got {sorted(k.__name__ for k in kinds)}"
        )
    kind = {
        blocks.Bottleneck: "bottleneck",
        blocks.Convpass: "convpass",
        blocks.Conformer: "conformer",
    }[kinds.pop()]
    return GROUPED[kind].from_blocks(parts)


def make_experts(
    kind: str,
    num_experts: int,
    dim: int,
    r: int,
    *,
    init: str,
    family: str | None = None,
    kernel_size: int = 31,
    conformer_ln: str = "applied",
    convpass_conv: str = "used",
) -> GroupedExperts:
    """E experts of ``kind``, each built and initialised as a :mod:`.blocks` adapter
    (:func:`.blocks.init_block` with ``init``), then stacked."""
    if num_experts < 1:
        raise ValueError(f"num_experts={num_experts}; must be >= 1")
    on_meta = torch.empty(()).device.type == "meta"  # shape-only builds (counts): no init
    parts = []
    for _ in range(num_experts):
        block = blocks.make_block(
            kind,
            dim,
            r,
            kernel_size=kernel_size,
            conformer_ln=conformer_ln,
            convpass_conv=convpass_conv,
        )
        parts.append(block if on_meta else blocks.init_block(block, init, family))
    return group_blocks(parts)


def num_params(kind: str, num_experts: int, dim: int, r: int, kernel_size: int = 31) -> int:
    """Parameters of E experts: E times :func:`.blocks.num_params` (dead parts counted)."""
    return num_experts * blocks.num_params(kind, dim, r, 3 if kind == "convpass" else kernel_size)
