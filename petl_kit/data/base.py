"""Dataset containers: ``Clip`` (one example) and ``DatasetSplits`` (train/val/test + classes)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import TASKS
from ..errors import DatasetError
from .audio import audio_info
from .dataset import AudioDataset, collate
from .features import SpecAugment
from .segments import VAL_CROPS, SegmentDataset, check_length, collate_segments

__all__ = ["Clip", "DatasetSplits", "DatasetError", "stratified_split"]

SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    """One example.

    Args:
        source: audio file path, or an in-memory mono waveform ``[time]`` (cast to float32).
        label: class index (multiclass) or list of class indices (multilabel).
        sample_rate: Hz; required for arrays. For files None means "the file's own rate".
        meta: free-form facts (fold, speaker, original filename, ...).
    """

    source: str | Path | np.ndarray
    label: int | list[int]
    sample_rate: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.source, np.ndarray):
            if self.source.ndim != 1:
                raise ValueError(
                    f"Clip array source must be mono [time], got shape {self.source.shape}"
                )
            if self.sample_rate is None:
                raise ValueError("Clip with an in-memory array source needs sample_rate")
            self.source = self.source.astype(np.float32, copy=False)
        elif not isinstance(self.source, (str, Path)):
            raise TypeError(
                f"Clip source must be a path or numpy array, got {type(self.source).__name__}"
            )
        if isinstance(self.label, (list, tuple)):
            self.label = [int(x) for x in self.label]
        elif isinstance(self.label, (int, np.integer)) and not isinstance(self.label, bool):
            self.label = int(self.label)
        else:
            raise TypeError(f"Clip label must be an int or list of ints, got {self.label!r}")

    @property
    def labels(self) -> list[int]:
        """The label as a list (one element for multiclass)."""
        return self.label if isinstance(self.label, list) else [self.label]


def stratified_split(
    labels: list[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Seeded split of indices into (train, val, test), class by class.

    Per class of n items: n * test_fraction rounded half-up go to test, n * val_fraction to val, the
    rest to train. Each returned list is sorted (original order kept within a split).
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave a train split, got "
            f"{val_fraction} + {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    out: tuple[list[int], list[int], list[int]] = ([], [], [])
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        # Half-up rounding (Python's round() is half-to-even, which surprises: 2.5 -> 2).
        n_test = int(np.floor(len(idx) * test_fraction + 0.5))
        n_val = int(np.floor(len(idx) * val_fraction + 0.5))
        out[2].extend(idx[:n_test].tolist())
        out[1].extend(idx[n_test : n_test + n_val].tolist())
        out[0].extend(idx[n_test + n_val :].tolist())
    return tuple(sorted(part) for part in out)  # type: ignore[return-value]


def _short(value, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


@dataclass
class DatasetSplits:
    """A dataset as train/val/test lists of ``Clip``.

    Args:
        name: dataset name (for logs and run folders).
        classes: class names; label i means ``classes[i]``.
        task: "multiclass", "multilabel", "key" (24 classes, ``music_tasks.KEY_CLASSES``) or
            "tempo" (300 BPM bins, label = integer BPM, ``music_tasks.TEMPO_CLASSES``).
        train, val, test: the clips (a split may be empty).
        sample_rate: native rate in Hz if uniform and known, else None.
        info: provenance (loader, root, fold, seed, ...).
        channel: how files are down-mixed when loaded: "mean" or a channel index ("mean").
        cache: ``loaders`` read features from the on-disk feature cache (False).
    """

    name: str
    classes: list[str]
    task: str
    train: list[Clip]
    val: list[Clip]
    test: list[Clip]
    sample_rate: int | None = None
    info: dict = field(default_factory=dict)
    channel: str | int = "mean"
    cache: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"DatasetSplits.task must be one of {list(TASKS)}, got {self.task!r}")
        n = len(self.classes)
        for split in SPLITS:
            for i, clip in enumerate(getattr(self, split)):
                bad = [lab for lab in clip.labels if not 0 <= lab < n]
                if bad:
                    raise DatasetError(
                        f"{self.name}: {split}[{i}] has label(s) {bad} outside 0..{n - 1} "
                        f"({n} classes)"
                    )
                if self.task != "multilabel" and isinstance(clip.label, list):
                    raise DatasetError(
                        f"{self.name}: {split}[{i}] has a list label {clip.label} in a "
                        f"{self.task} task"
                    )

    def __repr__(self) -> str:
        """One screen whatever the size: sizes, classes (the first 8), rate, task, protocol."""
        shown = ", ".join(self.classes[:8]) + (f", … ({len(self.classes)})" if len(self.classes) > 8
                                               else "")  # fmt: skip
        rate = f"{self.sample_rate} Hz" if self.sample_rate else "native rate unknown"
        sizes = " / ".join(f"{s} {n}" for s, n in self.sizes().items())
        info = [f"{k}={_short(v)}" for k, v in self.info.items() if not isinstance(v, (dict, list))]
        return (
            f"DatasetSplits({self.name!r}, {self.task}, {sizes}, {rate}\n"
            f"  classes: {shown}\n  info: {', '.join(info) or '-'})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> list[Clip]:
        """The clips of split ``name`` ("train" | "val" | "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {list(SPLITS)}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def class_counts(self, split: str) -> dict[str, int]:
        """Clips per class name in ``split`` (multilabel: clips carrying each label)."""
        counts = Counter(lab for clip in self.split(split) for lab in clip.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, split: str, indices) -> DatasetSplits:
        """A copy in which ``split`` keeps only ``indices`` (in the given order); other splits and
        the class list are shared unchanged. Used e.g. for few-shot episodes."""
        clips = self.split(split)
        try:
            chosen = [clips[int(i)] for i in indices]
        except IndexError as err:
            raise IndexError(
                f"subset: index out of range for {split} split of size {len(clips)}"
            ) from err
        return dataclasses.replace(
            self, **{split: chosen}, info={**self.info, f"{split}_subset": len(chosen)}
        )

    def native_sample_rates(self) -> dict[int, int]:
        """Clips per native sample rate over all splits (reads file headers; no decoding)."""
        counts: Counter = Counter()
        for split in SPLITS:
            for clip in self.split(split):
                sr = clip.sample_rate
                if sr is None:
                    sr = audio_info(clip.source).samplerate
                counts[sr] += 1
        return dict(sorted(counts.items()))

    def loaders(
        self,
        extractor,
        *,
        batch_size: int,
        spec_augment: SpecAugment | None = None,
        seed: int = 0,
        num_workers: int = 0,
        shuffle_train: bool = True,
        cache: bool | None = None,
        train_crop: int | None = None,
        eval_segment: int | None = None,
        val_crop: str = "segments",
    ) -> dict[str, DataLoader]:
        """DataLoaders keyed "train"/"val"/"test" (empty splits omitted), batches from ``collate``.

        SpecAugment (fbank only) is applied to train only. Train is shuffled by a generator seeded
        with ``seed``; eval loaders are not shuffled. Every loader gets its own seeded generator so
        iterating one never draws from torch's global RNG (which would shift the training run).
        ``cache`` (None: ``self.cache``): features come from the on-disk cache, computed once.

        Segment protocol (``data.segments``; lengths in samples at ``extractor.sample_rate``):
        ``train_crop`` one random crop per clip and epoch (None: whole clips); ``eval_segment``
        cuts val/test clips into ⌊T / eval_segment⌋ segments whose batches carry ``clip_index``
        for clip-level aggregation in ``evaluate`` (None: whole clips); ``val_crop`` ``"segments"``
        (val as test) or ``"random"`` (music reference, M12: one random ``train_crop`` crop).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        pieces = _pieces(train_crop, eval_segment, val_crop)
        cached = self.cache if cache is None else cache
        _check_features(extractor, cached, pieces, spec_augment)
        out = {}
        for offset, split in enumerate(SPLITS):
            if not self.split(split):
                continue
            augment = spec_augment if split == "train" else None
            mode, length = pieces[split]
            out[split] = _loader(
                self._dataset(split, extractor, augment, cached),
                mode,
                length,
                batch_size=batch_size,
                shuffle=split == "train" and shuffle_train,
                num_workers=num_workers,
                seed=seed + offset,
            )
        return out

    def _dataset(self, split: str, extractor, augment, cache: bool) -> AudioDataset:
        """The whole-clip dataset of ``split`` (features from ``extractor``)."""
        return AudioDataset(
            self.split(split),
            extractor,
            num_classes=self.num_classes,
            # key and tempo labels are class indices / BPM bins, read as multiclass ones
            task="multilabel" if self.task == "multilabel" else "multiclass",
            augment=augment,
            channel=self.channel,
            cache=cache,
            cache_name=self.name,
        )


def _pieces(train_crop, eval_segment, val_crop: str) -> dict[str, tuple[str, int | None]]:
    """How each split is cut: ``{split: (mode, length in samples or None for whole clips)}``."""
    train_crop = check_length("train_crop", train_crop)
    eval_segment = check_length("eval_segment", eval_segment)
    if val_crop not in VAL_CROPS:
        raise ValueError(f"val_crop={val_crop!r} is not valid; valid: {list(VAL_CROPS)}")
    pieces = {"train": ("crop", train_crop), "test": ("segments", eval_segment)}
    pieces["val"] = ("crop", train_crop) if val_crop == "random" else pieces["test"]
    return pieces


def _check_features(extractor, cached: bool, pieces: dict, spec_augment) -> None:
    """Refuse cutting cached fbank features and SpecAugment on anything but fbank."""
    if cached and extractor.input_kind == "fbank" and (pieces["train"][1] or pieces["test"][1]):
        raise ValueError(
            "train_crop / eval_segment cut waveforms, but the fbank cache holds whole-clip "
            "features; pass cache=False"
        )
    if spec_augment is not None and extractor.input_kind != "fbank":
        raise ValueError(
            f"spec_augment works on fbank features; extractor {type(extractor).__name__} gives "
            f"{extractor.input_kind!r}"
        )


def _loader(
    ds: AudioDataset,
    mode: str,
    length: int | None,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
) -> DataLoader:
    """A DataLoader over ``ds`` (cut into ``mode`` pieces of ``length`` when given) with its own
    generator seeded ``seed``, so iterating it never draws from torch's global RNG."""
    if length is not None:
        ds = SegmentDataset(ds, mode=mode, length=length, seed=seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_segments if mode == "segments" and length else collate,
        drop_last=False,
        generator=torch.Generator().manual_seed(seed),
    )
