"""Data layer: audio loading, features, dataset containers, built-in and generic datasets.

``load_dataset(name, data_path, **options)`` dispatches through ``DATASETS``; dataset modules add
themselves with ``register_dataset`` (esc50, us8k, gsc, fsc, iemocap, the music sets of
``music.MUSIC_SETS``, ...).
The paper-1 sets take ``fold=``, ``profile=`` and their protocol switches (``protocols.py``) and
``cache=True`` (features from the on-disk cache, ``cache.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .audio import AudioError, load_audio, resample
from .base import Clip, DatasetError, DatasetSplits, stratified_split
from .cache import FeatureStore, cache_dir, clear_cache
from .checks import DataWarning, validate_splits
from .dataset import AudioDataset, collate
from .esc50 import load_esc50
from .features import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    FbankExtractor,
    SpecAugment,
    WaveformExtractor,
)
from .folders import load_audiofolder, load_csv, write_audiofolder
from .fsc import load_fsc
from .gsc import load_gsc
from .iemocap import load_iemocap
from .music.build import write_music_manifest
from .music.manifests import MUSIC_SETS, load_music_manifest, music_sets
from .protocols import few_shot, fold_sizes, num_folds, protocol, summarize
from .synthetic import make_synthetic
from .us8k import load_us8k

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "AudioDataset",
    "AudioError",
    "Clip",
    "DATASETS",
    "DataWarning",
    "DatasetError",
    "DatasetSplits",
    "FbankExtractor",
    "FeatureStore",
    "MUSIC_SETS",
    "SpecAugment",
    "WaveformExtractor",
    "cache_dir",
    "clear_cache",
    "collate",
    "few_shot",
    "fold_sizes",
    "list_datasets",
    "load_audio",
    "load_audiofolder",
    "load_csv",
    "load_dataset",
    "load_music_manifest",
    "make_synthetic",
    "num_folds",
    "protocol",
    "register_dataset",
    "resample",
    "stratified_split",
    "summarize",
    "write_audiofolder",
    "validate_splits",
    "write_music_manifest",
]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered loader. ``requires_path``: called as ``fn(data_path, **options)``;
    otherwise as ``fn(**options)`` and ``data_path`` must be None."""

    fn: Callable[..., DatasetSplits]
    requires_path: bool = True


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    fn: Callable[..., DatasetSplits],
    *,
    requires_path: bool = True,
    overwrite: bool = False,
) -> None:
    """Make ``load_dataset(name, ...)`` call ``fn``. Re-registering a name needs ``overwrite=True``
    (two modules silently fighting over one name would be a hard bug to find)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if name in DATASETS and not overwrite:
        raise ValueError(
            f"dataset {name!r} is already registered; pass overwrite=True to replace it"
        )
    if not callable(fn):
        raise TypeError(f"dataset loader for {name!r} must be callable, got {fn!r}")
    DATASETS[name] = DatasetEntry(fn, requires_path)


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def _check_options(name: str, fn: Callable, options: dict, skip: int) -> None:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"dataset {name!r} has no option(s) {unknown}; valid options: {valid}")


def load_dataset(name: str, data_path: str | Path | None = None, **options) -> DatasetSplits:
    """Load dataset ``name`` (see ``list_datasets()``) from ``data_path``.

    ``synthetic``: generated in memory, ``data_path`` must be None; options go to
    ``make_synthetic`` (task, n_per_class, seed, clip_seconds, sample_rate, val/test_fraction).
    ``audiofolder``: ``data_path`` = root folder; options of ``load_audiofolder``.
    ``csv``: ``data_path`` = manifest file; options of ``load_csv`` (root, fold, seed, ...).

    Every set passes ``checks.validate_splits``: degenerate data (one class, a class absent from
    train, an empty train split) is a ``DatasetError``; a class absent from val / test a
    ``DataWarning`` recorded in ``info["warnings"]``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {list_datasets()}")
    entry = DATASETS[name]
    if entry.requires_path:
        if data_path is None or str(data_path) == "":
            raise ValueError(f"dataset {name!r} needs data_path (the folder or file holding it)")
        _check_options(name, entry.fn, options, skip=1)
        return validate_splits(entry.fn(Path(data_path), **options))
    if data_path is not None:
        raise ValueError(
            f"dataset {name!r} is generated and takes no data_path; got {str(data_path)!r} "
            "(pass data_path=None)"
        )
    _check_options(name, entry.fn, options, skip=0)
    return validate_splits(entry.fn(**options))


register_dataset("synthetic", make_synthetic, requires_path=False)
register_dataset("audiofolder", load_audiofolder)
register_dataset("csv", load_csv)
register_dataset("esc50", load_esc50)
register_dataset("us8k", load_us8k)
register_dataset("gsc", load_gsc)
register_dataset("fsc", load_fsc)
register_dataset("iemocap", load_iemocap)
for _name, _fn in music_sets().items():  # mtat, mtat_clean, mtg_top50, giantsteps_key, ...
    register_dataset(_name, _fn)

# built-in generated music sets (synthetic_key, synthetic_tempo, synthetic_tags)
from .music.synthetic import make_synthetic_music, music_loaders  # noqa: E402, F401

for _name, _fn in music_loaders().items():
    register_dataset(_name, _fn, requires_path=False)
