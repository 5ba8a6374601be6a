"""Two generic on-disk layouts any user's data fits: ``audiofolder`` and a ``csv`` manifest.

Neither loader decodes audio: clips point at files, which ``AudioDataset`` reads lazily (and
``DatasetSplits.native_sample_rates()`` reports rates from the headers when wanted).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import audio_info, load_audio
from .base import Clip, DatasetError, DatasetSplits, stratified_split
from .checks import audio_extensions, check_columns, warn_skipped
from .protocols import GROUP_COLUMN, carve_splits, group_info

__all__ = ["load_audiofolder", "load_csv", "write_audiofolder", "SPLIT_ALIASES"]

# Split names accepted on disk and in manifests (case-insensitive) -> the kit's split.
SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
_LAYOUT = "root/<class>/<file> or root/{train,val,test}/<class>/<file>"


def _audio_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    # Recursive and sorted: never rely on directory order; hidden files are skipped.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    )


def _other_files(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    # files of other types, which no layout reads (hidden files and folders aside)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in extensions
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _by_index(clips: list[Clip], idx: tuple[list[int], ...]) -> dict[str, list[Clip]]:
    return {s: [clips[i] for i in ix] for s, ix in zip(("train", "val", "test"), idx, strict=True)}


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_audiofolder(
    root: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    extensions: tuple[str, ...] | None = None,
) -> DatasetSplits:
    """Load ``root/<class>/*.wav`` or ``root/{train,val,test}/<class>/*.wav``.

    Flat layout: a seeded split, stratified per class (``val_fraction``, ``test_fraction``).
    Split layout: the splits as given ("valid"/"validation" mean "val"; a missing val or test
    folder gives an empty split; train is required); classes = union over splits, sorted.
    Files are found recursively under each class folder, matched on ``extensions``
    (case-insensitive; None: every type ``soundfile`` reads here, ``checks.audio_extensions``),
    sorted by path; other files are skipped with a :class:`~petl_kit.errors.DataWarning` that
    counts them and names examples (also in ``info["warnings"]``). Task "multiclass".
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"audiofolder root {root} does not exist or is not a folder; expected {_LAYOUT}"
        )
    extensions = audio_extensions() if extensions is None else extensions
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    skipped = warn_skipped(root, _other_files(root, extensions), extensions)
    dirs = _subdirs(root)
    if not dirs:
        raise DatasetError(f"audiofolder root {root} has no sub-folders; expected {_LAYOUT}")
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    if not split_dirs:
        splits = _load_flat(root, dirs, extensions, val_fraction, test_fraction, seed)
    else:
        splits = _load_split_folders(root, _split_folders(root, dirs, split_dirs), extensions)
    if skipped:
        splits.info["warnings"] = [skipped]
    return splits


def _load_flat(
    root: Path,
    dirs: list[Path],
    extensions: tuple[str, ...],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> DatasetSplits:
    """``root/<class>/<file>``: one class per folder, a seeded stratified split."""
    classes = [d.name for d in dirs]
    files, labels = [], []
    for label, d in enumerate(dirs):
        found = _audio_files(d, extensions)
        if not found:
            raise DatasetError(
                f"class folder {d} has no audio files with extensions {list(extensions)}"
            )
        files += found
        labels += [label] * len(found)
    clips = [
        Clip(f, lab, None, {"path": str(f.relative_to(root)), "class": classes[lab]})
        for f, lab in zip(files, labels, strict=True)
    ]
    parts = _by_index(clips, stratified_split(labels, val_fraction, test_fraction, seed))
    info = dict(loader="audiofolder", root=str(root), layout="flat", seed=seed)
    info.update(val_fraction=val_fraction, test_fraction=test_fraction)
    return DatasetSplits(root.name, classes, "multiclass", **parts, info=info)


def _split_folders(root: Path, dirs: list[Path], split_dirs: list[Path]) -> dict[str, Path]:
    """``{kit split: folder}`` of a split layout; refuses mixed, doubled or train-less roots."""
    others = [d.name for d in dirs if d not in split_dirs]
    if others:
        raise DatasetError(
            f"audiofolder root {root} mixes split folders {[d.name for d in split_dirs]} with "
            f"other folders {others}; expected {_LAYOUT}"
        )
    by_split: dict[str, Path] = {}
    for d in split_dirs:
        split = SPLIT_ALIASES[d.name.lower()]
        if split in by_split:
            raise DatasetError(
                f"audiofolder root {root} has two folders for split {split!r}: "
                f"{by_split[split].name} and {d.name}"
            )
        by_split[split] = d
    if "train" not in by_split:
        raise DatasetError(
            f"audiofolder root {root} has split folders but no train/; expected {_LAYOUT}"
        )
    return by_split


def _load_split_folders(
    root: Path, by_split: dict[str, Path], extensions: tuple[str, ...]
) -> DatasetSplits:
    """``root/{train,val,test}/<class>/<file>``: the splits as given, classes their union."""
    classes = sorted({c.name for d in by_split.values() for c in _subdirs(d)})
    if not classes:
        raise DatasetError(
            f"split folders under {root} have no class sub-folders; expected {_LAYOUT}"
        )
    parts = {"train": [], "val": [], "test": []}
    for split, d in by_split.items():
        for c in _subdirs(d):
            for f in _audio_files(c, extensions):
                meta = {"path": str(f.relative_to(root)), "class": c.name}
                parts[split].append(Clip(f, classes.index(c.name), None, meta))
    for split, d in by_split.items():
        if not parts[split]:
            raise DatasetError(
                f"split folder {d} has no audio files with extensions {list(extensions)}"
            )
    folders = {s: d.name for s, d in by_split.items()}
    info = dict(loader="audiofolder", root=str(root), layout="splits", split_folders=folders)
    return DatasetSplits(root.name, classes, "multiclass", **parts, info=info)


def _class_order(names: set[str]) -> list[str]:
    # Integer-like labels sort numerically ("2" before "10"); anything else sorts as text.
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def load_csv(
    manifest: str | Path,
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fold: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Load a CSV manifest with columns ``path,label`` and optional ``split`` or ``fold``.

    * ``split`` column (train / val|valid|validation / test): splits as given.
    * ``fold`` column: ``fold=k`` makes fold k (a label of the column) the test set; val is
      carved from the other folds (stratified, ``val_fraction``). A manifest with a fold column
      needs ``fold``; ``protocols.dataset_folds`` lists its labels for a cross-validation.
    * optional ``group`` column (speaker, session, recording): the carved splits are
      group-disjoint (``protocols.carve_splits``); ``info`` records ``group_column`` and the
      groups per split.
    * neither: stratified seeded split with ``val_fraction`` / ``test_fraction``.
    Paths are relative to the manifest's folder unless ``root`` is given (absolute paths stay).
    Labels separated by ``;`` make the task "multilabel" (stratified on each clip's first label).
    Classes are sorted (numerically when all are integers). Other columns go to ``Clip.meta``.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"csv manifest {manifest} does not exist")
    base = Path(root) if root is not None else manifest.parent
    if not base.is_dir():
        raise FileNotFoundError(f"audio root {base} for manifest {manifest} is not a folder")
    columns, rows = _read_manifest(manifest)
    _check_columns(manifest, columns, rows, fold)
    label_lists = _row_labels(manifest, rows)
    classes = _class_order({lab for labels in label_lists for lab in labels})
    multilabel = any(len(labels) > 1 for labels in label_lists)
    clips = _row_clips(manifest, base, rows, label_lists, classes, multilabel)

    groups = [r[GROUP_COLUMN] for r in rows] if GROUP_COLUMN in columns else None
    info = {"loader": "csv", "manifest": str(manifest), "root": str(base)}
    if "split" in columns and fold is None:
        parts = _split_by_column(manifest, rows, clips)
        info["split_source"] = "column"
    elif fold is not None:
        parts, existing = _split_by_fold(manifest, rows, clips, groups, fold, val_fraction, seed)
        info.update(split_source="fold", fold=int(fold), folds=existing, seed=seed)
        info.update(val_fraction=val_fraction)
    else:
        strat = [c.labels[0] for c in clips]
        parts = _by_index(clips, carve_splits(strat, groups, val_fraction, test_fraction, seed))
        info.update(split_source="random", seed=seed, val_fraction=val_fraction)
        info.update(test_fraction=test_fraction)
    info.update(group_info(groups if info["split_source"] != "column" else None, parts))
    task = "multilabel" if multilabel else "multiclass"
    return DatasetSplits(manifest.stem, classes, task, **parts, info=info)


def _read_manifest(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(column names, rows)`` of a CSV manifest; names and values stripped, BOM dropped."""
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [
            {k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader
        ]
    check_columns(columns, ("path", "label", "split", "fold"), f"manifest {manifest}")
    return columns, rows


def _check_columns(manifest: Path, columns: list[str], rows: list[dict], fold) -> None:
    """Refuse a manifest without path/label or rows, and a fold that the columns cannot serve."""
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise DatasetError(
            f"manifest {manifest} lacks column(s) {missing}; found {columns}, "
            "required path,label (optional split or fold)"
        )
    if not rows:
        raise DatasetError(f"manifest {manifest} has no rows")
    if fold is not None and "fold" not in columns:
        raise DatasetError(
            f"fold={fold} given but manifest {manifest} has no 'fold' column; found {columns}"
        )
    if fold is None and "fold" in columns and "split" not in columns:
        folds = sorted({r["fold"] for r in rows})
        raise DatasetError(
            f"manifest {manifest} has a 'fold' column: pass fold=<k> (one of {folds})"
        )


def _row_labels(manifest: Path, rows: list[dict]) -> list[list[str]]:
    """Each row's ``;``-separated label names; an empty label is refused."""
    label_lists = []
    for n, r in enumerate(rows, start=1):
        labels = [x.strip() for x in r["label"].split(";") if x.strip()]
        if not labels:
            raise DatasetError(f"manifest {manifest} row {n} (line {n + 1}) has an empty label")
        label_lists.append(labels)
    return label_lists


def _row_clips(
    manifest: Path,
    base: Path,
    rows: list[dict],
    label_lists: list[list[str]],
    classes: list[str],
    multilabel: bool,
) -> list[Clip]:
    """One Clip per row (files checked); columns other than path/label go to ``meta``."""
    index = {c: i for i, c in enumerate(classes)}
    clips = []
    for n, (r, labels) in enumerate(zip(rows, label_lists, strict=True), start=1):
        path = Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"]
        if not r["path"] or not path.is_file():
            raise FileNotFoundError(
                f"manifest {manifest} row {n} (line {n + 1}): audio file {path} does not exist"
            )
        ids = sorted(index[lab] for lab in labels)
        meta = {k: v for k, v in r.items() if k not in ("path", "label")}
        meta.update(row=n, path=r["path"])
        clips.append(Clip(path, ids if multilabel else ids[0], None, meta))
    return clips


def _split_by_column(manifest: Path, rows: list[dict], clips: list[Clip]) -> dict[str, list]:
    """The splits the ``split`` column names (its aliases accepted)."""
    parts = {"train": [], "val": [], "test": []}
    for n, (r, clip) in enumerate(zip(rows, clips, strict=True), start=1):
        split = SPLIT_ALIASES.get(r["split"].lower())
        if split is None:
            raise DatasetError(
                f"manifest {manifest} row {n} (line {n + 1}) has unknown split "
                f"{r['split']!r}; valid: {sorted(SPLIT_ALIASES)}"
            )
        parts[split].append(clip)
    return parts


def _split_by_fold(
    manifest: Path,
    rows: list[dict],
    clips: list[Clip],
    groups: list[str] | None,
    fold,
    val_fraction: float,
    seed: int,
) -> tuple[dict[str, list], list[int]]:
    """Fold ``fold`` as test, val carved (stratified; group-disjoint when ``groups`` are given)
    from the other folds; also the folds."""
    try:
        fold_of = [int(r["fold"]) for r in rows]
    except ValueError as err:
        raise DatasetError(f"manifest {manifest}: fold column must hold integers ({err})") from err
    existing = sorted(set(fold_of))
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or fold not in existing:
        raise DatasetError(
            f"fold {fold!r} does not exist in manifest {manifest}; existing folds: {existing}"
        )
    rest = [i for i, f in enumerate(fold_of) if f != fold]
    strat = [clips[i].labels[0] for i in rest]
    rest_groups = None if groups is None else [groups[i] for i in rest]
    tr, va, _ = carve_splits(strat, rest_groups, val_fraction, 0.0, seed)
    parts = {
        "train": [clips[rest[i]] for i in tr],
        "val": [clips[rest[i]] for i in va],
        "test": [c for c, f in zip(clips, fold_of, strict=True) if f == fold],
    }
    return parts, existing


def write_audiofolder(splits: DatasetSplits, root: str | Path, *, subtype: str = "PCM_16") -> Path:
    """Write ``splits`` as ``root/{train,val,test}/<class>/<NNNNN>[_<id>].wav`` (empty splits are
    skipped); readable back with ``load_audiofolder``. Multi-label data does not fit the layout.

    Args: subtype: soundfile WAV subtype ("PCM_16"; "FLOAT" keeps float32 exactly).
    Returns: ``root``.
    """
    if splits.task != "multiclass":
        raise DatasetError(
            f"write_audiofolder needs a multiclass dataset, {splits.name} is {splits.task}; "
            "write a csv manifest with ';'-separated labels instead"
        )
    root = Path(root)
    for split in ("train", "val", "test"):
        for i, clip in enumerate(splits.split(split)):
            if isinstance(clip.source, np.ndarray):
                wave, sr = clip.source, clip.sample_rate
            else:
                sr = audio_info(clip.source).samplerate
                wave = load_audio(clip.source, sr, channel=splits.channel).numpy()
            if subtype.startswith("PCM") and np.abs(wave).max() > 1.0:
                raise DatasetError(
                    f"{split}[{i}] of {splits.name} exceeds [-1, 1] and would clip as "
                    f"{subtype}; use subtype='FLOAT'"
                )
            folder = root / split / splits.classes[clip.label]
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{i:05d}" + (f"_{clip.meta['id']}" if "id" in clip.meta else "")
            sf.write(str(folder / f"{stem}.wav"), wave, sr, subtype=subtype)
    return root
