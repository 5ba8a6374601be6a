"""clip_seconds: one clip length for every family (frames for AST, samples for waveform
models), exactly one of it and max_length, and a logged count of clips cut or padded."""

import logging

import pytest

import petl_kit as pk
from petl_kit.config import ConfigError
from petl_kit.data.clip_length import fit_counts, input_length


def test_seconds_become_the_familys_unit():
    assert input_length(None, 1.0, input_kind="fbank", sample_rate=16000) == 98  # Kaldi frames
    assert input_length(None, 0.5, input_kind="waveform", sample_rate=16000) == 8000
    assert input_length(100, None, input_kind="fbank", sample_rate=16000) == 100
    assert input_length(None, None, input_kind="waveform", sample_rate=16000) is None  # whole
    with pytest.raises(ConfigError, match="max_length = 100 and clip_seconds = 1.0: set exactly"):
        input_length(100, 1.0, input_kind="fbank", sample_rate=16000)
    with pytest.raises(ConfigError, match="fbank backbone needs max_length"):
        input_length(None, None, input_kind="fbank", sample_rate=16000)
    with pytest.raises(ConfigError, match="clip_seconds = -1"):
        input_length(None, -1, input_kind="waveform", sample_rate=16000)


def test_cut_and_padded_clips_are_counted():
    splits = pk.load_dataset("synthetic", n_per_class=2)  # 24 clips of 1 s at 16 kHz: 98 frames
    kind = {"input_kind": "fbank", "sample_rate": 16000}
    assert fit_counts(splits, 100, **kind) == {"cut": 0, "padded": 24, "exact": 0, "unknown": 0}
    assert fit_counts(splits, 98, **kind)["exact"] == 24
    assert fit_counts(splits, 50, **kind)["cut"] == 24
    wave = {"input_kind": "waveform", "sample_rate": 16000}
    assert (
        fit_counts(splits, 8000, **wave)["cut"] == 24
        and fit_counts(splits, None, **wave)["exact"] == 24
    )


def test_a_run_takes_clip_seconds(tmp_path, monkeypatch, caplog, tiny_checkpoints):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    params = dict(experiment="clips", method="linear", dataset="synthetic", data_path=None,
                  n_per_class=3, backbone="ast", checkpoint=str(tiny_checkpoints["ast"]),
                  max_length=None, clip_seconds=0.5, epochs=1, batch_size=8, lr=None, seed=0,
                  profile="corrected", device="cpu", progress=False)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="petl_kit"):
        result = pk.run_experiment(params)
    assert result.model.backbone.config.max_length == 48  # 0.5 s: 1 + (8000 - 400) // 160
    assert "clip length 48 frames: 36 clips cut, 0 padded" in caplog.text
    with pytest.raises(ConfigError, match="set exactly one"):
        pk.run_experiment({**params, "max_length": 100})


def test_splits_print_on_one_screen():
    splits = pk.load_dataset("synthetic", n_per_class=250)  # 3,000 clips
    text = repr(splits)
    assert len(text) < 400 and len(text.splitlines()) == 3
    assert "train 1800 / val 600 / test 600" in text and "16000 Hz" in text
    assert "tone, up_chirp" in text and "… (12)" in text and "n_per_class=250" in text
