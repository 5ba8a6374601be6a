"""Refusals of degenerate data: one validation step every loaded dataset passes through.

A run on degenerate data ends ``completed`` with numbers that mean nothing (one class trains to
accuracy 1.0; a NaN clip gives a NaN test loss), so these are refused before any training:

* :func:`validate_splits` — fewer than two classes in train, a class with val/test clips but none
  in train, an empty split the caller needs (errors); a trained class absent from val or test (a
  :class:`DataWarning`, also recorded in ``splits.info["warnings"]`` so it reaches the run's
  ``metrics.json``). Classes with no clip anywhere are unused vocabulary (the 300 tempo bins, a
  partial download of a fixed class list) and pass.
  ``load_dataset`` calls it for every registered loader, ``run_experiment`` for splits given to it.
* :func:`check_finite` — NaN / Inf samples, named by file (at load and when the cache is built).
* :func:`check_columns` — a manifest column (or JSON key) that is a case or plural variant of an
  expected name (``Split``, ``splits``): without this it would be ignored silently.
* :func:`audio_extensions` / :func:`warn_skipped` — the file types ``soundfile`` reads here, and
  a warning listing the files an audiofolder skips.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import AudioError, DatasetError, DataWarning

__all__ = [
    "DataWarning",
    "audio_extensions",
    "check_columns",
    "check_finite",
    "validate_splits",
    "warn_skipped",
]

# Tasks whose classes are names (checked for train / val / test coverage); key and tempo are
# fixed vocabularies (24 keys, 300 BPM bins) whose splits cover different bins by nature.
_DATA_CLASSES = ("multiclass", "multilabel")
_EXAMPLES = 5  # how many names a message lists

# libsndfile format name -> file extensions it is read from
_FORMAT_EXTENSIONS = {
    "WAV": (".wav",), "WAVEX": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",), "AIFF": (".aiff", ".aif", ".aifc"), "AU": (".au", ".snd"), "CAF": (".caf",),
    "W64": (".w64",), "RF64": (".rf64",),
}  # fmt: skip


def audio_extensions() -> tuple[str, ...]:
    """File extensions of the audio formats this machine's libsndfile reads
    (``soundfile.available_formats()``: MP3 needs libsndfile >= 1.1)."""
    formats = sf.available_formats()
    found = {ext for name, exts in _FORMAT_EXTENSIONS.items() if name in formats for ext in exts}
    return tuple(sorted(found))


def warn_skipped(root: Path, skipped: list[Path], extensions: tuple[str, ...]) -> str | None:
    """Warn (and return the text) about files under ``root`` that are not read as audio."""
    if not skipped:
        return None
    examples = ", ".join(str(p.relative_to(root)) for p in skipped[:_EXAMPLES])
    text = (
        f"audiofolder {root}: {len(skipped)} file(s) skipped, not audio of a readable type "
        f"(e.g. {examples}); read types: {list(extensions)}"
    )
    warnings.warn(text, DataWarning, stacklevel=3)
    return text


def check_columns(columns, expected: tuple[str, ...], where: str) -> None:
    """Refuse a column that is a case or plural variant of an expected name (``Split``,
    ``splits``, ``Labels``), which the loader would otherwise ignore."""

    def norm(name: str) -> str:
        name = name.strip().lower().replace("-", "_")
        return name[:-1] if name.endswith("s") else name

    wanted = {norm(e): e for e in expected}
    for column in columns:
        name = str(column)
        if name in expected:
            continue
        target = wanted.get(norm(name))
        if target is not None:
            raise DatasetError(
                f"{where}: column {name!r} looks like {target!r}, but the kit reads the exact "
                f"name {target!r}; rename it (expected names: {list(expected)})"
            )


def check_finite(values, what: str) -> None:
    """Raise AudioError naming ``what`` (a file, a clip) when ``values`` holds NaN or Inf."""
    arr = values.numpy() if hasattr(values, "numpy") else np.asarray(values)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.flatnonzero(~finite.reshape(-1))[0])
        raise AudioError(
            f"{what} holds {bad} NaN/Inf value(s) (first at flat position {first} of "
            f"{arr.size}); audio must be finite: repair or drop the file"
        )


def clip_name(clip, split: str | None = None, i: int | None = None) -> str:
    """A clip's file, else its place (``train[3]``) for in-memory arrays."""
    if isinstance(clip.source, (str, Path)):
        return f"audio file {clip.source}"
    place = f" {split}[{i}]" if split is not None else ""
    return f"in-memory clip{place} ({clip.meta.get('path') or clip.meta.get('id') or 'array'})"


def validate_splits(splits, needs: tuple[str, ...] = ("train",)):
    """Refuse degenerate ``splits`` (module docstring); returns them, warnings recorded.

    Args:
        splits: a ``DatasetSplits``.
        needs: the splits that must hold clips ("train"; a run also needs "test").

    Raises:
        DatasetError naming the dataset, the split or class, and what would be valid.
    """
    name = splits.name
    for split in needs:
        if not splits.split(split):
            sizes = splits.sizes()
            raise DatasetError(
                f"dataset {name!r}: the {split} split is empty (sizes {sizes}); a run needs "
                f"clips in {list(needs)}: add data or change val_fraction / test_fraction / fold"
            )
    train = Counter(lab for clip in splits.train for lab in clip.labels)
    if len(train) < 2:
        held = [splits.classes[i] for i in train]
        raise DatasetError(
            f"dataset {name!r}: the train split holds {len(train)} class(es) {held}; a classifier "
            f"needs at least two (classes: {splits.classes[:_EXAMPLES]}"
            f"{' ...' if len(splits.classes) > _EXAMPLES else ''})"
        )
    if splits.task not in _DATA_CLASSES:  # key / tempo: fixed vocabularies (an unseen BPM is
        return splits  # still a valid target of the tempo bins)
    elsewhere = {lab for split in ("val", "test") for clip in splits.split(split)
                 for lab in clip.labels}  # fmt: skip
    unseen = [splits.classes[i] for i in sorted(elsewhere - set(train))]
    if unseen:
        raise DatasetError(
            f"dataset {name!r}: class(es) {unseen[:_EXAMPLES]} ({len(unseen)} in all) have clips "
            f"in val/test but none in the train split; the model cannot learn them: every "
            f"evaluated class needs training clips (add clips or drop the class)"
        )
    notes = list(splits.info.get("warnings") or [])
    for split in ("val", "test"):
        clips = splits.split(split)
        if not clips:
            continue
        seen = {lab for clip in clips for lab in clip.labels}
        missing = [c for i, c in enumerate(splits.classes) if i in train and i not in seen]
        if missing:
            text = (
                f"dataset {name!r}: class(es) {missing[:_EXAMPLES]} ({len(missing)} in all) have "
                f"no clip in the {split} split; its metrics do not cover them"
            )
            if text not in notes:
                notes.append(text)
                warnings.warn(text, DataWarning, stacklevel=2)
    if notes:
        splits.info["warnings"] = notes
    return splits
