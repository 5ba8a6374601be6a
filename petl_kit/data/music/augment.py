"""The music paper's training-set augmentations (spec ``datasets_and_protocols.md`` §7.3, §7.4)
as a manifest builder step: augmented 24-kHz WAVs beside the originals, and their manifest rows.

- key (GiantSteps): train only; pitch shift by s ∈ {−4 … −1, +1 … +4} semitones (phase-vocoder
  stretch, then resampling: :func:`pitch_shift`), copy ``<id>.<s>.wav`` of the same length,
  label rotated as 12·mode + ((pc + s) mod 12).
- tempo (GTZAN): train and val; time stretch by f ∈ {0.95, 0.975, 1.025, 1.05} keeping the
  pitch (STFT phase vocoder), copy ``<id>.<f>.wav`` of round(n / f) samples, label round(bpm·f)
  (Python's ``round``: halves to even).

From a shell::

    python -m petl_kit.data.music_augment data/metadata/giantsteps_key.json data/ --task key
"""

from __future__ import annotations

import argparse
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..base import DatasetError
from ..folders import SPLIT_ALIASES
from .manifests import SAMPLE_RATE, _augmentation, _check_file, _label

__all__ = ["AUGMENT_DEFAULTS", "augment_manifest"]

# task -> (splits, shifts in semitones or stretch factors), spec §7.3 / §7.4
AUGMENT_DEFAULTS = {
    "key": (("train",), (-4, -3, -2, -1, 1, 2, 3, 4)),
    "tempo": (("train", "val"), (0.95, 0.975, 1.025, 1.05)),
}
N_FFT, HOP = 2048, 512  # phase-vocoder STFT (85 ms window at 24 kHz; kit choice)


def pitch_shift(wave: torch.Tensor, semitones: int) -> torch.Tensor:
    """``[time]`` shifted by ``semitones``, same length: stretched by r ≈ 2^(s/12), then resampled
    by 1/r. r is a fraction with a denominator ≤ 1000 (pitch error < 0.03 cent), which keeps the
    polyphase resampler small (``torchaudio.functional.pitch_shift`` resamples between
    ``int(sr / rate)`` and ``sr`` Hz, often coprime: about 2 s of CPU per second of audio)."""
    r = Fraction(2 ** (semitones / 12)).limit_denominator(1000)
    stretched = time_stretch(wave, r.denominator / r.numerator)
    shifted = torchaudio.functional.resample(stretched, r.numerator, r.denominator)
    return torch.nn.functional.pad(shifted, (0, max(0, len(wave) - len(shifted))))[: len(wave)]


