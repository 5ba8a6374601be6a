"""Reading audio files: mono float32 waveforms at a chosen sample rate.

The reference pipeline (spec ``backbones_and_features.md`` §2) reads with ``soundfile`` as
float64 in [-1, 1] and casts to float32: no x2^15 scaling, no mean subtraction. It resamples with
``librosa.resample`` (``kaiser_best``); the kit uses ``torchaudio.functional.resample`` (windowed
sinc, Hann window, 6 zero crossings, rolloff 0.99) instead, which needs no librosa/resampy. The
two filters differ slightly (mostly near Nyquist), so resampled waveforms are close to, but not
bit-identical with, the reference's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from ..errors import AudioError
from .checks import check_finite, clip_name

__all__ = ["AudioError", "load_audio", "resample", "audio_info", "clip_wave"]


def _as_tensor(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, torch.Tensor):
        raise TypeError(
            f"expected a torch.Tensor or numpy array waveform, got {type(wave).__name__}"
        )
    return wave


def _check_rate(name: str, value: object) -> int:
    # bool is an int subclass; True as a sample rate is always a bug.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {value!r}")
    return int(value)


def resample(wave: torch.Tensor | np.ndarray, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last axis with ``torchaudio.functional.resample``.

    Args:
        wave: ``[..., time]`` float tensor (a numpy array is converted).
        orig_sr: current sample rate in Hz.
        new_sr: wanted sample rate in Hz.

    Returns:
        ``[..., ceil(time * new_sr / orig_sr)]``; the input itself when the rates are equal.
    """
    orig_sr = _check_rate("orig_sr", orig_sr)
    new_sr = _check_rate("new_sr", new_sr)
    wave = _as_tensor(wave)
    if not wave.is_floating_point():
        raise TypeError(f"resample needs a floating-point waveform, got dtype {wave.dtype}")
    if orig_sr == new_sr:
        return wave
    return taf.resample(wave, orig_sr, new_sr)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (``samplerate``, ``channels``, ``frames``, ``subtype``) without
    decoding it. Raises AudioError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err


def load_audio(
    path: str | Path,
    sample_rate: int,
    *,
    channel: str | int = "mean",
    expect_sample_rate: int | None = None,
) -> torch.Tensor:
    """Read an audio file as a mono float32 waveform at ``sample_rate``.

    Args:
        path: any file ``soundfile`` reads (WAV PCM_16/PCM_24/PCM_32/FLOAT, FLAC, OGG, ...).
        sample_rate: wanted rate in Hz; the file is resampled when its own rate differs.
        channel: ``"mean"`` averages all channels; an int picks one channel (0-based), e.g. 0 for
            the reference's UrbanSound8K handling.
        expect_sample_rate: if given, a file whose native rate differs is an error (for datasets
            whose reference code uses the audio as read, without resampling).

    Returns:
        ``[time]`` float32 tensor, values as stored (PCM scaled to [-1, 1)).

    Raises:
        AudioError: file missing, unreadable or corrupt, empty (0 frames), NaN or Inf samples,
            channel out of range, or native rate different from ``expect_sample_rate``. The
            message names the file.
    """
    sample_rate = _check_rate("sample_rate", sample_rate)
    if expect_sample_rate is not None:
        expect_sample_rate = _check_rate("expect_sample_rate", expect_sample_rate)
    if not (channel == "mean" or (isinstance(channel, int) and not isinstance(channel, bool))):
        raise ValueError(f"channel must be 'mean' or a 0-based channel index, got {channel!r}")

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        # float64 then float32, as the reference does; PCM_16/24 values are exact either way.
        data, file_sr = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from err

    n_frames, n_channels = data.shape
    if n_frames == 0:
        raise AudioError(f"audio file {path} is empty (0 frames)")
    check_finite(data, f"audio file {path}")  # a NaN clip would end as a NaN loss or metric
    if expect_sample_rate is not None and file_sr != expect_sample_rate:
        raise AudioError(
            f"audio file {path} has sample rate {file_sr} Hz, expected {expect_sample_rate} Hz"
        )

    if channel == "mean":
        mono = data.mean(axis=1)
    else:
        if not 0 <= channel < n_channels:
            raise AudioError(
                f"audio file {path} has {n_channels} channel(s); channel {channel} is out of range "
                f"(valid: 0..{n_channels - 1} or 'mean')"
            )
        mono = data[:, channel]

    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    return resample(wave, file_sr, sample_rate)


def clip_wave(clip, sample_rate: int, channel="mean") -> torch.Tensor:
    """Mono float32 ``[time]`` waveform of a :class:`~petl_kit.data.base.Clip` at
    ``sample_rate``: its in-memory array resampled, or its file loaded and resampled."""
    if isinstance(clip.source, np.ndarray):
        check_finite(clip.source, clip_name(clip))
        return resample(torch.from_numpy(clip.source), clip.sample_rate, sample_rate)
    return load_audio(clip.source, sample_rate, channel=channel)
