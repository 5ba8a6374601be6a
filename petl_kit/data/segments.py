"""The segment protocol of the music tasks (spec ``datasets_and_protocols.md`` §7.6).

Long clips (30-s tags, 120-s keys) are not fed whole to a waveform transformer:

* train: one random crop of ``train_crop`` samples per clip per epoch (None: the whole clip);
* val/test: each clip cut into ⌊T / eval_segment⌋ non-overlapping segments, the remainder
  dropped; ``metrics.evaluate`` averages the segment probabilities per clip;
* ``val_crop="random"`` (music reference, M12): validation gets one random crop per clip like
  train, instead of the test's deterministic segments (``"segments"``, corrected).

Lengths are in samples at the extractor's rate (MERT/MusicFM: 24 kHz); e.g. a 698,976-sample
MTAT clip gives 5 segments of 120,000 (MERT) and 1 of 698,976 (MusicFM).
"""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, get_worker_info

from .audio import AudioError, audio_info
from .dataset import AudioDataset, collate

__all__ = ["VAL_CROPS", "SegmentDataset", "clip_length", "collate_segments", "num_segments"]

VAL_CROPS = ("segments", "random")


def check_length(name: str, value) -> int | None:
    """``value`` as a positive sample count, or None; the error names ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of samples or None, got {value!r}")
    return int(value)


def num_segments(length: int, segment: int) -> int:
    """⌊length / segment⌋ non-overlapping segments, remainder dropped, as the reference test.

    A clip shorter than one segment still gives 1 (the whole clip, padded by the extractor or
    the collate), where the reference would silently drop it from the test set.
    """
    return max(1, int(length) // int(segment))


def clip_length(clip, sample_rate: int) -> int:
    """Samples of ``clip`` once resampled to ``sample_rate`` (file header only, no decoding):
    ⌈frames · sample_rate / native rate⌉, the length ``torchaudio``'s resampler gives."""
    if isinstance(clip.source, np.ndarray):
        frames, native = len(clip.source), clip.sample_rate
    else:
        info = audio_info(clip.source)
        frames, native = info.frames, info.samplerate
    return frames if native == sample_rate else math.ceil(frames * sample_rate / native)


class SegmentDataset(Dataset):
    """Cropped or segmented items of an :class:`AudioDataset` (module docstring).

    Args:
        base: the clips, extractor, labels, channel and cache to read.
        mode: ``"crop"`` (one random ``length``-sample crop per clip and draw; a clip not longer
            than ``length`` is used whole) or ``"segments"`` (one item per segment of ``length``).
        length: samples at ``base.extractor.sample_rate``.
        seed: seeds the crops; items differ from draw to draw and, in DataLoader workers, with
            the loader's per-epoch worker seeds.

    Item: the ``AudioDataset`` item of the piece (``index`` = the clip's position), plus
    ``clip_index`` in ``"segments"`` mode. Batch segments with :func:`collate_segments`.
    """

    def __init__(self, base: AudioDataset, *, mode: str, length: int, seed: int = 0):
        if mode not in ("crop", "segments"):
            raise ValueError(f"SegmentDataset mode must be 'crop' or 'segments', got {mode!r}")
        self.length = check_length("segment length", length)
        if self.length is None:
            raise ValueError("SegmentDataset needs a length in samples")
        if base.cache is not None and base.extractor.input_kind != "waveform":
            raise ValueError(
                "crops and segments cut waveforms, but the fbank cache holds whole-clip features; "
                "use cache=False with train_crop / eval_segment on an fbank backbone"
            )
        self.base, self.mode, self.seed = base, mode, int(seed)
        self._draws = np.zeros(len(base), dtype=np.int64)
        self.items: list[tuple[int, int]] = [(i, 0) for i in range(len(base))]
        if mode == "segments":
            sr = base.extractor.sample_rate
            counts = [num_segments(clip_length(c, sr), self.length) for c in base.clips]
            self.items = [(i, k) for i, n in enumerate(counts) for k in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def _crop_start(self, i: int, total: int) -> int:
        if total <= self.length:
            return 0
        worker = get_worker_info()
        # a worker process gets a fresh seed from the loader every epoch; the main process
        # counts its own draws, so every epoch crops anew and a rerun crops alike
        base_seed = torch.initial_seed() if worker is not None else self.seed
        rng = np.random.default_rng([base_seed % 2**63, i, int(self._draws[i])])
        self._draws[i] += 1
        return int(rng.integers(0, total - self.length + 1))

    def read(self, i: int, start: int, stop: int | None) -> torch.Tensor:
        """Samples ``start:stop`` of clip ``i`` at the extractor's rate, mono float32 ``[time]``.

        A file at the extractor's rate is read partially (only the span is decoded); any other
        source is loaded whole (resampled, or from the cache) and sliced."""
        base, clip = self.base, self.base.clips[i]
        if base.cache is not None:
            return base.cache.read(base._locations[i])[start:stop]
        if isinstance(clip.source, np.ndarray):
            return base.load_wave(i)[start:stop]
        info = audio_info(clip.source)
        if info.samplerate != base.extractor.sample_rate:
            return base.load_wave(i)[start:stop]
        try:
            data, _ = sf.read(str(clip.source), start=start, stop=stop, dtype="float64",
                              always_2d=True)  # fmt: skip
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"cannot read audio file {clip.source}: {err}") from err
        if base.channel == "mean":
            mono = data.mean(axis=1)
        elif 0 <= base.channel < data.shape[1]:
            mono = data[:, base.channel]
        else:
            raise AudioError(
                f"audio file {clip.source} has {data.shape[1]} channel(s); channel "
                f"{base.channel} is out of range"
            )
        return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))

    def __getitem__(self, n: int) -> dict:
        i, k = self.items[n]
        if self.mode == "segments":
            start = k * self.length
        else:
            rate = self.base.extractor.sample_rate
            start = self._crop_start(i, clip_length(self.base.clips[i], rate))
        item = _item(self.base, i, self.read(i, start, start + self.length))
        if self.mode == "segments":
            item["clip_index"] = i
        return item


def _item(base: AudioDataset, i: int, wave: torch.Tensor) -> dict:
    """``AudioDataset.__getitem__`` for an already-read waveform."""
    item: dict = {"index": i}
    feats = base.extractor(wave)
    if base.extractor.input_kind == "waveform":
        item["input_values"], item["attention_mask"] = feats
    else:
        item["input_values"] = feats
    if base.augment is not None:
        item["input_values"] = base.augment(item["input_values"])
    clip = base.clips[i]
    if base.task == "multilabel":
        item["label"] = torch.zeros(base.num_classes, dtype=torch.float32)
        item["label"][clip.labels] = 1.0
    else:
        item["label"] = clip.label
    return item


def collate_segments(items: list[dict]) -> dict[str, torch.Tensor]:
    """``collate`` plus ``clip_index`` ``[B]`` long, which clip each segment belongs to."""
    batch = collate(items)
    batch["clip_index"] = torch.tensor([it["clip_index"] for it in items], dtype=torch.long)
    return batch
