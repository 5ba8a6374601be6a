"""Dataset containers: ``Clip``, ``DatasetSplits``, ``AudioDataset`` and its collate function.

Features are computed on the fly in ``AudioDataset.__getitem__`` (no pre-pass), so augmentation and
new datasets need nothing else; a cache can wrap the dataset later.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio import audio_info, load_audio, resample
from .features import SpecAugment

__all__ = ["Clip", "DatasetSplits", "DatasetError", "AudioDataset", "collate", "stratified_split"]

SPLITS = ("train", "val", "test")
TASKS = ("multiclass", "multilabel")


class DatasetError(ValueError):
    """A dataset's layout, manifest or labels are not what the loader expects."""


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
                raise ValueError(f"Clip array source must be mono [time], got shape {self.source.shape}")
            if self.sample_rate is None:
                raise ValueError("Clip with an in-memory array source needs sample_rate")
            self.source = self.source.astype(np.float32, copy=False)
        elif not isinstance(self.source, (str, Path)):
            raise TypeError(f"Clip source must be a path or numpy array, got {type(self.source).__name__}")
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

    Per class of n items: round(n * test_fraction) go to test, round(n * val_fraction) to val, the
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
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        out[2].extend(idx[:n_test].tolist())
        out[1].extend(idx[n_test : n_test + n_val].tolist())
        out[0].extend(idx[n_test + n_val :].tolist())
    return tuple(sorted(part) for part in out)  # type: ignore[return-value]


@dataclass
class DatasetSplits:
    """A dataset as train/val/test lists of ``Clip``.

    Args:
        name: dataset name (for logs and run folders).
        classes: class names; label i means ``classes[i]``.
        task: "multiclass" or "multilabel".
        train, val, test: the clips (a split may be empty).
        sample_rate: native rate in Hz if uniform and known, else None.
        info: provenance (loader, root, fold, seed, ...).
        channel: how files are down-mixed when loaded: "mean" or a channel index ("mean").
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

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"DatasetSplits.task must be one of {list(TASKS)}, got {self.task!r}")
        n = len(self.classes)
        for split in SPLITS:
            for i, clip in enumerate(getattr(self, split)):
                bad = [lab for lab in clip.labels if not 0 <= lab < n]
                if bad:
                    raise DatasetError(
                        f"{self.name}: {split}[{i}] has label(s) {bad} outside 0..{n - 1} ({n} classes)"
                    )
                if self.task == "multiclass" and isinstance(clip.label, list):
                    raise DatasetError(
                        f"{self.name}: {split}[{i}] has a list label {clip.label} in a multiclass task"
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
            raise IndexError(f"subset: index out of range for {split} split of size {len(clips)}") from err
        return dataclasses.replace(self, **{split: chosen}, info={**self.info, f"{split}_subset": len(chosen)})

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
    ) -> dict[str, DataLoader]:
        """DataLoaders keyed "train"/"val"/"test" (empty splits omitted), batches from ``collate``.

        SpecAugment (fbank only) is applied to train only. Train is shuffled by a generator seeded
        with ``seed``; eval loaders are not shuffled. Every loader gets its own seeded generator so
        iterating one never draws from torch's global RNG (which would shift the training run).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if spec_augment is not None and extractor.input_kind != "fbank":
            raise ValueError(
                f"spec_augment works on fbank features; extractor {type(extractor).__name__} gives "
                f"{extractor.input_kind!r}"
            )
        out = {}
        for offset, split in enumerate(SPLITS):
            clips = self.split(split)
            if not clips:
                continue
            is_train = split == "train"
            ds = AudioDataset(
                clips,
                extractor,
                num_classes=self.num_classes,
                task=self.task,
                augment=spec_augment if is_train else None,
                channel=self.channel,
            )
            out[split] = DataLoader(
                ds,
                batch_size=batch_size,
                shuffle=is_train and shuffle_train,
                num_workers=num_workers,
                collate_fn=collate,
                drop_last=False,
                generator=torch.Generator().manual_seed(seed + offset),
            )
        return out


class AudioDataset(Dataset):
    """Map-style dataset: loads each clip, resamples it to ``extractor.sample_rate`` and extracts.

    Args:
        clips: the examples.
        extractor: ``FbankExtractor`` or ``WaveformExtractor`` (anything with ``input_kind``,
            ``sample_rate`` and ``__call__``).
        num_classes: C, for multi-hot labels.
        task: "multiclass" | "multilabel".
        augment: applied to the features after extraction (e.g. SpecAugment), or None.
        channel: down-mix for files, passed to ``load_audio`` ("mean").

    Item: ``{"input_values": [L, F] or [S], "attention_mask": [S] long (waveform only),
    "label": int or multi-hot [C] float, "index": int}``.
    """

    def __init__(self, clips, extractor, *, num_classes: int, task: str, augment=None, channel="mean"):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if getattr(extractor, "input_kind", None) not in ("fbank", "waveform"):
            raise TypeError(f"extractor must have input_kind 'fbank' or 'waveform', got {extractor!r}")
        self.clips = list(clips)
        self.extractor = extractor
        self.num_classes = num_classes
        self.task = task
        self.augment = augment
        self.channel = channel

    def __len__(self) -> int:
        return len(self.clips)

    def load_wave(self, i: int) -> torch.Tensor:
        """Mono float32 ``[time]`` waveform of clip ``i`` at ``extractor.sample_rate``."""
        clip = self.clips[i]
        sr = self.extractor.sample_rate
        if isinstance(clip.source, np.ndarray):
            return resample(torch.from_numpy(clip.source), clip.sample_rate, sr)
        return load_audio(clip.source, sr, channel=self.channel)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        item: dict = {"index": i}
        feats = self.extractor(self.load_wave(i))
        if self.extractor.input_kind == "waveform":
            item["input_values"], item["attention_mask"] = feats
        else:
            item["input_values"] = feats
        if self.augment is not None:
            item["input_values"] = self.augment(item["input_values"])
        if self.task == "multilabel":
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[clip.labels] = 1.0
            item["label"] = target
        else:
            item["label"] = clip.label
        return item


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Batch ``AudioDataset`` items.

    Returns ``{"input_values": [B, L, F] (fbank) or [B, S] (waveform, right-padded with 0 to the
    longest), "attention_mask": [B, S] long (waveform only), "labels": [B] long (multiclass) or
    [B, C] float multi-hot (multilabel), "index": [B] long}``.
    """
    batch: dict[str, torch.Tensor] = {"index": torch.tensor([it["index"] for it in items])}
    if "attention_mask" in items[0]:
        longest = max(it["input_values"].shape[0] for it in items)
        values = torch.zeros(len(items), longest, dtype=torch.float32)
        mask = torch.zeros(len(items), longest, dtype=torch.long)
        for b, it in enumerate(items):
            n = it["input_values"].shape[0]
            values[b, :n] = it["input_values"]
            mask[b, :n] = it["attention_mask"]
        batch["input_values"], batch["attention_mask"] = values, mask
    else:
        batch["input_values"] = torch.stack([it["input_values"] for it in items])
    labels = [it["label"] for it in items]
    if isinstance(labels[0], torch.Tensor):
        batch["labels"] = torch.stack(labels).to(torch.float32)
    else:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch
