"""Fbank / waveform extractors against the formulas and the Hugging Face extractors; SpecAugment."""

import numpy as np
import pytest
import torch

from petl_kit.backbones import feature_extractor_for
from petl_kit.data import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    AudioError,
    FbankExtractor,
    SpecAugment,
    WaveformExtractor,
)

PAD = (0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)


def noise(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32))


@pytest.mark.parametrize("n, frames", [(16000, 98), (64000, 398), (400, 1), (559, 1), (560, 2)])
def test_frame_count_formula(n, frames):
    ex = FbankExtractor(max_length=16)
    assert ex.log_mel(noise(n)).shape == (frames, 128)
    assert ex.num_frames(n) == frames == 1 + (n - 400) // 160


def test_padding_value_and_truncation():
    wave = noise(16000)
    ex = FbankExtractor(max_length=120)
    feats = ex(wave)
    assert feats.shape == (120, 128) == ex.feature_shape and feats.dtype == torch.float32
    assert abs(PAD - 0.46703) < 1e-5
    assert torch.all(feats[98:] == torch.tensor(PAD, dtype=torch.float32))
    assert not torch.any(feats[:98] == torch.tensor(PAD, dtype=torch.float32))
    raw = ex.log_mel(wave)
    short = FbankExtractor(max_length=50)(wave)
    assert torch.allclose(
        short, (raw[:50] - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    )  # first frames kept


def test_short_clip_is_padded_to_one_frame_and_empty_is_an_error():
    feats = FbankExtractor(max_length=10)(noise(250))
    assert feats.shape == (10, 128)
    assert not torch.all(feats[0] == PAD) and torch.all(feats[1:] == torch.tensor(PAD))
    with pytest.raises(AudioError, match="empty waveform"):
        FbankExtractor()(torch.zeros(0))
    with pytest.raises(ValueError, match=r"mono waveform of shape \[time\]"):
        FbankExtractor()(torch.zeros(2, 16000))


@pytest.mark.parametrize("max_length", [64, 100, 300])
def test_matches_huggingface_ast_feature_extractor(max_length):
    from transformers import ASTFeatureExtractor

    wave = (noise(16000) + 0.3 * torch.sin(torch.arange(16000) * 0.2)).numpy()
    hf = ASTFeatureExtractor(max_length=max_length)(wave, sampling_rate=16000, return_tensors="pt")
    ours = FbankExtractor(max_length=max_length)(wave)
    # HF calls the same Kaldi fbank (htk_compat only matters with use_energy; dither defaults to 0).
    assert torch.equal(hf["input_values"][0], ours)


def test_waveform_normalisation_over_valid_samples():
    x = noise(12000) + 0.05
    values, mask = WaveformExtractor(max_samples=16000)(x)
    assert values.shape == mask.shape == (16000,) and mask.dtype == torch.long
    assert mask[:12000].all() and not mask[12000:].any()
    assert torch.all(values[12000:] == 0)
    assert abs(values[:12000].mean().item()) < 1e-5 and abs(values[:12000].std().item() - 1) < 1e-3


def test_waveform_matches_huggingface_processor_both_ways():
    from transformers import Wav2Vec2FeatureExtractor

    x = (noise(12000) + 0.05).numpy()
    kwargs = dict(
        sampling_rate=16000,
        padding="max_length",
        max_length=16000,
        truncation=True,
        return_tensors="pt",
    )
    no_mask = Wav2Vec2FeatureExtractor(return_attention_mask=False)(x, **kwargs)["input_values"][0]
    quirk, _ = WaveformExtractor(max_samples=16000, norm_over_padding=True)(x)
    assert torch.allclose(no_mask, quirk, atol=1e-6)  # R27: stats over the padded vector
    assert quirk[12000:].abs().min() > 0
    masked = Wav2Vec2FeatureExtractor(return_attention_mask=True)(x, **kwargs)
    ours, mask = WaveformExtractor(max_samples=16000)(x)
    assert torch.allclose(masked["input_values"][0], ours, atol=1e-6)
    assert torch.equal(masked["attention_mask"][0].long(), mask)


def test_waveform_crop_keep_and_raw():
    x = noise(20000)
    values, mask = WaveformExtractor(max_samples=16000, normalize=False)(x)
    assert torch.equal(values, x[:16000]) and mask.all()
    values, mask = WaveformExtractor(normalize=False)(x)
    assert torch.equal(values, x) and mask.shape == (20000,)


def test_spec_augment_masks_with_zero_and_is_seeded():
    feats = FbankExtractor(max_length=200)(noise(32000)) + 5.0  # no natural zeros
    aug = SpecAugment(freq_mask=24, time_mask=80)
    torch.manual_seed(3)
    a = aug(feats)
    torch.manual_seed(3)
    b = aug(feats)
    assert torch.equal(a, b) and a.shape == feats.shape
    zero = a == 0
    full_cols = zero.all(dim=0).sum().item()  # masked mel bins
    full_rows = zero.all(dim=1).sum().item()  # masked frames
    assert full_cols < 24 and full_rows < 80
    assert torch.equal(zero, zero.all(0, keepdim=True) | zero.all(1, keepdim=True))
    counts = []
    for seed in range(20):
        torch.manual_seed(seed)
        counts.append((aug(feats) == 0).sum().item())
    assert max(counts) > 0  # masks do get applied
    assert aug(feats[None].repeat(3, 1, 1)).shape == (3, 200, 128)


def test_feature_extractor_for_families():
    assert feature_extractor_for("ast") == FbankExtractor()
    assert feature_extractor_for("AST", max_length=400).feature_shape == (400, 128)
    assert feature_extractor_for("wav2vec2") == WaveformExtractor(sample_rate=16000)
    assert feature_extractor_for("hubert", max_samples=16000).max_samples == 16000
    mert = feature_extractor_for("mert")  # as model.feature_extractor(): HuBERT's normalisation
    assert mert.sample_rate == 24000 and mert.normalize is True and mert.input_kind == "waveform"
    musicfm = feature_extractor_for("musicfm")  # normalises its own mel, not the waveform
    assert musicfm.sample_rate == 24000 and musicfm.normalize is False
    with pytest.raises(ValueError, match=r"unknown backbone 'whisper'.*ast, wav2vec2"):
        feature_extractor_for("whisper")
    with pytest.raises(TypeError, match=r"no option\(s\) \['n_mels'\].*num_mel_bins"):
        feature_extractor_for("ast", n_mels=64)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        FbankExtractor(max_length=0)
