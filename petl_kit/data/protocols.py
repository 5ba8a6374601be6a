"""Protocols of the PETL_AST benchmarks: profile switches, fold tables, validation carving,
few-shot subsets and mean ± std aggregation (spec ``datasets_and_protocols.md`` §2-§6, §9).

Switches (reference → corrected, ``methods.md`` §15), resolved per profile by :func:`protocol`:

=================== ================= ===================== =====
switch              reference         corrected (default)   quirk
=================== ================= ===================== =====
``esc50_protocol``  ``"3-1-1"``       ``"4-1"``             R20
``us8k_protocol``   ``"test_as_val"`` ``"no_test_selection"`` R21
``few_shot_sampler`` ``"first_k"``    ``"random_episodes"`` R17
=================== ================= ===================== =====

The dataset loaders (``esc50.py``, ``us8k.py``, ``gsc.py``, ``fsc.py``, ``iemocap.py``) share the
layout helpers at the end of this module.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import ConfigError, as_dict, build, option
from .base import Clip, DatasetError, DatasetSplits, stratified_split

__all__ = [
    "NUM_FOLDS",
    "ProtocolConfig",
    "protocol",
    "num_folds",
    "check_fold",
    "esc50_folds",
    "us8k_folds",
    "iemocap_folds",
    "carve_val",
    "few_shot_indices",
    "few_shot",
    "summarize",
]

# Runs per dataset under the paper's protocol (IEMOCAP: 10 speaker folds; 5 with "session").
NUM_FOLDS = {"fsc": 1, "gsc": 1, "esc50": 5, "us8k": 10, "iemocap": 10}


@dataclass(frozen=True)
class ProtocolConfig:
    """Dataset protocol switches; build with :func:`protocol` (profile defaults + overrides)."""

    esc50_protocol: Literal["3-1-1", "4-1"] = option("3-1-1", "4-1", "R20: ESC-50 train folds")
    us8k_protocol: Literal["test_as_val", "no_test_selection"] = option(
        "test_as_val", "no_test_selection", "R21: US8K validates on its test fold"
    )
    few_shot_sampler: Literal["first_k", "random_episodes"] = option(
        "first_k", "random_episodes", "R17: first k per class vs seeded episodes"
    )
    profile: str = "corrected"


def protocol(profile: str = "corrected", **overrides) -> ProtocolConfig:
    """The switches of ``profile`` with explicit ``overrides`` (None = the profile's value)."""
    return build(ProtocolConfig, overrides, profile, owner="protocol")


def protocol_info(cfg: ProtocolConfig, *names: str) -> dict:
    """The profile, the named switches and the few-shot sampler, for ``DatasetSplits.info``."""
    d = as_dict(cfg)
    return {"profile": d["profile"], **{n: d[n] for n in (*names, "few_shot_sampler")}}


def num_folds(name: str, **options) -> int:
    """Runs of dataset ``name``'s protocol (1 for single-split and unknown datasets)."""
    if name == "iemocap" and options.get("iemocap_protocol") == "session":
        return 5
    return NUM_FOLDS.get(name, 1)


def check_fold(dataset: str, fold: object, n: int) -> int:
    """``fold`` as an int in 0..n-1, else a DatasetError naming the valid runs."""
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < n:
        raise DatasetError(f"{dataset}: fold {fold!r} does not exist; valid folds: 0..{n - 1}")
    return int(fold)


def esc50_folds(run: int, esc50_protocol: str) -> tuple[list[int], list[int], int]:
    """``(train_folds, val_folds, test_fold)`` (1-based ESC-50 folds) of run ``run`` (0-4).

    ``"3-1-1"`` (R20): train (i+1, i+2, i+3), val i+4, test i+5 (mod 5): run 0 = 1,2,3 / 4 / 5.
    ``"4-1"``: run i tests on fold i+1 and trains on the other four; no val fold.
    """
    run = check_fold("esc50", run, 5)
    if esc50_protocol == "3-1-1":
        ring = [(run + k) % 5 + 1 for k in range(5)]
        return ring[:3], [ring[3]], ring[4]
    if esc50_protocol == "4-1":
        return [f for f in range(1, 6) if f != run + 1], [], run + 1
    raise ConfigError(f"esc50_protocol = {esc50_protocol!r}; choose '3-1-1' or '4-1'")


def us8k_folds(run: int, us8k_protocol: str) -> tuple[list[int], int]:
    """``(train_folds, test_fold)`` of run ``run`` (0-9).

    ``"test_as_val"`` (R21): test fold [10, 1, ..., 9][run], train the other nine in ring order
    ([1..9], [2..10], [3..10, 1], ...); its validation is the test fold (caller's business).
    ``"no_test_selection"``: the official 10-fold CV, run i tests on fold i+1.
    """
    run = check_fold("us8k", run, 10)
    if us8k_protocol == "test_as_val":
        test = [10, *range(1, 10)][run]
        return [(test + k - 1) % 10 + 1 for k in range(1, 10)], test
    if us8k_protocol == "no_test_selection":
        return [f for f in range(1, 11) if f != run + 1], run + 1
    raise ConfigError(
        f"us8k_protocol = {us8k_protocol!r}; choose 'test_as_val' or 'no_test_selection'"
    )


def iemocap_folds(run: int, iemocap_protocol: str = "speaker") -> dict:
    """IEMOCAP run ``run``: ``{"train_sessions", "session", "val_speaker", "test_speaker"}``.

    ``"speaker"`` (reference, 10 runs): session [5,1,2,3,4][run // 2] is held out; its F (even
    runs) or M (odd runs) speaker validates, the other tests; train = the other four sessions.
    ``"session"`` (5 runs): session run+1 is the test set (both speakers), no val speaker.
    """
    if iemocap_protocol == "speaker":
        run = check_fold("iemocap", run, 10)
        held = [5, 1, 2, 3, 4][run // 2]
        val, test = ("F", "M") if run % 2 == 0 else ("M", "F")
    elif iemocap_protocol == "session":
        run = check_fold("iemocap (session protocol)", run, 5)
        held, val, test = run + 1, None, None
    else:
        raise ConfigError(f"iemocap_protocol = {iemocap_protocol!r}; choose 'speaker' or 'session'")
    train = [(held + k - 1) % 5 + 1 for k in range(1, 5)]
    return {"train_sessions": train, "session": held, "val_speaker": val, "test_speaker": test}


def carve_val(train: list[Clip], val_fraction: float | None, seed: int) -> tuple[list, list]:
    """Split ``train`` into (train, val): a seeded validation subset stratified per class, carved
    from the training folds only (never the test fold). ``val_fraction`` None or 0: no val."""
    if not val_fraction:
        return list(train), []
    labels = [c.labels[0] for c in train]
    tr, va, _ = stratified_split(labels, float(val_fraction), 0.0, seed)
    return [train[i] for i in tr], [train[i] for i in va]


def few_shot_indices(
    labels: list[int], k: int, sampler: str, seed: int = 0
) -> tuple[list[int], list[str]]:
    """Indices (sorted, loader order kept) of a k-shot subset, and warnings for short classes.

    ``"first_k"`` (reference, R17): the first k examples of each class in loader order,
    deterministic. ``"random_episodes"``: k per class uniformly without replacement, drawn with
    ``numpy.random.default_rng(seed)`` class by class in ascending label order. A class with
    fewer than k examples gives all of them and a warning (spec §6.2).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"few-shot k = {k!r}; expected a positive integer")
    if sampler not in ("first_k", "random_episodes"):
        raise ConfigError(f"few_shot_sampler = {sampler!r}; choose 'first_k' or 'random_episodes'")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen, notes = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < k:
            notes.append(f"class {int(cls)} has {len(idx)} training example(s) < k = {k}: all used")
        if sampler == "first_k":
            chosen.extend(idx[:k].tolist())
        else:
            chosen.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return sorted(chosen), notes


def few_shot(
    splits: DatasetSplits,
    k: int,
    *,
    sampler: str | None = None,
    seed: int = 0,
    profile: str | None = None,
) -> DatasetSplits:
    """``splits`` with a k-shot training set; val and test stay complete (spec §6).

    ``sampler`` None: the profile's ``few_shot_sampler`` (``profile`` None: the one recorded in
    ``splits.info``, else "corrected"). The subset, sampler, k and seed go to ``info["few_shot"]``.
    """
    profile = profile or splits.info.get("profile", "corrected")
    sampler = sampler or protocol(profile).few_shot_sampler
    idx, notes = few_shot_indices([c.labels[0] for c in splits.train], k, sampler, seed)
    for note in notes:
        warnings.warn(f"{splits.name} few-shot: {note}", stacklevel=2)
    out = splits.subset("train", idx)
    record = {
        "k": int(k),
        "sampler": sampler,
        "seed": seed if sampler != "first_k" else None,
        "n_train": len(idx),
        "warnings": notes,
    }
    out.info = {**out.info, "few_shot": record, "few_shot_sampler": sampler}
    return out


def summarize(values) -> dict:
    """``{"values", "n", "mean", "std" (population, ddof 0, as paper 1), "std_sample" (ddof 1;
    NaN for one value)}`` of a sequence of numbers."""
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize: no values")
    return {
        "values": x.tolist(),
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=0)),
        "std_sample": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
    }


def fold_sizes(name: str, data_path, **options) -> list[dict]:
    """Clips per split for every fold of dataset ``name`` (one row per fold), e.g. for
    ``pandas.DataFrame(fold_sizes("esc50", root, profile="reference"))``."""
    from . import load_dataset

    rows = []
    for fold in range(num_folds(name, **options)):
        opts = {**options, "fold": fold} if name in NUM_FOLDS else options
        s = load_dataset(name, data_path, **opts)
        test = s.info.get("test_fold", s.info.get("session", ""))
        rows.append({"fold": fold, **s.sizes(), "test_fold": test})
    return rows


# ---------------------------------------------------------------- layout helpers (loaders)
def find_root(data_path: Path, folder: str, marker: str, dataset: str, layout: str) -> Path:
    """``data_path/folder`` if it holds ``marker``, else ``data_path`` itself if it does (the user
    pointed at the dataset folder), else FileNotFoundError naming what was looked for."""
    data_path = Path(data_path).expanduser()
    if not data_path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: data_path {data_path} does not exist; expected {layout}"
        )
    for root in (data_path / folder, data_path):
        if (root / marker).exists():
            return root
    raise FileNotFoundError(
        f"{dataset}: {data_path / folder / marker} not found (nor {data_path / marker}); "
        f"expected {layout} under data_path"
    )


def require_file(path: Path, dataset: str, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: {what} {path} not found")
    return path


def check_audio(path: Path, dataset: str, where: str) -> Path:
    """``path`` if it is a file, else FileNotFoundError naming the metadata row ``where``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: {where} refers to audio file {path}, which does not exist"
        )
    return path


