"""Building music manifests (``music`` module) from any audio folder and a label table.

The music paper's tagging manifests were never published; :func:`write_music_manifest` rebuilds
such a manifest from a dataset's official split and tag files turned into a ``path,split,label``
table, resamples the audio to 24 kHz mono with the kit's ``load_audio`` on the way, and records
the tag order it used. From a shell::

    python -m petl_kit.data.music_build labels.csv audio/ data/metadata/mtat.json \\
        --task multilabel --output-audio-dir data/MagnaTagATune

``music_augment`` then adds the paper's pitch-shifted (key) or time-stretched (tempo) training
copies to such a manifest (``python -m petl_kit.data.music_augment MANIFEST AUDIO_ROOT --task
key|tempo``).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import audio_info, load_audio
from ..base import DatasetError
from ..folders import SPLIT_ALIASES
from .manifests import MUSIC_TASKS, SAMPLE_RATE, _check_file, _label, _tags_file

__all__ = ["write_music_manifest"]


def _key_of(value, where: str) -> int:
    """Key index of an int or a name such as 'A minor', 'Eb major', 'C# minor'."""
    if isinstance(value, (int, np.integer)) or str(value).strip().lstrip("-").isdigit():
        return _label("key", int(value), where, None)
    from mir_eval.key import KEY_TO_SEMITONE

    parts = str(value).lower().split()
    tonics = set(KEY_TO_SEMITONE) - {"x"}  # 'x' is mir_eval's "no key"
    if len(parts) != 2 or parts[0] not in tonics or parts[1] not in ("major", "minor"):
        raise DatasetError(f"{where}: key {value!r} is not '<tonic> major|minor' or an index 0-23")
    return KEY_TO_SEMITONE[parts[0]] % 12 + 12 * (parts[1] == "minor")


def _read_table(table) -> list[dict]:
    if isinstance(table, (str, Path)):
        with Path(table).open(newline="", encoding="utf-8-sig") as fh:
            return [
                {k.strip(): (v or "").strip() for k, v in r.items() if k}
                for r in csv.DictReader(fh)
            ]
    return [dict(r) for r in table]


def write_music_manifest(
    table: str | Path | Iterable[dict],
    audio_dir: str | Path,
    out: str | Path,
    *,
    task: str,
    output_audio_dir: str | Path | None = None,
    tags: list[str] | None = None,
    subtype: str = "PCM_16",
) -> Path:
    """Write a music manifest (module docstring) from a label table, resampling to 24 kHz mono.

    Args:
        table: CSV file or rows with ``path`` (relative to ``audio_dir``), ``split`` (train /
            val|valid / test) and ``label``: tagging ``;``-separated tag names; key an index or a
            name ('A minor', 'Eb major'); tempo a BPM (rounded to an integer).
        out: the manifest to write (folders are created).
        task: ``'multilabel'`` | ``'key'`` | ``'tempo'``.
        output_audio_dir: 24-kHz mono WAVs go here under the same relative paths (``.wav``),
            each file mixed down and resampled with the kit's ``load_audio``; None: the sources
            are used in place and must already be 24 kHz mono.
        tags: tag order; None: the table's tags by decreasing count (ties by name). Written one
            a line to ``<out stem>_tags.txt``, which :func:`load_music_manifest` reads back.
        subtype: soundfile WAV subtype of written audio ('PCM_16'; values clipped to [-1, 1]).

    The rows' ``audio_path`` are relative to ``output_audio_dir`` (or ``audio_dir``): point
    ``audio_root`` there when loading. Returns ``out``.
    """
    if task not in MUSIC_TASKS:
        raise ValueError(f"task={task!r} is not a music task; valid: {list(MUSIC_TASKS)}")
    audio_dir, out = Path(audio_dir), Path(out)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder {audio_dir} does not exist")
    rows = _read_table(table)
    if not rows:
        raise DatasetError(f"label table {table} has no rows")
    missing = [c for c in ("path", "split", "label") if c not in rows[0]]
    if missing:
        raise DatasetError(f"label table {table} lacks column(s) {missing}; need path,split,label")
    if task == "multilabel":
        names = [[t.strip() for t in str(r["label"]).split(";") if t.strip()] for r in rows]
        if tags is None:
            counts: dict[str, int] = {}
            for tag in (t for ts in names for t in ts):
                counts[tag] = counts.get(tag, 0) + 1
            tags = sorted(counts, key=lambda t: (-counts[t], t))
        unknown = sorted({t for ts in names for t in ts} - set(tags))
        if unknown:
            raise DatasetError(f"label table {table}: tags {unknown} are not in the tag order")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, r in enumerate(rows, start=1):
        where = f"label table {table} row {n}"
        split = SPLIT_ALIASES.get(str(r["split"]).lower())
        if split is None:
            raise DatasetError(
                f"{where}: unknown split {r['split']!r}; valid: {list(SPLIT_ALIASES)}"
            )
        source = audio_dir / r["path"]
        if not source.is_file():
            raise FileNotFoundError(f"{where}: audio file {source} does not exist")
        if task == "multilabel":
            label = [int(t in names[n - 1]) for t in tags]
        elif task == "key":
            label = _key_of(r["label"], where)
        else:
            label = _label("tempo", int(np.floor(float(r["label"]) + 0.5)), where, None)
        if output_audio_dir is None:
            _check_file(source, where)
            rel, length = Path(r["path"]), audio_info(source).frames
        else:
            rel = Path(r["path"]).with_suffix(".wav")
            wave = load_audio(source, SAMPLE_RATE).numpy()
            target = Path(output_audio_dir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target), np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype=subtype)
            length = len(wave)
        row = {"key": rel.with_suffix("").as_posix(), "split": split, "audio_path": rel.as_posix(),
               "sr": SAMPLE_RATE, "length": int(length), "label": label}  # fmt: skip
        lines.append(json.dumps(row))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if task == "multilabel":
        _tags_file(out).write_text("\n".join(tags) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> Path:
    """Command line of :func:`write_music_manifest`."""
    parser = argparse.ArgumentParser(
        prog="python -m petl_kit.data.music_build", description=write_music_manifest.__doc__
    )
    parser.add_argument("table", help="CSV with path,split,label columns")
    parser.add_argument("audio_dir", help="folder the table's paths are relative to")
    parser.add_argument("out", help="manifest to write (.json, JSON Lines)")
    parser.add_argument("--task", required=True, choices=MUSIC_TASKS)
    parser.add_argument("--output-audio-dir", help="write 24-kHz mono WAVs here")
    parser.add_argument("--tags-file", help="tag order, one a line (tagging)")
    args = parser.parse_args(argv)
    tags = None
    if args.tags_file:
        tags = [t.strip() for t in Path(args.tags_file).read_text().splitlines() if t.strip()]
    out = write_music_manifest(args.table, args.audio_dir, args.out, task=args.task,
                               output_audio_dir=args.output_audio_dir, tags=tags)  # fmt: skip
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
