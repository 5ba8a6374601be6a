"""Model inputs from mono waveforms: AST log-mel fbanks, raw waveforms, SpecAugment.

Every extractor is a frozen dataclass with ``input_kind`` ("fbank" | "waveform") and the
``sample_rate`` its waveform must have; ``AudioDataset`` resamples to that rate before calling it.
Which extractor (and which options) a backbone family takes is a field of its record:
``petl_kit.backbones.feature_extractor_for(family)`` or ``model.feature_extractor()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from torchaudio.transforms import FrequencyMasking, TimeMasking

from .audio import AudioError

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "FbankExtractor",
    "WaveformExtractor",
    "SpecAugment",
]

# AudioSet log-mel statistics used by AST for every dataset (spec §2, step 5).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974


def _wave_1d(wave: torch.Tensor | np.ndarray, who: str) -> torch.Tensor:
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, torch.Tensor) or wave.dim() != 1:
        shape = tuple(wave.shape) if hasattr(wave, "shape") else type(wave).__name__
        raise ValueError(f"{who} expects a mono waveform of shape [time], got {shape}")
    if wave.numel() == 0:
        raise AudioError(f"{who} got an empty waveform (0 samples)")
    return wave.to(torch.float32)


def _positive_int(owner: str, name: str, value: object, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{owner}.{name} must be a positive integer{extra}, got {value!r}")


@dataclass(frozen=True)
class FbankExtractor:
    """AST input: Kaldi log-mel filterbank, padded/cropped to ``max_length`` frames, normalised.

    Same pipeline as the reference's ``ASTFeatureExtractor(max_length=L)`` (spec §2): 25 ms Hann
    windows every 10 ms, frames = 1 + (N - 400) // 160 for N samples (1 s -> 98); zero-pad at the
    end or keep the first ``max_length`` frames in the log-mel domain; then
    ``(x - mean) / (2 * std)``, so padded frames hold (0 - mean) / (2 std) = 0.46703.

    A waveform shorter than one window (400 samples at 16 kHz) is zero-padded at the end to one
    window, giving a single real frame, instead of failing inside Kaldi. An empty one is an error.

    Args (defaults):
        max_length: frames L (1024).
        num_mel_bins: mel bands F (128).
        sample_rate: Hz the waveform must have (16000).
        mean, std: normalisation statistics (AudioSet: -4.2677393, 4.5689974).

    Call: ``wave [time] -> [max_length, num_mel_bins]`` float32.
    """

    max_length: int = 1024
    num_mel_bins: int = 128
    sample_rate: int = 16000
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD

    input_kind: ClassVar[str] = "fbank"

    def __post_init__(self) -> None:
        for name in ("max_length", "num_mel_bins", "sample_rate"):
            _positive_int("FbankExtractor", name, getattr(self, name))
        if not float(self.std) > 0:
            raise ValueError(f"FbankExtractor.std must be > 0, got {self.std!r}")

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(L, F) of one example."""
        return (self.max_length, self.num_mel_bins)

    def _window(self) -> int:
        # Same arithmetic as torchaudio's Kaldi code (25 ms frame length).
        return int(self.sample_rate * 25.0 * 0.001)

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi produces for ``num_samples`` before padding (>= 1, see short clips)."""
        window, shift = self._window(), int(self.sample_rate * 10.0 * 0.001)
        return 1 + (max(num_samples, window) - window) // shift

    def log_mel(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Un-padded, un-normalised log-mel: ``[time] -> [frames, num_mel_bins]``."""
        wave = _wave_1d(wave, "FbankExtractor")
        window = self._window()
        if wave.numel() < window:
            wave = torch.nn.functional.pad(wave, (0, window - wave.numel()))
        return kaldi.fbank(
            wave[None],
            htk_compat=True,
            sample_frequency=self.sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=self.num_mel_bins,
            dither=0.0,
            frame_shift=10,
        )

    def __call__(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        fbank = self.log_mel(wave)
        n = fbank.shape[0]
        if n < self.max_length:
            # Padding happens before normalisation, as in the reference: pads become 0.46703.
            fbank = torch.nn.functional.pad(fbank, (0, 0, 0, self.max_length - n))
        else:
            fbank = fbank[: self.max_length]
        return ((fbank - self.mean) / (2 * self.std)).contiguous()


@dataclass(frozen=True)
class WaveformExtractor:
    """wav2vec2 / HuBERT / MERT input: the raw waveform, optionally cropped/padded and normalised.

    Args (defaults):
        max_samples: crop to the first ``max_samples`` or zero-pad at the end to it; None keeps the
            clip's length (the collate then right-pads each batch to its longest clip) (None).
        sample_rate: Hz the waveform must have (16000).
        normalize: zero-mean / unit-variance per clip, as ``Wav2Vec2FeatureExtractor`` (True).
        norm_over_padding: reference quirk R27. True: statistics over the padded vector, padding
            included (the HF processor called without an attention mask), so pads become non-zero.
            False: statistics over the valid samples only and padding stays 0.0 (False).

    Variance is the population variance plus eps 1e-7, as in HF's ``zero_mean_unit_var_norm``.

    Call: ``wave [time] -> (values [S] float32, attention_mask [S] long)``, S = ``max_samples`` or
    the clip length; the mask is 1 on real samples and 0 on padding, whatever ``norm_over_padding``.
    """

    max_samples: int | None = None
    sample_rate: int = 16000
    normalize: bool = True
    norm_over_padding: bool = False

    input_kind: ClassVar[str] = "waveform"

    def __post_init__(self) -> None:
        _positive_int("WaveformExtractor", "max_samples", self.max_samples, allow_none=True)
        _positive_int("WaveformExtractor", "sample_rate", self.sample_rate)
        for name in ("normalize", "norm_over_padding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"WaveformExtractor.{name} must be a bool, got {getattr(self, name)!r}"
                )

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)

    def __call__(self, wave: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        wave = _wave_1d(wave, "WaveformExtractor")
        if self.max_samples is not None:
            wave = wave[: self.max_samples]  # crop before normalising, as HF's truncation does
        n = wave.numel()
        size = n if self.max_samples is None else self.max_samples
        mask = torch.zeros(size, dtype=torch.long)
        mask[:n] = 1
        if self.normalize and not self.norm_over_padding:
            wave = self._norm(wave)
        values = torch.nn.functional.pad(wave, (0, size - n))
        if self.normalize and self.norm_over_padding:
            values = self._norm(values)
        return values, mask


class SpecAugment(torch.nn.Module):
    """One frequency mask and one time mask per example (AST / PETL_AST training augmentation).

    torchaudio ``FrequencyMasking(freq_mask)`` / ``TimeMasking(time_mask)`` semantics: width
    ~ floor(U * param), start uniform, masked cells set to 0.0. Meant for the *normalised* fbank,
    where 0.0 is the AudioSet mean. Randomness comes from torch's global RNG, so
    ``torch.manual_seed`` makes it reproducible. It masks in train and eval mode alike; the data
    loaders attach it to the train split only.

    Args (defaults): freq_mask (24), time_mask (80); 0 disables that mask.

    Forward: ``[L, F]`` or ``[B, L, F]`` (each example its own masks) -> same shape, new tensor.
    """

    def __init__(self, freq_mask: int = 24, time_mask: int = 80) -> None:
        super().__init__()
        for name, value in (("freq_mask", freq_mask), ("time_mask", time_mask)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugment.{name} must be an integer >= 0, got {value!r}")
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self._freq = FrequencyMasking(freq_mask)
        self._time = TimeMasking(time_mask)

    def extra_repr(self) -> str:
        return f"freq_mask={self.freq_mask}, time_mask={self.time_mask}"

    def _one(self, feats: torch.Tensor) -> torch.Tensor:
        spec = feats.transpose(0, 1)  # torchaudio masks (freq, time); our features are (time, freq)
        spec = self._freq(spec, 0.0)
        spec = self._time(spec, 0.0)
        return spec.transpose(0, 1).contiguous()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() == 2:
            return self._one(feats)
        if feats.dim() == 3:
            return torch.stack([self._one(x) for x in feats])
        raise ValueError(
            f"SpecAugment expects [L, F] or [B, L, F] features, got {tuple(feats.shape)}"
        )