def label_of(name: str, index: dict[str, int], dataset: str, where: str) -> int:
    if name not in index:
        raise DatasetError(f"{dataset}: {where} has unknown label {name!r}; valid: {list(index)}")
    return index[name]


def read_lines(path: Path) -> list[str]:
    """Lines of a text file without line endings (utf-8, BOM tolerated)."""
    return path.read_text(encoding="utf-8-sig").splitlines()


def read_rows(path: Path, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL):
    """``[(line number, fields)]`` of every non-blank row of a delimited text file (utf-8, BOM
    tolerated; the header, if any, is the first row), read with the ``csv`` module so quoted
    fields may hold the delimiter. The line number is the row's first line, for error messages.
    """
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        start = 1
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    return rows


# ---------------------------------------------------------------------------- csv manifests
GROUP_COLUMN = "group"  # speaker, session, recording: clips that must stay on one side


def manifest_fold_labels(manifest: str | Path) -> list[int] | None:
    """The sorted fold labels of a csv manifest's ``fold`` column (None without one).

    A manifest's folds are its own labels (1–5, 0–9, ...): run i of a cross-validation tests on
    the i-th label and trains on the others (:func:`dataset_folds`).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"csv manifest {manifest} does not exist")
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "fold" not in columns:
            return None
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    values = {r["fold"] for r in rows}
    try:
        return sorted({int(v) for v in values})
    except ValueError as err:
        raise DatasetError(f"manifest {manifest}: fold column must hold integers ({err})") from err


def dataset_folds(name: str, data_path: str | Path | None = None, **options) -> list[int]:
    """The fold values a cross-validation of dataset ``name`` runs (``run_folds``, a sweep's
    ``fold: all``): a csv manifest's own fold labels, else ``0..num_folds - 1``."""
    if name == "csv" and data_path is not None:
        labels = manifest_fold_labels(data_path)
        if labels is not None:
            return labels
    return list(range(num_folds(name, **options)))


