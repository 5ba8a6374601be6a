"""``AudioDataset`` (clips -> features on the fly) and its ``collate`` function.

Features are computed in ``__getitem__`` (no pre-pass), so augmentation and new datasets need
nothing else; a feature cache can wrap the dataset later.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .audio import clip_wave
from .cache import FeatureStore

__all__ = ["AudioDataset", "collate", "TASKS"]

TASKS = ("multiclass", "multilabel")


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
        cache: False (features on the fly), True (read them from the feature cache, computing
            the missing ones first; ``data.cache.FeatureStore``) or a ``FeatureStore``.
        cache_name: dataset name keying the cache store ("dataset").

    Item: ``{"input_values": [L, F] or [S], "attention_mask": [S] long (waveform only),
    "label": int or multi-hot [C] float, "index": int}``.
    """

    def __init__(
        self, clips, extractor, *, num_classes: int, task: str, augment=None, channel="mean",
        cache=False, cache_name: str = "dataset",
    ):  # fmt: skip
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if getattr(extractor, "input_kind", None) not in ("fbank", "waveform"):
            raise TypeError(
                f"extractor must have input_kind 'fbank' or 'waveform', got {extractor!r}"
            )
        self.clips = list(clips)
        self.extractor = extractor
        self.num_classes = num_classes
        self.task = task
        self.augment = augment
        self.channel = channel
        self.cache = None
        if cache is not False and cache is not None:
            store = cache if isinstance(cache, FeatureStore) else None
            if store is None:
                store = FeatureStore(cache_name, extractor, channel=channel)
            elif not store.matches(extractor, channel):
                raise ValueError(
                    f"AudioDataset: the given FeatureStore holds {store.config}, not the features "
                    f"of {extractor} with channel {channel!r}"
                )
            self._locations = store.locate(self.clips)
            self.cache = store

    def __len__(self) -> int:
        return len(self.clips)

    def load_wave(self, i: int) -> torch.Tensor:
        """Mono float32 ``[time]`` waveform of clip ``i`` at ``extractor.sample_rate``."""
        return clip_wave(self.clips[i], self.extractor.sample_rate, self.channel)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        item: dict = {"index": i}
        if self.cache is not None:
            stored = self.cache.read(self._locations[i])  # fbank [L, F] or resampled wave [S]
            feats = stored if self.extractor.input_kind == "fbank" else self.extractor(stored)
        else:
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
