"""How far trained tensors moved (full fine-tuning, BitFit, anything that trains backbone
tensors) and the spectra of LoRA's low-rank updates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .common import where


def weight_change(model, initial, *, only: str | None = None) -> pd.DataFrame:
    """Relative change ``‖w − w0‖ / ‖w0‖`` of every trainable tensor.

    Args:
        model: the trained model; initial: the same model before training (e.g.
            ``RunResult.initial_model()``).
        only: keep tensors whose name ends with this (``'bias'`` for BitFit).

    Returns:
        DataFrame ``name, layer, module, kind ('weight' | 'bias' | ...), numel, rel_change,
        abs_change`` (``abs_change`` = ‖w − w0‖ / sqrt(numel), RMS of the update).
    """
    before = dict(initial.named_parameters())
    rows = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name not in before or (only and not name.endswith(only)):
            continue
        w, w0 = p.detach().float().cpu(), before[name].detach().float().cpu()
        delta = (w - w0).norm().item()
        layer, module = where(name)
        rows.append({
            "name": name, "layer": layer, "module": module, "kind": name.rsplit(".", 1)[-1],
            "numel": p.numel(), "rel_change": delta / max(w0.norm().item(), 1e-12),
            "abs_change": delta / p.numel() ** 0.5,
        })  # fmt: skip
    return pd.DataFrame(rows)


def by_layer(changes: pd.DataFrame, value: str = "rel_change") -> pd.DataFrame:
    """``layer × module`` pivot of :func:`weight_change` (numbered layers in order, then others)."""
    table = changes.pivot_table(index="layer", columns="module", values=value, aggfunc="mean")
    order = sorted(
        table.index, key=lambda x: (not str(x).isdigit(), int(x) if str(x).isdigit() else 0, str(x))
    )
    return table.loc[order]


# ---------------------------------------------------------------------------- LoRA
def lora_spectra(model) -> pd.DataFrame:
    """Singular values of every LoRA update ``ΔW = s · B A`` (``[d_out, d_in]``, rank ≤ r).

    Returns:
        DataFrame ``layer (int), target ('q' | 'k' | 'v' | 'o'), k (1..r), sigma, energy``
        (``energy`` = σ_k² / Σσ², the share of ‖ΔW‖²_F in direction k), one row per singular
        value, layers in order.
    """
    from ...methods.lora import LoRALinear, _canonical_target

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LoRALinear):
            continue
        layer, _ = where(name + ".weight")
        delta = module.scaling * module.petl_lora.delta_weight().detach().float().cpu()
        sigma = torch.linalg.svdvals(delta)[: module.petl_lora.A.out_features]  # rank ≤ r
        energy = sigma**2 / (sigma**2).sum().clamp_min(1e-30)
        target = _canonical_target(name.rsplit(".", 1)[-1])
        for k, (s, e) in enumerate(zip(sigma.tolist(), energy.tolist(), strict=True), start=1):
            rows.append({"layer": int(layer), "target": target, "k": k, "sigma": s, "energy": e})
    if not rows:
        raise ValueError("lora_spectra: the model has no LoRALinear module (method 'lora')")
    return pd.DataFrame(rows).sort_values(["layer", "target", "k"], ignore_index=True)


def effective_rank(spectra: pd.DataFrame, energy: float = 0.9) -> pd.DataFrame:
    """Per ``layer × target`` of :func:`lora_spectra`: how many directions ΔW really uses.

    Columns: ``erank`` = exp(entropy of σ_k / Σσ) (Roy & Vetterli 2007; 1 for a rank-1 update,
    r when all r singular values are equal), ``rank_<energy>`` = the fewest directions holding
    that share of ‖ΔW‖²_F, ``norm`` = ‖ΔW‖_F.
    """

    def one(group: pd.DataFrame) -> pd.Series:
        s = group["sigma"].to_numpy()
        p = s / max(s.sum(), 1e-30)
        p = p[p > 0]
        cum = np.cumsum(np.sort(group["energy"].to_numpy())[::-1])
        return pd.Series({
            "erank": float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0,
            f"rank_{energy:g}": int(np.searchsorted(cum, energy - 1e-9) + 1) if s.any() else 0,
            "norm": float(np.sqrt((s**2).sum())),
        })  # fmt: skip

    out = spectra.groupby(["layer", "target"])[["sigma", "energy"]].apply(one).reset_index()
    return out.astype({f"rank_{energy:g}": int})
