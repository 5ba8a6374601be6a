"""load_audio / resample on real files: formats, rates, channels and every error case."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from petl_kit.data import AudioError, load_audio, resample


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_formats_read_as_stored_without_scaling(write_wav, subtype, sine):
    data = sine(0.5, 16000, amp=0.7)
    path = write_wav(f"x_{subtype}.wav", data, 16000, subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == torch.float32 and wave.shape == (8000,)
    expected = sf.read(str(path), dtype="float64")[0].astype(np.float32)
    assert torch.equal(wave, torch.from_numpy(expected))
    # No x2^15 scaling, no mean subtraction: values stay those written (within quantisation).
    tol = {"PCM_16": 1 / 2**15, "PCM_24": 1 / 2**23, "FLOAT": 0}[subtype]
    assert np.abs(wave.numpy() - data).max() <= tol
    if subtype == "PCM_16":
        assert np.all((wave.numpy() * 2**15) == np.round(wave.numpy() * 2**15))


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
def test_resampled_to_target_rate(write_wav, sr, sine):
    path = write_wav(f"r{sr}.wav", sine(1.25, sr, freq=1000.0), sr)
    wave = load_audio(path, 16000)
    n = int(round(1.25 * sr))
    assert wave.shape == (math.ceil(n * 16000 / sr),)
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    peak_hz = np.argmax(spectrum) * 16000 / len(wave)
    assert abs(peak_hz - 1000.0) < 2.0  # the tone keeps its pitch


def test_long_clip_and_downsample_to_other_rate(write_wav, sine):
    path = write_wav("long.wav", sine(12.0, 44100), 44100)
    assert load_audio(path, 24000).shape == (12 * 24000,)


def test_stereo_downmix_and_channel_pick(write_wav, sine):
    data = sine(0.25, 16000, channels=2)  # right channel = left / 2
    path = write_wav("st.wav", data, 16000, "FLOAT")
    left, right = load_audio(path, 16000, channel=0), load_audio(path, 16000, channel=1)
    mean = load_audio(path, 16000)
    assert torch.allclose(right, left / 2)
    assert torch.allclose(mean, (left + right) / 2)
    with pytest.raises(AudioError, match=r"st\.wav.*2 channel"):
        load_audio(path, 16000, channel=2)
    with pytest.raises(ValueError, match="channel must be"):
        load_audio(path, 16000, channel="left")


def test_expect_sample_rate(write_wav, sine):
    path = write_wav("r8.wav", sine(0.1, 8000), 8000)
    assert load_audio(path, 8000, expect_sample_rate=8000).shape == (800,)
    with pytest.raises(AudioError, match=r"r8\.wav.*8000 Hz, expected 16000 Hz"):
        load_audio(path, 16000, expect_sample_rate=16000)


def test_missing_corrupt_and_empty_files_name_the_file(tmp_path, write_wav):
    with pytest.raises(AudioError, match=r"not found: .*nope\.wav"):
        load_audio(tmp_path / "nope.wav", 16000)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"this is not a RIFF file at all" * 10)
    with pytest.raises(AudioError, match=r"cannot read audio file .*corrupt\.wav"):
        load_audio(bad, 16000)
    empty = write_wav("empty.wav", np.zeros(0, dtype=np.float32), 16000)
    assert sf.info(str(empty)).frames == 0  # a valid header with no frames
    with pytest.raises(AudioError, match=r"empty\.wav is empty \(0 frames\)"):
        load_audio(empty, 16000)


def test_resample_function():
    x = torch.randn(2, 4410)
    assert resample(x, 44100, 16000).shape == (2, 1600)
    assert resample(x, 16000, 16000) is x
    assert resample(np.zeros(800, dtype=np.float32), 8000, 16000).shape == (1600,)
    with pytest.raises(ValueError, match="orig_sr must be a positive integer"):
        resample(x, 0, 16000)
