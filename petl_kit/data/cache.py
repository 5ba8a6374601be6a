"""Feature cache: model inputs computed once per dataset and feature configuration, memory-mapped.

The reference computes every fbank when a dataset is built and keeps it in memory (R23); the kit
computes features on the fly by default and, with ``cache=True``, stores them on disk once::

    <cache_dir()>/features/<dataset>-<store key>/
        store.json                    dataset name, extractor config, channel, cache version
        shard-<ids key>.npy           fbank: [n, L, F] float32; waveform: flat [Σ samples] float32
        shard-<ids key>.offsets.npy   waveform stores: [n + 1] int64 row starts
        shard-<ids key>.json          the n clip identities in row order (written last = commit)

Store key = hash(dataset name, extractor config incl. sample rate, channel, version); shard key =
hash(the ordered clip identities: absolute path + mtime + size, or the array's content hash). A
changed file has a new identity and is recomputed; any changed feature parameter opens another
store. Shards are read with ``np.load(mmap_mode="r")``; every split, fold and few-shot episode of
a dataset finds its clips in the same store, so CV computes each clip once.

Fbank stores hold the final ``[L, F]`` features; waveform stores hold the mono waveform after
resampling, and the ``WaveformExtractor`` (crop / pad / normalise) runs on read, so its
``max_samples`` and ``normalize`` do not key the store. SpecAugment always stays on the fly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import AudioError
from .audio import clip_wave
from .checks import check_finite, clip_name

__all__ = ["CACHE_VERSION", "FeatureStore", "cache_dir", "clear_cache", "clip_identity"]

CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$PETL_KIT_CACHE`` if set, else ``~/.cache/petl_kit``."""
    env = os.environ.get("PETL_KIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "petl_kit"


def _hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=10).hexdigest()


def clip_identity(clip) -> str:
    """What makes a clip's features: ``path|mtime_ns|size|rate`` for files (path resolved), the
    content hash for in-memory arrays."""
    if isinstance(clip.source, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(clip.source).tobytes(), digest_size=16)
        return f"array:{digest.hexdigest()}|{clip.sample_rate}"
    path = Path(clip.source).resolve()
    try:
        st = path.stat()
    except FileNotFoundError as err:
        raise AudioError(f"audio file not found: {path}") from err
    return f"{path}|{st.st_mtime_ns}|{st.st_size}|{clip.sample_rate}"


class _Compute(Dataset):
    """Clip i -> its stored array (fbank features or the resampled waveform), for the build."""

    def __init__(self, clips, extractor, channel, kind):
        self.clips, self.extractor, self.channel, self.kind = clips, extractor, channel, kind

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        wave = clip_wave(self.clips[i], self.extractor.sample_rate, self.channel)
        arr = (self.extractor(wave) if self.kind == "fbank" else wave).numpy()
        # stored features are reused by every later run: never store a NaN
        check_finite(arr, f"features of {clip_name(self.clips[i])}")
        return arr


