"""Activation checkpointing of a backbone's transformer blocks, every family alike.

With it on, a block keeps only its input during the forward pass and recomputes its internals
when the backward pass needs them, so a long input (AudioSet-length AST, MusicFM on 30-s clips)
trains in less memory at the cost of one more forward pass of each block. It changes memory and
time, never results: the recomputation replays the block exactly (see below), so the loss and
every gradient equal those of a plain step. ``TrainConfig.activation_checkpointing`` (a run
parameter) turns it on for :func:`~petl_kit.training.train.fit`; :func:`activation_checkpointing`
is the same switch for a loop of one's own.

One mechanism for all families: the blocks come from the anatomy
(:func:`~petl_kit.backbones.anatomy.layers`), not from each Hugging Face model's
``gradient_checkpointing_enable`` (MusicFM is the kit's own model, and the kit's switch must not
depend on which HF classes support it). Each block gets a ``forward`` of its own, a bound method
that calls its class's forward through :func:`torch.utils.checkpoint.checkpoint`
(``use_reentrant=False``; ``copy.deepcopy`` rebinds it to the copy), so

* the block's parameters, state-dict keys and hooks are unchanged: hooks on the block (deep
  prompts' forward pre-hooks, ``encode_layers``' forward hooks) run once, outside the
  recomputation, while everything a method injected inside the block (LoRA, adapters, prefix
  attention, mixtures, the music adapter's capture hooks) is recomputed with it;
* dropout draws the same masks when recomputed (the RNG state is saved and restored), and
  autocast (``precision``) is re-entered as it was;
* context variables are replayed: the forward runs in a copy of the caller's
  :mod:`contextvars` context, and the recomputation, which happens during ``backward()``, long
  after :func:`~petl_kit.methods.padding.valid_frames` exited, runs in that same copy, so
  Soft-MoA still sees the batch's valid frames;
* observers can tell a recomputation from a forward pass (:func:`recomputing`): a routing
  recorder keeps one record per forward, not a second one from the backward pass;
* it acts only while autograd records: under ``torch.no_grad()`` (evaluation) a block runs its
  original forward. The block's own ``training`` flag cannot decide it, since a frozen backbone
  stays in eval mode while the modules a method put inside it train (corrected profile, R26).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbones import anatomy

_state = threading.local()  # the backward pass recomputes in its own thread (CUDA)


def recomputing() -> bool:
    """True while a checkpointed block is being recomputed for the backward pass."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def _recomputation():
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _contexts():
    """``checkpoint``'s ``context_fn``: nothing around the forward, a flag around the
    recomputation (:func:`recomputing`)."""
    return contextlib.nullcontext(), _recomputation()


def _checkpointed_forward(block: nn.Module, *args, **kwargs):
    """``block``'s own (class) forward, recomputed in backward while autograd records.

    Bound to the block as an instance attribute (a bound method, not a closure), so
    ``copy.deepcopy`` of a model (``share.export_hf``) rebinds it to the copied block."""
    forward = functools.partial(type(block).forward, block)
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    context = contextvars.copy_context()  # replayed in the recomputation (padding mask)
    return checkpoint(context.run, forward, *args, use_reentrant=False, context_fn=_contexts,
                      **kwargs)  # fmt: skip


def _block_checkpointed(block: nn.Module) -> bool:
    own = block.__dict__.get("forward")
    if own is None:
        return False
    if getattr(own, "__func__", None) is _checkpointed_forward:
        return True
    raise TypeError(
        f"activation checkpointing: block {type(block).__name__} has a forward of its own "
        f"({own!r}) that would be bypassed; remove it first"
    )


def _backbone(module: nn.Module) -> nn.Module:
    """The backbone of a :class:`~petl_kit.model.build.PetlModel`, or ``module`` itself."""
    return getattr(module, "backbone", module)


def is_checkpointed(module: nn.Module) -> bool:
    """True when every transformer block of ``module`` (a PetlModel or a backbone) is
    checkpointed."""
    return all(_block_checkpointed(block) for block in anatomy.layers(_backbone(module)))


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> nn.Module:
    """Turn checkpointing of every transformer block of ``module`` (a PetlModel or a backbone)
    on or off, in place; idempotent. Returns ``module``."""
    if not isinstance(enabled, bool):
        raise TypeError(f"activation_checkpointing: expected True or False, got {enabled!r}")
    for block in anatomy.layers(_backbone(module)):
        wrapped = _block_checkpointed(block)
        if enabled and not wrapped:
            # the instance attribute shadows the class's forward; nn.Module.__call__ finds it
            block.forward = types.MethodType(_checkpointed_forward, block)
        elif not enabled and wrapped:
            del block.forward
    return module


@contextlib.contextmanager
def activation_checkpointing(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Checkpoint ``module``'s transformer blocks (``enabled``) for the duration of the block,
    then restore what was there before.

    >>> with activation_checkpointing(model):
    ...     loss_fn(model(x), y).backward()      # same loss and gradients, less memory
    """
    before = is_checkpointed(module)
    set_activation_checkpointing(module, enabled)
    try:
        yield module
    finally:
        set_activation_checkpointing(module, before)