def time_stretch(wave: torch.Tensor, factor: float) -> torch.Tensor:
    """``[time]`` played ``factor`` times as fast at the same pitch: ``round(time / factor)``."""
    spec = torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=HOP, power=None)(wave)
    stretch = torchaudio.transforms.TimeStretch(HOP, N_FFT // 2 + 1, fixed_rate=factor)
    inverse = torchaudio.transforms.InverseSpectrogram(n_fft=N_FFT, hop_length=HOP)
    return inverse(stretch(spec), length=round(len(wave) / factor))


def _variants(task: str, values) -> list[tuple[str, float]]:
    """``[(file-name suffix, value)]``; errors name the bad value."""
    out = []
    for v in values:
        if task == "key":
            if isinstance(v, bool) or not float(v).is_integer():
                raise ValueError(f"pitch shift {v!r} is not a whole number of semitones")
            if int(v) == 0:
                raise ValueError("pitch shift 0 would copy the original; drop it from shifts")
            out.append((str(int(v)), int(v)))
        else:
            if isinstance(v, bool) or not float(v) > 0:
                raise ValueError(f"time-stretch factor {v!r} must be a positive number")
            if float(v) == 1:
                raise ValueError("time-stretch factor 1 would copy the original; drop it")
            out.append((repr(float(v)), float(v)))
    if len({s for s, _ in out}) != len(out):
        raise ValueError(f"repeated {'shifts' if task == 'key' else 'factors'}: {list(values)}")
    return out


def _read_rows(manifest: Path) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{manifest} line {n} is not a JSON object: {err}") from err
            if not isinstance(row, dict) or not {"split", "audio_path", "label"} <= set(row):
                raise DatasetError(f"{manifest} line {n} lacks split, audio_path or label")
            rows.append((n, row))
    if not rows:
        raise DatasetError(f"music manifest {manifest} has no rows")
    return rows


def augment_manifest(
    manifest: str | Path,
    audio_root: str | Path,
    *,
    task: str,
    splits=None,
    shifts=None,
    factors=None,
    out: str | Path | None = None,
    overwrite: bool = False,
    subtype: str = "PCM_16",
) -> Path:
    """Add the pitch-shifted (key) or time-stretched (tempo) copies of a music manifest's rows.

    Args:
        manifest: JSON-Lines manifest of originals (``music`` module docstring).
        audio_root: folder its ``audio_path`` are relative to; copies are written beside them.
        task: ``'key'`` | ``'tempo'``.
        splits: splits to augment (default: key ``('train',)``, tempo ``('train', 'val')``).
        shifts: semitones (key; default ±1 … ±4). factors: stretch factors (tempo; default
            0.95, 0.975, 1.025, 1.05).
        out: manifest to write; None: ``<stem>_augmented.json`` beside ``manifest`` (the input
            itself when its stem already ends in ``_augmented``). An existing ``out`` is refused
            unless it is the input and ``overwrite=True``.
        overwrite: replace the input manifest and augmented WAVs that already exist.
        subtype: soundfile subtype of the copies ('PCM_16'; values clipped to [-1, 1]).

    Every row is checked (no augmented rows yet, audio present, 24 kHz mono, labels in range)
    before any file is written. Returns ``out``; each original is followed by its copies.
    """
    if task not in AUGMENT_DEFAULTS:
        raise ValueError(f"task={task!r} has no augmentation; valid: {list(AUGMENT_DEFAULTS)}")
    default_splits, default_values = AUGMENT_DEFAULTS[task]
    given = shifts if task == "key" else factors
    if (factors if task == "key" else shifts) is not None:
        raise ValueError(f"task={task!r} takes {'shifts' if task == 'key' else 'factors'}")
    variants = _variants(task, default_values if given is None else given)
    wanted = set()
    for s in default_splits if splits is None else splits:
        if str(s).lower() not in SPLIT_ALIASES:
            raise ValueError(f"unknown split {s!r}; valid: {list(SPLIT_ALIASES)}")
        wanted.add(SPLIT_ALIASES[str(s).lower()])
    manifest, audio_root = Path(manifest), Path(audio_root)
    if not manifest.is_file():
        raise FileNotFoundError(f"music manifest {manifest} does not exist")
    if out is None:
        stem = manifest.stem
        out = manifest if stem.endswith("_augmented") else manifest.with_stem(stem + "_augmented")
    out = Path(out)
    if out.exists() and not (overwrite and out.resolve() == manifest.resolve()):
        hint = "pass overwrite=True" if out.resolve() == manifest.resolve() else "choose another"
        raise FileExistsError(f"manifest {out} already exists; {hint} to replace it")

    numbered = _read_rows(manifest)
    stems = {Path(r["audio_path"]).stem for _, r in numbered}
    plan: dict[int, list] = {}  # line -> [(new row, target path, shift or factor)]
    for n, row in numbered:
        aug = _augmentation(task, Path(row["audio_path"]).stem, stems)
        if aug is not None:
            where = f"{manifest} line {n} (key {row.get('key')!r})"
            raise DatasetError(
                f"{where} is already an augmented copy of {aug['original']!r}; augment originals"
            )
    for n, row in numbered:
        where = f"{manifest} line {n} (key {row.get('key')!r})"
        if SPLIT_ALIASES.get(str(row.get("split")).lower()) not in wanted:
            continue
        label, source = _label(task, row["label"], where, None), audio_root / row["audio_path"]
        _check_file(source, where)
        plan[n] = []
        for suffix, value in variants:
            if task == "key":
                new_label = 12 * (label // 12) + (label % 12 + value) % 12
            else:
                stretched_at = f"{where}, {label} BPM x {suffix}"
                new_label = _label(task, round(label * value), stretched_at, None)
            rel = Path(row["audio_path"])
            rel = rel.with_name(f"{rel.stem}.{suffix}.wav")
            target = audio_root / rel
            if target.exists() and not overwrite:
                raise FileExistsError(f"{where}: {target} already exists; pass overwrite=True")
            new = {**row, "key": f"{row.get('key', Path(row['audio_path']).stem)}.{suffix}",
                   "audio_path": rel.as_posix(), "sr": SAMPLE_RATE, "label": new_label}  # fmt: skip
            plan[n].append((new, target, value))

    lines = []
    with torch.no_grad():
        for n, row in numbered:
            lines.append(json.dumps(row))
            if n not in plan:
                continue
            data, _ = sf.read(str(audio_root / row["audio_path"]), dtype="float32")
            wave = torch.from_numpy(data)
            for new, target, value in plan[n]:
                copy = pitch_shift(wave, value) if task == "key" else time_stretch(wave, value)
                copy = np.clip(copy.numpy(), -1.0, 1.0)
                sf.write(str(target), copy, SAMPLE_RATE, subtype=subtype)
                lines.append(json.dumps({**new, "length": len(copy)}))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> Path:
    """Command line of :func:`augment_manifest`."""
    parser = argparse.ArgumentParser(
        prog="python -m petl_kit.data.music_augment", description=augment_manifest.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("manifest", help="JSON-Lines manifest of originals")
    parser.add_argument("audio_root", help="folder the manifest's audio_path are relative to")
    parser.add_argument("--task", required=True, choices=list(AUGMENT_DEFAULTS))
    parser.add_argument("--out", help="manifest to write (default <stem>_augmented.json)")
    parser.add_argument("--splits", nargs="+", help="splits to augment")
    parser.add_argument("--shifts", nargs="+", type=int, help="semitones (key)")
    parser.add_argument("--factors", nargs="+", type=float, help="stretch factors (tempo)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    out = augment_manifest(args.manifest, args.audio_root, task=args.task, splits=args.splits,
                           shifts=args.shifts, factors=args.factors, out=args.out,
                           overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
