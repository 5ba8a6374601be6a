"""Key and tempo tasks of the music PETL paper: class layouts, the tempo target and loss, the
tempo read-out, and their metrics (spec ``datasets_and_protocols.md`` §7.3, §7.4, §8.4, §8.5).

Key (GiantSteps): 24 classes, index = pitch_class + 12·mode, pitch classes C=0 … B=11, mode 0 =
major (0–11), 1 = minor (12–23). Scored with the MIREX weighted score of ``mir_eval.key``; the
music reference also gives a fifth *below* 0.5 (quirk M15), offered as ``fifths="symmetric"``.

Tempo (GTZAN): 300 BPM bins 0..299; a clip's label is its integer BPM. Training targets widen the
label: y[l] = 1, y[l±1] = y[l±2] = 0.5. Estimates come from the read-out of §7.4 and are scored
with Acc1 (±4 %) and Acc2 (also ×2, ×3, ×½, ×⅓).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.music.labels import KEY_CLASSES, PITCH_CLASSES, TEMPO_BINS, TEMPO_CLASSES, key_index

__all__ = [
    "KEY_CLASSES",
    "PITCH_CLASSES",
    "TEMPO_BINS",
    "TEMPO_CLASSES",
    "TEMPO_LOSSES",
    "TempoLoss",
    "key_index",
    "key_scores",
    "tempo_accuracy",
    "tempo_readout",
    "tempo_target",
]

TEMPO_LOSSES = ("softmax_ce", "bce")
FIFTHS = ("ascending", "symmetric")
TEMPO_TOLERANCE = 0.04
OCTAVE_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def _check_keys(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    bad = labels[(labels < 0) | (labels >= len(KEY_CLASSES))]
    if bad.size:
        raise ValueError(f"{what} key index {int(bad[0])} is outside 0..23 (pc + 12·mode)")
    return labels


def key_scores(reference, estimate, fifths: str = "ascending") -> np.ndarray:
    """Per-item MIREX weighted key score ``[N]``.

    Args:
        reference, estimate: ``[N]`` key indices (pitch_class + 12·mode).
        fifths: ``'ascending'`` (mir_eval / MIREX: only the fifth above scores 0.5) or
            ``'symmetric'`` (music reference, M15: the fifth below also scores 0.5).

    Scores: same key 1.0, fifth 0.5, relative major/minor 0.3, parallel 0.2, other 0.
    """
    if fifths not in FIFTHS:
        raise ValueError(f"fifths={fifths!r} is not valid; valid: {list(FIFTHS)}")
    ref, est = _check_keys(reference, "reference"), _check_keys(estimate, "estimated")
    if ref.shape != est.shape:
        raise ValueError(f"key_scores: {len(ref)} reference keys but {len(est)} estimates")
    # mir_eval scores a pair of key strings; 24 × 24 pairs cover every case, so tabulate once
    table = _score_table(fifths)
    return table[ref, est]


_TABLES: dict[str, np.ndarray] = {}


def _score_table(fifths: str) -> np.ndarray:
    if fifths not in _TABLES:
        import mir_eval  # lazy: its import (~1 s) is paid only by key scoring

        table = np.array(
            [[mir_eval.key.weighted_score(r, e) for e in KEY_CLASSES] for r in KEY_CLASSES]
        )
        if fifths == "symmetric":
            for r in range(24):
                for e in range(24):  # same mode, estimate a fifth below (Δ = 5 semitones)
                    if r // 12 == e // 12 and (e - r) % 12 == 5:
                        table[r, e] = 0.5
        _TABLES[fifths] = table
    return _TABLES[fifths]


# ---------------------------------------------------------------------------- tempo
def tempo_target(labels: torch.Tensor, num_bins: int = TEMPO_BINS, width: int = 2,
                 value: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Widened tempo target ``[B, num_bins]`` float: 1 at each label's bin, ``value`` at the
    ``width`` bins either side (dropped where they fall outside 0..num_bins-1).

    Args:
        labels: ``[B]`` integer BPM.
    """
    labels = labels.long().reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_bins):
        bad = labels[(labels < 0) | (labels >= num_bins)][0].item()
        raise ValueError(f"tempo label {bad} BPM is outside the bins 0..{num_bins - 1}")
    target = torch.zeros(len(labels), num_bins, device=labels.device)
    rows = torch.arange(len(labels), device=labels.device)
    for offset in range(-width, width + 1):
        bins = labels + offset
        keep = (bins >= 0) & (bins < num_bins)
        target[rows[keep], bins[keep]] = 1.0 if offset == 0 else value
    return target