class FeatureStore:
    """One dataset's features for one extractor configuration (module docstring).

    Args:
        name: dataset name (keys the store and names its folder).
        extractor: ``FbankExtractor`` or ``WaveformExtractor``.
        channel: the down-mix files are loaded with ("mean" or a channel index).
        root: the cache folder (default :func:`cache_dir`).
        dtype: stored dtype ("float32"; "float16" halves the disk for ~1e-3 relative error).
    """

    def __init__(self, name: str, extractor, *, channel="mean", root=None, dtype="float32"):
        self.kind = extractor.input_kind
        self.extractor = extractor
        self.channel = channel
        self.dtype = np.dtype(dtype)
        if self.kind == "fbank":
            config = {"extractor": type(extractor).__name__, **dataclasses.asdict(extractor)}
        else:  # the extractor runs on read; only the rate the waveform was resampled to counts
            config = {"waveform_sample_rate": extractor.sample_rate}
        self.config = {
            "dataset": name,
            "kind": self.kind,
            "channel": channel,
            **config,
            "dtype": self.dtype.name,
            "version": CACHE_VERSION,
        }
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "dataset"
        self.folder = Path(root or cache_dir()) / "features" / f"{safe}-{_hash(self.config)}"
        self._index: dict[str, tuple[str, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.refresh()

    def matches(self, extractor, channel) -> bool:
        """Does this store hold what ``extractor`` reading files with ``channel`` needs?"""
        if extractor.input_kind != self.kind or channel != self.channel:
            return False
        if self.kind == "fbank":
            return extractor == self.extractor
        return extractor.sample_rate == self.extractor.sample_rate

    def __getstate__(self):  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_arrays": {}}

    def refresh(self) -> None:
        """Re-read the committed shards' identity lists."""
        for meta in sorted(self.folder.glob("shard-*.json")) if self.folder.is_dir() else []:
            for row, ident in enumerate(json.loads(meta.read_text())["ids"]):
                self._index.setdefault(ident, (meta.stem, row))

    def locate(
        self, clips, *, num_workers: int = 0, progress: bool = True
    ) -> list[tuple[str, int]]:
        """(shard, row) of every clip; clips not yet stored are computed into a new shard first.

        Raises AudioError naming the file when a clip cannot be read (missing, corrupt, empty).
        """
        ids = [clip_identity(c) for c in clips]
        if any(ident not in self._index for ident in ids):
            self.refresh()  # another process may have built them meanwhile
        firsts: dict[str, int] = {}  # one row per missing identity, first occurrence
        for i, ident in enumerate(ids):
            if ident not in self._index:
                firsts.setdefault(ident, i)
        if firsts:
            self._build([clips[i] for i in firsts.values()], list(firsts), num_workers, progress)
        return [self._index[ident] for ident in ids]

    def _build(self, clips, ids, num_workers, progress) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "store.json").write_text(json.dumps(self.config, indent=2, default=str))
        stem = f"shard-{_hash(ids)}"
        loader = DataLoader(
            _Compute(clips, self.extractor, self.channel, self.kind),
            batch_size=None,
            num_workers=num_workers,
        )
        bar = tqdm(loader, desc=f"caching {self.config['dataset']} features", disable=not progress)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=self.folder))
        try:
            if self.kind == "fbank":
                shape = (len(clips), *self.extractor.feature_shape)
                out = np.lib.format.open_memmap(
                    tmp / "x.npy", mode="w+", dtype=self.dtype, shape=shape
                )
                for i, arr in enumerate(bar):
                    out[i] = arr
                out.flush()
                del out
            else:  # variable lengths: append raw, then wrap as .npy
                offsets = [0]
                with open(tmp / "raw", "wb") as fh:
                    for arr in bar:
                        fh.write(np.asarray(arr, dtype=self.dtype).tobytes())
                        offsets.append(offsets[-1] + len(arr))
                raw = np.memmap(tmp / "raw", dtype=self.dtype, mode="r", shape=(offsets[-1],))
                out = np.lib.format.open_memmap(
                    tmp / "x.npy", mode="w+", dtype=self.dtype, shape=(offsets[-1],)
                )
                for start in range(0, offsets[-1], 1 << 24):
                    out[start : start + (1 << 24)] = raw[start : start + (1 << 24)]
                out.flush()
                del out, raw
                np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
                os.replace(tmp / "offsets.npy", self.folder / f"{stem}.offsets.npy")
            os.replace(tmp / "x.npy", self.folder / f"{stem}.npy")
            manifest = {"ids": ids, "n": len(ids), "config": self.config}
            (tmp / "m.json").write_text(json.dumps(manifest))
            os.replace(tmp / "m.json", self.folder / f"{stem}.json")  # commit
        finally:
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
        for row, ident in enumerate(ids):
            self._index.setdefault(ident, (stem, row))

    def read(self, loc: tuple[str, int]) -> torch.Tensor:
        """The stored array of one clip: ``[L, F]`` fbank or ``[time]`` waveform (a copy)."""
        stem, row = loc
        if stem not in self._arrays:
            data = np.load(self.folder / f"{stem}.npy", mmap_mode="r")
            offsets = None
            if self.kind == "waveform":
                offsets = np.load(self.folder / f"{stem}.offsets.npy")
            self._arrays[stem] = (data, offsets)
        data, offsets = self._arrays[stem]
        arr = data[row] if offsets is None else data[offsets[row] : offsets[row + 1]]
        return torch.from_numpy(np.array(arr, dtype=np.float32))

    def size_bytes(self) -> int:
        return (
            sum(f.stat().st_size for f in self.folder.glob("shard-*"))
            if self.folder.is_dir()
            else 0
        )


def clear_cache(kind: str = "features", root=None) -> int:
    """Delete ``<cache>/<kind>/`` ("features" or "backbone_outputs"); returns bytes freed."""
    import shutil

    folder = Path(root or cache_dir()) / kind
    freed = (
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    )
    shutil.rmtree(folder, ignore_errors=True)
    return freed
