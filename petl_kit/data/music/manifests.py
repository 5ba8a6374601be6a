"""Music sets of the music PETL paper: JSON-Lines manifests of 24-kHz mono audio (spec
``datasets_and_protocols.md`` §7), and the helper that builds such manifests.

Layout under ``data_path`` (the manifest may also sit in ``data_path`` itself)::

    metadata/mtat.json, mtat_clean.json    + MagnaTagATune/<audio_path>        tagging (50)
    metadata/mtg_top50.json                + mtg-jamendo-dataset/<audio_path>  tagging (50)
    metadata/mtg_{genre,instrument,moodtheme}.json  + mtg-jamendo-dataset/  tagging (95/41/59)
    metadata/giantsteps_key_augmented.json + <audio_path>                      key (24)
    metadata/gtzan_tempo_augmented.json    + <audio_path>                      tempo (BPM)
    metadata/giantsteps_tempo.json         + <audio_path>                      tempo (BPM)
    metadata/<manifest stem>_tags.txt      tag names in label order (optional, one a line)

One JSON object a line: ``{"key", "split": "train" | "val" | "valid" | "test", "audio_path",
"sr": 24000, "length", "label"}``; labels: tagging a 0/1 or −1/1 list (positive iff 1), key an
int 0–23 (pitch_class + 12·mode), tempo an int BPM. Augmented rows stay as the manifests have
them: ``<id>.<s>.wav`` pitch-shifted by s semitones (key, train) and ``<id>.<f>.wav``
time-stretched by f (tempo, train and val); ``augmented=False`` keeps the originals only.

No audio is decoded or resampled at load time (the reference reads it as stored); headers are
checked: a file that is not 24 kHz mono is an error naming it. ``music_build`` builds manifests
from any folder and label table (the tagging manifests were never published).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ..audio import audio_info
from ..base import Clip, DatasetError, DatasetSplits
from ..checks import check_columns
from ..folders import SPLIT_ALIASES
from .labels import KEY_CLASSES, TEMPO_BINS, TEMPO_CLASSES

__all__ = ["MUSIC_SETS", "SAMPLE_RATE", "load_music_manifest", "music_sets"]

SAMPLE_RATE = 24000
_ROW_KEYS = ("split", "audio_path", "label")
MUSIC_TASKS = ("multilabel", "key", "tempo")
# name -> (task, manifest file name, audio root under data_path)
MUSIC_SETS = {
    "mtat": ("multilabel", "mtat.json", "MagnaTagATune"),
    "mtat_clean": ("multilabel", "mtat_clean.json", "MagnaTagATune"),
    "mtg_top50": ("multilabel", "mtg_top50.json", "mtg-jamendo-dataset"),
    "mtg_genre": ("multilabel", "mtg_genre.json", "mtg-jamendo-dataset"),  # 95 tags
    "mtg_instrument": ("multilabel", "mtg_instrument.json", "mtg-jamendo-dataset"),  # 41
    "mtg_moodtheme": ("multilabel", "mtg_moodtheme.json", "mtg-jamendo-dataset"),  # 59
    "giantsteps_key": ("key", "giantsteps_key_augmented.json", ""),
    "gtzan_tempo": ("tempo", "gtzan_tempo_augmented.json", ""),
    "giantsteps_tempo": ("tempo", "giantsteps_tempo.json", ""),
}


def _tags_file(manifest: Path) -> Path:
    return manifest.with_name(f"{manifest.stem}_tags.txt")


def _label(task: str, value, where: str, n_tags: int | None):
    """The clip label of one row: positive tag indices, a key index or a BPM."""
    if task == "multilabel":
        if not isinstance(value, list) or not value:
            raise DatasetError(f"{where}: tagging label must be a non-empty list, got {value!r}")
        if n_tags is not None and len(value) != n_tags:
            raise DatasetError(f"{where}: tagging label has {len(value)} values, expected {n_tags}")
        if any(v not in (-1, 0, 1) or isinstance(v, bool) for v in value):
            raise DatasetError(f"{where}: tagging label values must be 0/1 or -1/1, got {value}")
        return [i for i, v in enumerate(value) if v == 1]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    top = len(KEY_CLASSES) if task == "key" else TEMPO_BINS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
        what = "key index 0-23 (pitch_class + 12*mode)" if task == "key" else "integer BPM 0-299"
        raise DatasetError(f"{where}: {task} label must be a {what}, got {value!r}")
    return value


def _augmentation(task: str, stem: str, stems: set[str]) -> dict | None:
    """``{'original', 'semitones' | 'factor'}`` when ``stem`` is ``<original stem>.<number>``
    of another row (ids themselves contain dots: ``blues.00000``, ``10089.LOFI``)."""
    parts = stem.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        original, suffix = ".".join(parts[:cut]), ".".join(parts[cut:])
        if original in stems:
            try:
                number = float(suffix)
            except ValueError:
                return None
            if task == "key" and number.is_integer() and number != 0:
                return {"original": original, "semitones": int(number)}
            if task == "tempo" and number > 0:
                return {"original": original, "factor": number}
            return None
    return None


def load_music_manifest(
    manifest: str | Path,
    audio_root: str | Path,
    *,
    task: str,
    name: str | None = None,
    augmented: bool = True,
    check_audio: bool = True,
) -> DatasetSplits:
    """Read a music manifest (module docstring) into ``DatasetSplits``.

    Args:
        manifest: the ``.json`` (JSON Lines) file.
        audio_root: folder the rows' ``audio_path`` are relative to.
        task: ``'multilabel'`` (tagging) | ``'key'`` | ``'tempo'``.
        name: dataset name (default: the manifest's stem).
        augmented: keep the pitch-shifted / time-stretched rows (True) or the originals only.
        check_audio: read every file's header: it must exist and be 24 kHz mono (True).

    Classes: tagging the names of ``<stem>_tags.txt`` beside the manifest when present, else
    ``tag_0 …``; key ``music_tasks.KEY_CLASSES``; tempo the 300 BPM bins. ``Clip.meta`` holds
    ``key``, ``length``, ``row`` and, for augmented rows, ``original`` and ``semitones`` or
    ``factor``.
    """
    if task not in MUSIC_TASKS:
        raise ValueError(f"task={task!r} is not a music task; valid: {list(MUSIC_TASKS)}")
    manifest, audio_root = Path(manifest), Path(audio_root)
    if not manifest.is_file():
        raise FileNotFoundError(f"music manifest {manifest} does not exist")
    if not audio_root.is_dir():
        raise FileNotFoundError(f"audio root {audio_root} for manifest {manifest} is not a folder")
    rows = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{manifest} line {n} is not a JSON object: {err}") from err
        if isinstance(row, dict):  # a `Split` or `labels` key would be ignored silently
            check_columns(row, (*_ROW_KEYS, "sr", "key", "length"), f"{manifest} line {n}")
        missing = [k for k in _ROW_KEYS if k not in row]
        if not isinstance(row, dict) or missing:
            raise DatasetError(f"{manifest} line {n} lacks {missing or 'a JSON object'}")
        rows.append((n, row))
    if not rows:
        raise DatasetError(f"music manifest {manifest} has no rows")

    tags_file, n_tags = _tags_file(manifest), None
    if task == "multilabel":
        n_tags = len(rows[0][1]["label"]) if isinstance(rows[0][1]["label"], list) else None
        classes = [f"tag_{i}" for i in range(n_tags or 0)]
        if tags_file.is_file():
            classes = [t.strip() for t in tags_file.read_text().splitlines() if t.strip()]
            n_tags = len(classes)
    else:
        classes = list(KEY_CLASSES if task == "key" else TEMPO_CLASSES)

    stems = {Path(row["audio_path"]).stem for _, row in rows}
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    labels: dict[str, int] = {}
    pending_keys = []
    for n, row in rows:
        where = f"{manifest} line {n}"
        split = SPLIT_ALIASES.get(str(row["split"]).lower())
        if split is None:
            raise DatasetError(
                f"{where}: unknown split {row['split']!r}; valid: {list(SPLIT_ALIASES)}"
            )
        if row.get("sr", SAMPLE_RATE) != SAMPLE_RATE:
            raise DatasetError(f"{where}: sr is {row['sr']}, the music sets are {SAMPLE_RATE} Hz")
        label = _label(task, row["label"], where, n_tags)
        path = audio_root / row["audio_path"]
        stem = Path(row["audio_path"]).stem
        aug = _augmentation(task, stem, stems) if task != "multilabel" else None
        if aug is not None and not augmented:
            continue
        if check_audio:
            _check_file(path, where)
        meta = {"key": row.get("key", stem), "length": row.get("length"), "row": n, **(aug or {})}
        parts[split].append(Clip(path, label, None, meta))
        labels[stem] = label
        if aug is not None and task == "key":
            pending_keys.append((where, label, aug))
    for where, label, aug in pending_keys:  # the manifests rotate the key with the shift
        if aug["original"] in labels:
            base = labels[aug["original"]]
            expected = 12 * (base // 12) + (base % 12 + aug["semitones"]) % 12
            if label != expected:
                raise DatasetError(
                    f"{where}: key label {label} of a {aug['semitones']:+d}-semitone copy does "
                    f"not match its original's {base} (expected {expected})"
                )
    tags_used = str(tags_file) if tags_file.is_file() else None
    info = {"loader": "music", "manifest": str(manifest), "audio_root": str(audio_root),
            "augmented": augmented, "tags_file": tags_used}  # fmt: skip
    return DatasetSplits(name or manifest.stem, classes, task, **parts, sample_rate=SAMPLE_RATE,
                         info=info)  # fmt: skip


def _check_file(path: Path, where: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{where} refers to audio file {path}, which does not exist")
    info = audio_info(path)
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise DatasetError(
            f"audio file {path} ({where}) is {info.samplerate} Hz with {info.channels} channel(s); "
            f"the music sets need {SAMPLE_RATE} Hz mono: rebuild it with write_music_manifest"
        )


def load_music_set(name: str, data_path: str | Path, *, manifest: str | Path | None = None,
                   audio_root: str | Path | None = None, augmented: bool = True,
                   check_audio: bool = True) -> DatasetSplits:  # fmt: skip
    """Load music set ``name`` (:data:`MUSIC_SETS`) from ``data_path`` (module docstring).

    ``manifest`` / ``audio_root`` override where the manifest and the audio are (relative paths
    are under ``data_path``); other options as :func:`load_music_manifest`.
    """
    if name not in MUSIC_SETS:
        raise ValueError(f"unknown music set {name!r}; valid: {sorted(MUSIC_SETS)}")
    task, file, root = MUSIC_SETS[name]
    data_path = Path(data_path).expanduser()
    if not data_path.is_dir():
        raise FileNotFoundError(f"{name}: data_path {data_path} does not exist or is not a folder")
    if manifest is None:
        found = [p for p in (data_path / "metadata" / file, data_path / file) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"{name}: manifest {data_path / 'metadata' / file} not found (nor "
                f"{data_path / file}); build one with petl_kit.data.music.write_music_manifest"
            )
        manifest = found[0]
    audio_root = data_path / (root if audio_root is None else audio_root)
    return load_music_manifest(data_path / manifest, audio_root, task=task, name=name,
                               augmented=augmented, check_audio=check_audio)  # fmt: skip


def music_sets() -> dict[str, partial]:
    """``{name: loader(data_path, **options)}`` for ``register_dataset``."""
    return {name: partial(load_music_set, name) for name in MUSIC_SETS}