class TempoLoss(nn.Module):
    """Loss of tempo logits ``[B, 300]`` against integer BPM labels ``[B]``.

    ``'softmax_ce'`` (kit default): cross-entropy of the softmax against the widened target
    normalised to sum 1. ``'bce'``: BCE with logits against the unnormalised widened target, mean
    over all bins. The music reference has no tempo loss (M17); both are kit definitions.
    """

    def __init__(self, kind: str = "softmax_ce"):
        super().__init__()
        if kind not in TEMPO_LOSSES:
            raise ValueError(f"tempo_loss={kind!r} is not valid; valid: {list(TEMPO_LOSSES)}")
        self.kind = kind

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = tempo_target(labels, logits.shape[-1]).to(logits.dtype)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        target = target / target.sum(-1, keepdim=True)
        return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


def tempo_readout(probs, *, min_bpm: int = 10, step: float = 0.001, chunk: int = 32) -> np.ndarray:
    """BPM estimates ``[N]`` from per-bin tempo probabilities ``[N, 300]`` (§7.4 read-out).

    1. drop bins below ``min_bpm``; 2. smooth with an 11-point Hamming window (same length);
    3. quadratic interpolation sampled every ``step`` BPM on [min_bpm, 299); 4. local maxima
    (wrap mode); 5. the BPM of the highest one. With no local maximum (a flat curve) the argmax
    of the interpolated curve is taken, where the reference would raise.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] <= min_bpm + 2:
        raise ValueError(
            f"tempo_readout: probs must be [N, bins > {min_bpm + 2}], got {probs.shape}"
        )
    from scipy.interpolate import BSpline, make_interp_spline  # here: import petl_kit stays light
    from scipy.ndimage import convolve1d

    bpm = np.arange(min_bpm, probs.shape[1], dtype=np.float64)
    smooth = convolve1d(probs[:, min_bpm:], np.hamming(11), axis=1, mode="constant")
    fine = np.arange(min_bpm, probs.shape[1] - 1, step)
    spline = make_interp_spline(bpm, smooth.T, k=2, axis=0)  # coefficients [n_coef, N]
    # B-spline basis at the fine grid (3 non-zeros a row): curves = basis @ coefficients, the
    # same values as spline(fine) at a fraction of the cost
    basis = BSpline.design_matrix(fine, spline.t, 2)
    out = np.empty(len(probs))
    for start in range(0, len(probs), chunk):  # [chunk, len(fine)] float64 stays ~75 MB
        curves = np.asarray((basis @ spline.c[:, start : start + chunk]).T)
        # local maxima in wrap mode (scipy.signal.argrelmax(mode="wrap")): above both neighbours
        peak = (curves > np.roll(curves, 1, axis=1)) & (curves > np.roll(curves, -1, axis=1))
        best = np.where(peak, curves, -np.inf).argmax(1)
        flat = ~peak.any(1)
        best[flat] = curves[flat].argmax(1)
        out[start : start + len(curves)] = fine[best]
    return out


def tempo_accuracy(estimate, reference, tolerance: float = TEMPO_TOLERANCE) -> dict[str, float]:
    """``{'acc1', 'acc2'}`` of BPM estimates ``[N]`` against reference BPM ``[N]``.

    Acc1: |1 − est/ref| ≤ tolerance. Acc2: est within tolerance of ref · {1, 2, ½, 3, ⅓}.
    """
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if est.shape != ref.shape:
        raise ValueError(f"tempo_accuracy: {len(est)} estimates but {len(ref)} references")
    if (ref <= 0).any():
        raise ValueError(f"tempo_accuracy: reference tempi must be > 0 BPM, got {ref[ref <= 0]}")
    if not len(ref):
        return {"acc1": float("nan"), "acc2": float("nan")}
    within = [np.abs(1.0 - est / (ref * f)) <= tolerance + 1e-12 for f in OCTAVE_FACTORS]
    return {"acc1": float(within[0].mean()), "acc2": float(np.any(within, axis=0).mean())}
