"""Pooling: which tokens of the backbone's output sequence the head sees, by token role.

A token's role (:mod:`petl_kit.backbones.anatomy` ``CLS``, ``DIST``, ``PROMPT``, ``PATCH``) comes
from the model's ``role_layout``: the family record's special tokens, then patches or frames;
prompt methods insert ``PROMPT`` tokens.
"""

from __future__ import annotations

import torch

from ..backbones.anatomy import CLS, DIST, PATCH, PROMPT
from ..backbones.registry import Family
from ..config import ConfigError

# pooling name -> the roles it averages over
POOLINGS = {
    "ALL": (CLS, DIST, PROMPT, PATCH),
    "CLS": (CLS,),
    "CLS_DIST": (CLS, DIST),
    "PROMPTS": (PROMPT,),
    "SPEECH": (PATCH,),
    "PROMPTS+SPEECH": (PROMPT, PATCH),
}
# poolings that read only special tokens, so the family must have every one of them
SPECIAL_ONLY = ("CLS", "CLS_DIST")


def canonical_pooling(pooling: str, family: Family) -> str:
    """The :data:`POOLINGS` key of ``pooling`` (case and ``-`` ignored), refused where
    ``family`` lacks the special tokens it reads."""
    pool = pooling.upper().replace("-", "_") if pooling else pooling
    pool = "PROMPTS+SPEECH" if pool in ("PROMPTS+SPEECH", "PROMPTS_SPEECH") else pool
    if pool not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if pool in SPECIAL_ONLY and not set(POOLINGS[pool]) <= set(family.special_tokens):
        raise ConfigError(f"pooling {pooling!r} needs CLS/DIST tokens; {family.name} has none")
    return pool


def pool_roles(
    hidden: torch.Tensor, roles: torch.Tensor, pooling: str, frames: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the tokens whose role is in ``POOLINGS[pooling]``: ``[B, T, D] -> [B, D]``.

    Args:
        hidden: ``[B, T, D]``.
        roles: ``[T]`` the role of each token.
        frames: ``[B, T_patch]`` bool, valid patch/frame tokens (padded frames of frame models
            drop out of the mean), or None.
    """
    roles = roles.to(hidden.device)
    keep = torch.isin(roles, torch.tensor(POOLINGS[pooling], device=hidden.device))
    weights = keep[None, :].expand(hidden.shape[0], -1).clone()
    if frames is not None:
        weights[:, roles == PATCH] &= frames
    weights = weights.to(hidden.dtype)
    return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
