"""The valid frames of the batch being encoded, for injected modules that mix tokens.

A frame model's padded batch (wav2vec2, HuBERT, MERT, MusicFM) has frames that are not part of
a clip. The backbone masks them in attention (``attention_mask``), but a module a method injects
only sees ``[B, T, D]``; one that mixes tokens (Soft-MoA's dispatch softmax over the tokens, the
convolutions of the conformer and Convpass blocks) would read padded frames, so a clip's output
would depend on what it was batched with.

``PetlModel.forward`` (and ``encode``) run the backbone inside :func:`valid_frames` with the
batch's ``[B, T]`` bool mask of real frames when it passes an attention mask to the backbone
(``ModelOptions.pass_attention_mask``: the corrected profile; R27), and with None otherwise (AST,
unpadded batches, the reference profile). Injected modules read it with :func:`current`.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch

_VALID: ContextVar[torch.Tensor | None] = ContextVar("petl_kit_valid_frames", default=None)


@contextlib.contextmanager
def valid_frames(mask: torch.Tensor | None):
    """Expose ``mask`` (``[B, T]`` bool, True = a real frame; None = every frame is real) to
    injected modules for the duration of the block (nests; restored on exit)."""
    token = _VALID.set(None if mask is None else mask.bool())
    try:
        yield
    finally:
        _VALID.reset(token)


def current() -> torch.Tensor | None:
    """The ``[B, T]`` bool mask of real frames of the batch being encoded, or None."""
    return _VALID.get()


def token_mask(x: torch.Tensor, who: str) -> torch.Tensor | None:
    """The current mask checked against a token sequence ``x [B, T, D]``: None when no mask is
    active, else ``[B, T]`` bool; a mask of another shape is an error naming ``who``."""
    mask = _VALID.get()
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"{who}: the batch's valid-frame mask is {tuple(mask.shape)} but the token sequence "
            f"is {tuple(x.shape[:2])}; the module must run on the backbone's frame sequence"
        )
    return mask.to(x.device)


def zero_padded(h: torch.Tensor, axis: int, who: str) -> torch.Tensor:
    """``h`` with the batch's padded frames set to 0 along its token axis ``axis`` (batch first),
    so that a convolution over the tokens reads zeros there, exactly as past the end of a clip
    batched alone (``padding='same'``). Unchanged when no mask is active."""
    mask = _VALID.get()
    if mask is None:
        return h
    if h.shape[0] != mask.shape[0] or h.shape[axis] != mask.shape[1]:
        raise ValueError(
            f"{who}: the batch's valid-frame mask is {tuple(mask.shape)} but the tensor is "
            f"{tuple(h.shape)} (tokens on axis {axis}); the module must run on the frames"
        )
    shape = [1] * h.dim()
    shape[0], shape[axis] = mask.shape
    return h * mask.view(shape).to(device=h.device, dtype=h.dtype)
