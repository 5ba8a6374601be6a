"""Clip length in seconds, whatever the backbone family, and how many clips it cuts or pads.

``max_length`` counts fbank frames for AST (10 ms each) and samples for waveform models; the run
parameter ``clip_seconds`` says the same once for every family. Exactly one of them is set; the
seconds become the family's unit through its input kind and sample rate::

    input_length(None, 1.0, input_kind="fbank", sample_rate=16000)      # 98 frames
    input_length(None, 1.0, input_kind="waveform", sample_rate=16000)   # 16000 samples
    fit_counts(splits, 98, input_kind="fbank", sample_rate=16000)
    # {'cut': 0, 'padded': 12, 'exact': 948, 'unknown': 0}
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import ConfigError

log = logging.getLogger("petl_kit")


def input_length(
    max_length: int | None, clip_seconds: float | None, *, input_kind: str, sample_rate: int
) -> int | None:
    """The extractor's length (fbank frames or samples) from exactly one of ``max_length`` and
    ``clip_seconds``. Waveform models may leave both None (whole clips).

    Raises:
        ConfigError when both are set, when an fbank model gets neither, or for a length <= 0.
    """
    if max_length is not None and clip_seconds is not None:
        raise ConfigError(
            f"max_length = {max_length} and clip_seconds = {clip_seconds}: set exactly one "
            "(max_length: None to give the length in seconds)"
        )
    if clip_seconds is None:
        if max_length is None and input_kind == "fbank":
            raise ConfigError("an fbank backbone needs max_length (frames) or clip_seconds")
        return max_length
    if not clip_seconds > 0:
        raise ConfigError(f"clip_seconds = {clip_seconds!r}: expected a length > 0 in seconds")
    samples = int(round(clip_seconds * sample_rate))
    if input_kind != "fbank":
        return samples
    from .features import FbankExtractor

    return FbankExtractor(sample_rate=sample_rate).num_frames(samples)


def _num_samples(clip, sample_rate: int) -> int | None:
    """A clip's length in samples at ``sample_rate`` (files: from their header), None if unread."""
    import numpy as np

    from .audio import audio_info

    if isinstance(clip.source, np.ndarray):
        return int(round(len(clip.source) * sample_rate / clip.sample_rate))
    try:
        info = audio_info(clip.source)
    except Exception:  # noqa: BLE001 - an unreadable header is counted, the loader will say why
        return None
    return int(round(info.frames * sample_rate / info.samplerate))


def fit_counts(splits, length: int | None, *, input_kind: str, sample_rate: int) -> dict[str, int]:
    """How many clips of all splits ``length`` (frames or samples) cuts, pads, or fits exactly;
    ``unknown``: clips whose length could not be read. ``length`` None: whole clips (all exact)."""
    from .features import FbankExtractor

    counts = {"cut": 0, "padded": 0, "exact": 0, "unknown": 0}
    fbank = FbankExtractor(sample_rate=sample_rate) if input_kind == "fbank" else None
    for split in ("train", "val", "test"):
        for clip in splits.split(split):
            n = _num_samples(clip, sample_rate)
            if n is None:
                counts["unknown"] += 1
                continue
            size = fbank.num_frames(n) if fbank is not None else n
            if length is None or size == length:
                counts["exact"] += 1
            else:
                counts["cut" if size > length else "padded"] += 1
    return counts


def run_length(params: dict[str, Any], splits, *, input_kind: str, sample_rate: int) -> int | None:
    """A run's extractor length from its ``max_length`` / ``clip_seconds`` (:func:`input_length`);
    logs how many clips it cuts or pads and returns the length."""
    length = input_length(params.get("max_length"), params.get("clip_seconds"),
                          input_kind=input_kind, sample_rate=sample_rate)  # fmt: skip
    counts = fit_counts(splits, length, input_kind=input_kind, sample_rate=sample_rate)
    unit = "frames" if input_kind == "fbank" else "samples"
    # cut clips lose audio: a warning; padded or exact ones are only worth an info line
    (log.warning if counts["cut"] else log.info)(
        "clip length %s %s: %d clips cut, %d padded, %d exact%s", length, unit, counts["cut"],
        counts["padded"], counts["exact"],
        f", {counts['unknown']} unread" if counts["unknown"] else "",
    )  # fmt: skip
    return length
