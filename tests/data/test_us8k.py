"""UrbanSound8K loader on a miniature tree (metadata/UrbanSound8K.csv + audio/fold<k>/)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from petl_kit.config import ConfigError
from petl_kit.data import AudioDataset, DatasetError, FbankExtractor, load_dataset, resample
from petl_kit.data.us8k import US8K_CLASSES, load_us8k

HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class"
USED = [("air_conditioner", 0), ("dog_bark", 3), ("street_music", 9)]
# (rate, channels, subtype) cycled over the files: the real set mixes all of these.
FORMATS = [(44100, 1, "PCM_16"), (22050, 2, "PCM_24"), (48000, 2, "PCM_16"), (8000, 1, "PCM_24")]


def _stereo(seconds, sr):
    t = np.arange(int(round(seconds * sr))) / sr
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    right = 0.2 * np.sin(2 * np.pi * 1200 * t)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.fixture
def us8k_tree(tmp_path):
    """data_path/UrbanSound8K: 10 folds x 3 classes x 1 clip, mixed rates / channels / bits."""
    root = tmp_path / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    rows, n = [HEADER], 0
    for fold in range(1, 11):
        (root / "audio" / f"fold{fold}").mkdir(parents=True)
        for cls, cid in USED:
            sr, ch, subtype = FORMATS[n % len(FORMATS)]
            seconds = 0.05
            if (fold, cid) == (10, 3):  # a full-length stereo 24-bit slice
                sr, ch, subtype, seconds = 22050, 2, "PCM_24", 4.0
            data = _stereo(seconds, sr)
            name = f"{1000 + n}-{cid}-0-{fold}.wav"
            sf.write(root / "audio" / f"fold{fold}" / name, data if ch == 2 else data[:, 0], sr,
                     subtype=subtype)  # fmt: skip
            rows.append(f"{name},{1000 + n},0.0,{seconds},1,{fold},{cid},{cls}")
            n += 1
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _folds(clips):
    return sorted({c.meta["fold"] for c in clips})


def test_labels_in_official_classid_order(us8k_tree):
    s = load_us8k(us8k_tree)
    assert s.classes == US8K_CLASSES and s.classes[3] == "dog_bark" and len(s.classes) == 10
    for c in s.train + s.test:
        assert c.label == int(c.meta["filename"].split("-")[1])


@pytest.mark.parametrize("run", range(10))
def test_reference_runs_test_on_10_1_2_and_validate_on_the_test_fold(us8k_tree, run):
    s = load_dataset("us8k", us8k_tree, fold=run, profile="reference")
    test = [10, 1, 2, 3, 4, 5, 6, 7, 8, 9][run]
    assert _folds(s.test) == [test] and _folds(s.train) == [f for f in range(1, 11) if f != test]
    assert [c.source for c in s.val] == [c.source for c in s.test]  # R21
    assert s.info["train_folds"][0] == test % 10 + 1  # ring order: [1..9], [2..10], [3..10, 1]
    assert s.info["us8k_protocol"] == "test_as_val" and s.info["val_is_test"]
    assert s.sizes() == {"train": 27, "val": 3, "test": 3}


def test_corrected_runs_never_select_on_the_test_fold(us8k_tree):
    s = load_us8k(us8k_tree, fold=0)
    assert _folds(s.test) == [1] and s.val == [] and _folds(s.train) == list(range(2, 11))
    s = load_us8k(us8k_tree, fold=9, val_fraction=0.2, seed=0)
    assert _folds(s.test) == [10] and 10 not in _folds(s.val) and len(s.val) == 6
    assert sorted(c.label for c in s.val) == [0, 0, 3, 3, 9, 9]
    assert s.info["us8k_protocol"] == "no_test_selection" and not s.info["val_is_test"]
    over = load_us8k(us8k_tree, fold=0, us8k_protocol="test_as_val")
    assert _folds(over.test) == [10] and over.info["profile"] == "corrected"


def test_channel_0_is_taken_and_audio_resampled_to_16k(us8k_tree):
    s = load_us8k(us8k_tree, fold=0, profile="reference")  # tests fold 10 (has the 4-s clip)
    ex = FbankExtractor(max_length=400)
    ds = AudioDataset(s.test, ex, num_classes=10, task="multiclass", channel=s.channel)
    assert s.channel == 0
    i = next(i for i, c in enumerate(s.test) if c.label == 3)
    path = s.test[i].source
    data, sr = sf.read(path, dtype="float64", always_2d=True)
    assert data.shape[1] == 2 and sr != 16000
    expected = resample(torch.from_numpy(data[:, 0].astype(np.float32)), sr, 16000)
    assert torch.equal(ds.load_wave(i), expected)  # left channel only, not the mean
    assert ds.load_wave(i).shape[0] == 64000  # 4 s -> 398 frames, padded to 400
    feats = ds[i]["input_values"]
    assert feats.shape == (400, 128) and torch.allclose(
        feats[398:], torch.tensor(0.46703), atol=1e-4
    )
    mean = AudioDataset(s.test, ex, num_classes=10, task="multiclass", channel="mean")
    assert not torch.equal(mean.load_wave(i), ds.load_wave(i))
    assert load_us8k(us8k_tree, channel="mean").channel == "mean"


def test_every_format_loads(us8k_tree):
    s = load_us8k(us8k_tree, fold=3)
    ds = AudioDataset(s.train, FbankExtractor(max_length=8), num_classes=10, task="multiclass",
                      channel=0)  # fmt: skip
    rates = {r: 0 for r, *_ in FORMATS}
    for i, c in enumerate(s.train):
        rates[sf.info(c.source).samplerate] += 1
        assert ds[i]["input_values"].shape == (8, 128)
    assert all(rates.values())


def test_errors_name_the_culprit(us8k_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="UrbanSound8K.csv"):
        load_us8k(tmp_path / "UrbanSound8K" / "audio")
    for bad in (10, -1):
        with pytest.raises(DatasetError, match=f"fold {bad} does not exist"):
            load_us8k(us8k_tree, fold=bad)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_us8k(us8k_tree, profile="reference", val_fraction=0.1)
    meta = us8k_tree / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv"
    text = meta.read_text()
    meta.write_text(text + "404-3-0-2.wav,404,0,1,1,2,3,dog_bark\n")
    with pytest.raises(FileNotFoundError, match=r"fold2/404-3-0-2\.wav"):
        load_us8k(us8k_tree)
    meta.write_text(text + "1000-0-0-1.wav,1000,0,1,1,1,0,cat_meow\n")
    with pytest.raises(DatasetError, match="line 32 has unknown label 'cat_meow'"):
        load_us8k(us8k_tree)
    meta.write_text(text + "1000-0-0-1.wav,1000,0,1,1,1,5,air_conditioner\n")
    with pytest.raises(DatasetError, match="classID 5 disagrees"):
        load_us8k(us8k_tree)
