"""Attention read through hooks: how much attention the sequence gives to prompt tokens (prompt
tuning) and prefix keys (prefix tuning)."""

from __future__ import annotations

import pandas as pd
import torch

from .common import batches


@torch.no_grad()
def attention_probs(model, input_values: torch.Tensor) -> list[torch.Tensor]:
    """The attention probabilities of every block for one batch, read through hooks.

    Forward hooks on each block's query and key projections (found by
    :func:`petl_kit.anatomy.projections`, so LoRA-wrapped projections count with their update)
    capture ``Q, K [B, T, H·d]``; the probabilities are ``softmax(Q Kᵀ / √d)`` per head, with
    the block's prefix keys ``petl_prefix_k`` (prefix tuning) prepended to ``K`` as the prefix
    attention function does. Prompt tokens are in ``Q`` and ``K`` already. Any attention
    implementation works (no eager forward needed); no padding mask is applied (AST batches have
    none).

    Args:
        input_values: ``[B, L, n_mels]`` (AST).

    Returns:
        one ``[B, H, T, P + T]`` tensor per block (P = the block's prefix length, 0 without one).
    """
    from ...backbones import anatomy

    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    heads = backbone.config.num_attention_heads
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    blocks = anatomy.layers(backbone)
    for i, layer in enumerate(blocks):
        for which, proj in anatomy.projections(layer, anat).items():
            if which in ("q", "k"):
                handles.append(proj.register_forward_hook(
                    lambda m, a, out, key=(i, which): captured.__setitem__(key, out.detach())
                ))  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        model(input_values.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    probs = []
    for i, layer in enumerate(blocks):
        q, k = captured[(i, "q")], captured[(i, "k")]  # [B, T, H·d]
        b, t, hd = q.shape
        d = hd // heads
        prefix = getattr(anatomy.sublayer(layer, anatomy.ATTENTION, anat), "petl_prefix_k", None)
        if prefix is not None and prefix.shape[0]:
            k = torch.cat([prefix.detach().to(k.dtype).expand(b, -1, -1), k], dim=1)
        q = q.view(b, t, heads, d).transpose(1, 2)  # [B, H, T, d]
        k = k.view(b, k.shape[1], heads, d).transpose(1, 2)  # [B, H, P + T, d]
        scores = (q.float() @ k.float().transpose(-1, -2)) * d**-0.5
        probs.append(scores.softmax(-1).cpu())  # [B, H, T, P + T]
    return probs


def attention_mass(
    model, loader, *, on: str = "prompts", max_batches: int | None = 2
) -> pd.DataFrame:
    """Share of attention the sequence's own tokens give to the method's tokens, per block and
    head (:func:`attention_probs`).

    Args:
        on: ``'prompts'`` — keys whose role is PROMPT (prompt tuning: the N prompts of each
            block); ``'prefix'`` — the P/2 prefix keys of prefix tuning.
        max_batches: batches of ``loader`` to average over (None: all).

    Returns:
        DataFrame ``layer, head, mass, uniform``: ``mass`` = attention probability on those keys,
        summed over them and averaged over the queries that are not prompts (CLS, DIST, patches)
        and over clips; ``uniform`` = the mass if every key were attended to equally
        (keys on / all keys), the no-preference level.
    """
    from ...backbones.anatomy import PROMPT

    if on not in ("prompts", "prefix"):
        raise ValueError(f"attention_mass: on={on!r}; valid: 'prompts', 'prefix'")
    totals, uniform, clips = None, [], 0
    for batch in batches(loader, max_batches):
        probs = attention_probs(model, batch["input_values"])  # per block [B, H, T, P + T]
        masses, uniform = [], []
        for p in probs:
            t, n_keys = p.shape[2], p.shape[3]
            roles = model.role_layout(t)
            queries = roles != PROMPT  # [T]
            keys = torch.zeros(n_keys, dtype=torch.bool)  # [P + T]
            if on == "prefix":
                keys[: n_keys - t] = True
            else:
                keys[n_keys - t :] = roles == PROMPT
            if not keys.any():
                raise ValueError(f"attention_mass: block has no {on} keys (method?)")
            masses.append(p[:, :, queries][..., keys].sum(-1).mean(2).sum(0))  # [H]
            uniform.append(float(keys.sum()) / n_keys)
        step = torch.stack(masses)  # [blocks, H], summed over the batch's clips
        totals = step if totals is None else totals + step
        clips += probs[0].shape[0]
    if totals is None:
        raise ValueError("attention_mass: the loader yielded no batch")
    mean = (totals / clips).numpy()
    return pd.DataFrame([
        {"layer": i, "head": h, "mass": float(mean[i, h]), "uniform": uniform[i]}
        for i in range(mean.shape[0]) for h in range(mean.shape[1])
    ])  # fmt: skip
