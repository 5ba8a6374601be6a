"""Fixtures for the data-layer tests: real audio files written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _sine(
    seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5, channels: int = 1
) -> np.ndarray:
    """[time] (mono) or [time, channels] float32; channel c has amplitude amp / (c + 1)."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def sine():
    """sine(seconds, sr, freq=440, amp=0.5, channels=1) -> float32 [time] or [time, channels]."""
    return _sine


@pytest.fixture
def write_wav(tmp_path: Path):
    """write_wav(name, data, sr, subtype="PCM_16") -> Path under tmp_path (folders created)."""

    def _write(name: str, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, sr, subtype=subtype)
        return path

    return _write