def carve_splits(
    strat: list[int],
    groups: list[str] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[int], list[int], list[int]]:
    """``(train, val, test)`` indices: :func:`stratified_split` without ``groups``; with them,
    group-disjoint splits (``sklearn.model_selection.GroupShuffleSplit``, seeded: whole groups
    go to test, then to val, each about its fraction of the clips), so no speaker, session or
    recording is on both sides."""
    if groups is None:
        return stratified_split(strat, val_fraction, test_fraction, seed)
    from sklearn.model_selection import GroupShuffleSplit

    def split(idx: list[int], fraction: float, salt: int) -> tuple[list[int], list[int]]:
        if fraction <= 0 or not idx:
            return idx, []
        names = [groups[i] for i in idx]
        if len(set(names)) < 2:
            raise DatasetError(
                f"group-disjoint split: {len(set(names))} group(s) ({sorted(set(names))}) "
                f"cannot be split into two sides; give more groups or leave out the group column"
            )
        gss = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed + salt)
        keep, out = next(gss.split(np.zeros(len(idx)), groups=names))
        return sorted(idx[i] for i in keep), sorted(idx[i] for i in out)

    rest, test = split(list(range(len(strat))), test_fraction, 0)
    # val_fraction is of all clips: of the clips left after test, a larger share
    frac = val_fraction / (1.0 - test_fraction) if test and test_fraction < 1 else val_fraction
    train, val = split(rest, min(frac, 0.9), 1)
    return train, val, test


def group_info(groups: list[str] | None, parts: dict[str, list[Clip]]) -> dict:
    """What ``splits.info`` records of a group column: its name and the groups per split."""
    if groups is None:
        return {"group_column": None}
    return {
        "group_column": GROUP_COLUMN,
        "groups": {s: len({c.meta[GROUP_COLUMN] for c in clips}) for s, clips in parts.items()},
    }
