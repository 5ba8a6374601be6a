"""Adapter blocks shared by adapters and the mixtures of adapters (spec ``methods.md`` §7.1).

Every block maps ``[B, M, D] -> [B, M, D]`` (b batch, m tokens, d hidden) with a bottleneck of
``r`` channels. Constructors take only shapes and behaviour switches (keyword-only), so a mixture
can build N experts of one kind; initialisation is a separate step, :func:`init_block`, because
the reference code's *written* init and its *effective* init differ (quirks R2/R3).

- :class:`Bottleneck` — ``up(act(down(x)))``; ``2dr + r + d`` parameters.
- :class:`Conformer` — LN → pointwise conv → GLU → depthwise conv → BatchNorm → SiLU → pointwise
  conv (Cappellazzo et al., MLSP 2024, paper 1's proposed block); ``3dr + 3d + r(k + 5)``.
- :class:`Convpass` — ``up(drop(qgelu(conv(qgelu(down(x))))))`` (Jie & Deng 2022);
  ``2dr + 3r² + 2r + d``.

The reference quirks are switches: R5 ``ln='dead'`` (the conformer LN is counted but its output
discarded), R6 ``conv='unused'`` (Convpass computes QuickGELU twice and drops the conv), R15
``act='relu'``, R7 ``axis='time_per_band'`` (kit extension).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.registry import get_family
from . import padding
from ._init import reference_init_, trunc_normal_

BLOCKS = ("bottleneck", "conformer", "convpass")
INITS = ("reference_effective", "zero_up", "written_zero")


def num_params(kind: str, dim: int, r: int, kernel_size: int = 31) -> int:
    """Parameter count of one block (spec §14: with d = 768, bottleneck 1,537r + 768, conformer
    2,304r + 2,304 + r(k + 5), Convpass 1,536r + 3r² + 2r + 768). Dead parts are counted."""
    if kind == "bottleneck":
        return 2 * dim * r + r + dim
    if kind == "conformer":
        return 3 * dim * r + 3 * dim + r * (kernel_size + 5)
    if kind == "convpass":
        return 2 * dim * r + 3 * r * r + 2 * r + dim
    raise ValueError(f"unknown adapter block {kind!r}; valid: {', '.join(BLOCKS)}")


class Bottleneck(nn.Module):
    """``A(x) = W_up · act(W_down x + b_down) + b_up``: ``[B, M, D] -> [B, M, D]``.

    Houlsby et al. 2019 / Pfeiffer et al. 2021. No LayerNorm, no dropout, no internal skip.
    ``act``: exact-erf GELU (what produced the published numbers) or ReLU (paper 1's figure, R15).
    Written init (reference code, R3): everything zero — see :func:`init_block`.
    """

    def __init__(self, dim: int, r: int, *, act: Literal["gelu", "relu"] = "gelu"):
        super().__init__()
        if act not in ("gelu", "relu"):
            raise ValueError(f"act={act!r}; valid: 'gelu', 'relu'")
        self.act = act
        self.down = nn.Linear(dim, r)
        self.up = nn.Linear(r, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)  # [B, M, r]
        h = F.gelu(h) if self.act == "gelu" else F.relu(h)
        return self.up(h)  # [B, M, D]


class Conformer(nn.Module):
    """The Conformer convolution module as an adapter: ``[B, M, D] -> [B, M, D]``.

    Steps: LayerNorm(D) → pointwise Conv1d(D, 2r) → GLU over channels (r) → depthwise
    Conv1d(r, r, k, groups=r, padding='same') → BatchNorm1d(r) → SiLU → pointwise Conv1d(r, D).
    BatchNorm uses batch statistics over B × M in train mode and running statistics in eval mode.

    Args:
        dim: D. r: bottleneck channels. kernel_size: depthwise kernel k (paper 1: 31 for GSC/FSC,
            8 for ESC-50/US8K).
        ln: ``'applied'`` (the Conformer module, and the reference's wav2vec2 copy) or ``'dead'``
            (the AST reference computes the LN and discards it, R5: counted, no gradient).
        axis: ``'sequence'`` — the depthwise conv runs along the token sequence as given (AST:
            CLS, DIST, frequency-major patches; R7) — or ``'time_per_band'`` — the patch tokens
            are reshaped to the ``grid`` (frequency rows F × time columns T) and convolved along
            time within each frequency band; the leading ``M - F·T`` special tokens bypass the
            depthwise conv (every other step is per token, so they still pass LN/GLU/BN/SiLU).
        grid: ``(F, T)``, required for ``axis='time_per_band'``.
    """

    def __init__(
        self,
        dim: int,
        r: int,
        *,
        kernel_size: int = 31,
        ln: Literal["applied", "dead"] = "applied",
        axis: Literal["sequence", "time_per_band"] = "sequence",
        grid: tuple[int, int] | None = None,
    ):
        super().__init__()
        if ln not in ("applied", "dead"):
            raise ValueError(f"ln={ln!r}; valid: 'applied', 'dead'")
        if axis not in ("sequence", "time_per_band"):
            raise ValueError(f"axis={axis!r}; valid: 'sequence', 'time_per_band'")
        if axis == "time_per_band" and grid is None:
            raise ValueError("axis='time_per_band' needs grid=(frequency rows, time columns)")
        self.ln, self.axis, self.grid = ln, axis, tuple(grid) if grid else None
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * r, 1)
        self.depthwise = nn.Conv1d(r, r, kernel_size, groups=r, padding="same")
        self.bn = nn.BatchNorm1d(r)
        self.pointwise_out = nn.Conv1d(r, dim, 1)

    def _depthwise(self, h: torch.Tensor) -> torch.Tensor:
        if self.axis == "sequence":  # padded frames read as zeros, as past a lone clip's end
            return self.depthwise(padding.zero_padded(h, 2, "conformer adapter"))
        f, t = self.grid
        b, r, m = h.shape
        if m < f * t:
            raise ValueError(f"time_per_band: {m} tokens but the patch grid {f}x{t} needs {f * t}")
        special, patches = h[:, :, : m - f * t], h[:, :, m - f * t :]
        patches = patches.reshape(b, r, f, t).transpose(1, 2).reshape(b * f, r, t)  # [B·F, r, T]
        patches = self.depthwise(patches)
        patches = patches.reshape(b, f, r, t).transpose(1, 2).reshape(b, r, f * t)  # [B, r, F·T]
        return torch.cat([special, patches], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ln == "applied":  # 'dead' (R5): the reference's LN output is discarded, so skip it
            x = self.norm(x)
        # the k=1 convs run as Linear on the token-major layout (same maths): Conv1d on the
        # transposed [B, D, M] view copies the activations through im2col in forward and backward
        h = F.linear(x, self.pointwise_in.weight[..., 0], self.pointwise_in.bias)  # [B, M, 2r]
        h = F.glu(h, dim=-1).transpose(1, 2)  # [B, r, M]
        h = F.silu(self.bn(self._depthwise(h))).transpose(1, 2)  # [B, M, r]
        # [B, M, D]; the reference's Dropout(0.0) follows
        return F.linear(h, self.pointwise_out.weight[..., 0], self.pointwise_out.bias)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x · σ(1.702 x)`` (CLIP's QuickGELU, used by Convpass)."""
    return x * torch.sigmoid(1.702 * x)


class Convpass(nn.Module):
    """Convpass (Jie & Deng, 2022) as in the PETL_AST MoA code: ``[B, M, D] -> [B, M, D]``.

    ``up(Dropout(QuickGELU(conv(QuickGELU(down(x))))))`` with ``conv = Conv1d(r, r, 3,
    padding='same')`` along the token sequence. ``conv='unused'`` reproduces the reference (R6):
    the conv output is discarded and QuickGELU is applied twice. Dropout (p = 0.1) follows this
    block's own train/eval mode.
    """

    def __init__(
        self,
        dim: int,
        r: int,
        *,
        conv: Literal["used", "unused"] = "used",
        kernel_size: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        if conv not in ("used", "unused"):
            raise ValueError(f"conv={conv!r}; valid: 'used', 'unused'")
        self.use_conv, self.p = conv == "used", dropout
        self.down = nn.Linear(dim, r)
        self.conv = nn.Conv1d(r, r, kernel_size, padding="same")
        self.up = nn.Linear(r, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = quick_gelu(self.down(x))  # [B, M, r]
        if self.use_conv:
            h = padding.zero_padded(h, 1, "Convpass adapter")  # padded frames read as zeros
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)  # along the tokens
        h = quick_gelu(h)
        # functional dropout: the module's own mode, not that of a parameter-free child
        return self.up(F.dropout(h, self.p, self.training))


def make_block(
    kind: str,
    dim: int,
    r: int,
    *,
    kernel_size: int = 31,
    act: str = "gelu",
    conformer_ln: str = "applied",
    conformer_axis: str = "sequence",
    grid: tuple[int, int] | None = None,
    convpass_conv: str = "used",
) -> nn.Module:
    """One block of ``kind`` (``'bottleneck'`` | ``'conformer'`` | ``'convpass'``), written init."""
    if r < 1:
        raise ValueError(f"adapter bottleneck r={r}; must be >= 1")
    if kind == "bottleneck":
        return Bottleneck(dim, r, act=act)
    if kind == "conformer":
        return Conformer(
            dim, r, kernel_size=kernel_size, ln=conformer_ln, axis=conformer_axis, grid=grid
        )
    if kind == "convpass":
        return Convpass(dim, r, conv=convpass_conv)
    raise ValueError(f"unknown adapter block {kind!r}; valid: {', '.join(BLOCKS)}")


# --------------------------------------------------------------------------- initialisation
def _written_init(block: nn.Module) -> None:
    """The init the reference code writes in each block's constructor."""
    if isinstance(block, Bottleneck):  # R3: all zeros
        for p in block.parameters():
            nn.init.zeros_(p)
    elif isinstance(block, Convpass):
        for m in (block.down, block.conv):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(block.up.weight)
        nn.init.zeros_(block.up.bias)
    # Conformer: PyTorch defaults (Conv1d Kaiming-uniform a=√5, LN and BN 1/0), as constructed


def init_block(block: nn.Module, scheme: str, family: str | None = None) -> nn.Module:
    """Initialise ``block`` in place and return it.

    Args:
        scheme:
            ``'reference_effective'`` — what the published numbers were trained with (R2): the
            written init, then the backbone's initialiser over the injected modules
            (:func:`._init.reference_init_`): every Linear trunc-normal(0, 0.02) with bounds ±2
            (the wav2vec2 initialiser's N(0, 0.02) is the same to 100σ), bias 0; LayerNorm
            1/0; on frame models also every Conv1d Kaiming-normal with bias
            U(±√(groups / (in · k))) (the wav2vec2 initialiser); BatchNorm untouched.
            ``'zero_up'`` (corrected) — bottleneck: W_down trunc-normal(0, 0.02), W_up = 0,
            biases 0, so the block outputs 0 while every tensor still gets gradient from the
            second step; Convpass: its written init (Xavier down/conv, up = 0); Conformer:
            PyTorch defaults (non-zero at init by design).
            ``'written_zero'`` — the literal written init (bottleneck all zeros: degenerate, only
            b_up ever trains, R3); a diagnostic, warns.
        family: the backbone family the block is injected into (only changes
            ``'reference_effective'``: whether its initialiser re-initialises Conv1d modules,
            ``Family.initialiser_inits_conv1d``); None = it does not (as AST's).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown adapter init {scheme!r}; valid: {', '.join(INITS)}")
    with torch.no_grad():
        _written_init(block)
        if scheme == "written_zero":
            if isinstance(block, Bottleneck):
                warnings.warn(
                    "adapter_init='written_zero' is a diagnostic (quirk R3): W_down = W_up = 0, so "
                    "only b_up receives gradient and the adapter degenerates to a per-layer bias",
                    UserWarning,
                    stacklevel=2,
                )
        elif scheme == "zero_up":
            if isinstance(block, Bottleneck):
                trunc_normal_(block.down.weight)
        else:  # reference_effective
            reference_init_(block)
            convs = family is not None and get_family(family).initialiser_inits_conv1d
            for m in block.modules():
                if isinstance(m, nn.Conv1d) and convs:  # the wav2vec2 initialiser
                    nn.init.kaiming_normal_(m.weight)
                    bound = math.sqrt(m.groups / (m.in_channels * m.kernel_size[0]))
                    nn.init.uniform_(m.bias, -bound, bound)
    return block


def zero_at_init(kind: str, scheme: str) -> bool:
    """True when a block of ``kind`` initialised with ``scheme`` outputs exactly 0."""
    return kind in ("bottleneck", "convpass") and scheme in ("zero_up", "written_zero")


def no_masking_no_layerdrop(backbone: nn.Module, train_mask_emb: bool) -> None:
    """Adapters and mixtures in a frame model (spec §10): the reference feeds the encoder itself
    (no SpecAugment masking) and keeps it in eval mode (no LayerDrop); here the encoder holds
    trainable modules, so both are switched off where the config has them (AST has neither).
    ``masked_spec_embed``, where there is one, trains iff ``train_mask_emb`` (reference quirk)."""
    for name, off in (("apply_spec_augment", False), ("layerdrop", 0.0)):
        if hasattr(backbone.config, name):
            setattr(backbone.config, name, off)
    if getattr(backbone, "masked_spec_embed", None) is not None:
        backbone.masked_spec_embed.requires_grad_(train_mask_emb)
