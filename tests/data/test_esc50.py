"""ESC-50 loader on a miniature tree in the real layout (meta/esc50.csv + audio/)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from petl_kit.config import ConfigError
from petl_kit.data import (
    AudioDataset,
    AudioError,
    DatasetError,
    FbankExtractor,
    load_dataset,
)
from petl_kit.data.esc50 import ESC50_CLASSES, load_esc50

HEADER = "filename,fold,target,category,esc10,src_file,take"
# (category, target) used in the tree; indices are the official ones.
USED = [("dog", 0), ("crackling_fire", 12), ("hand_saw", 49)]
PAD = 0.46703


def _wave(seconds, sr, freq=440.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def esc_tree(tmp_path):
    """data_path/ESC-50 with 5 folds x 3 classes x 2 clips (44.1 kHz; one 5-s clip, one 24-bit)."""
    root = tmp_path / "ESC-50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = [HEADER]
    for fold in range(1, 6):
        for cat, target in USED:
            for take in "AB":
                name = f"{fold}-{100 + target}-{take}-{target}.wav"
                seconds = 5.0 if (fold, target, take) == (1, 0, "A") else 0.05
                subtype = "PCM_24" if (fold, target, take) == (2, 12, "B") else "PCM_16"
                sf.write(root / "audio" / name, _wave(seconds, 44100), 44100, subtype=subtype)
                rows.append(f"{name},{fold},{target},{cat},False,{100 + target},{take}")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _folds(clips):
    return sorted({c.meta["fold"] for c in clips})


def test_labels_follow_the_official_target_order(esc_tree):
    s = load_esc50(esc_tree, fold=0)
    assert len(s.classes) == 50 and s.classes[:3] == ["dog", "rooster", "pig"]
    assert s.classes[12] == "crackling_fire" and s.classes[49] == "hand_saw"
    for clip in s.train + s.val + s.test:
        assert clip.label == int(Path(clip.source).stem.split("-")[-1])  # the target column
        assert s.classes[clip.label] == clip.meta["category"]


@pytest.mark.parametrize(
    "run, train, val, test",
    [(0, [1, 2, 3], [4], 5), (1, [2, 3, 4], [5], 1), (2, [3, 4, 5], [1], 2),
     (3, [1, 4, 5], [2], 3), (4, [1, 2, 5], [3], 4)],
)  # fmt: skip
def test_reference_folds_are_3_1_1(esc_tree, run, train, val, test):
    s = load_dataset("esc50", esc_tree, fold=run, profile="reference")
    assert _folds(s.train) == train and _folds(s.val) == val and _folds(s.test) == [test]
    assert s.sizes() == {"train": 18, "val": 6, "test": 6}
    assert s.info["esc50_protocol"] == "3-1-1" and s.info["profile"] == "reference"


def test_corrected_folds_are_4_1_without_val_unless_asked(esc_tree):
    for run in range(5):
        s = load_esc50(esc_tree, fold=run)
        assert _folds(s.test) == [run + 1] and s.val == []
        assert _folds(s.train) == [f for f in range(1, 6) if f != run + 1]
    s = load_esc50(esc_tree, fold=2, val_fraction=0.25, seed=1)
    assert s.sizes() == {"train": 18, "val": 6, "test": 6}
    assert 3 not in _folds(s.val) and 3 not in _folds(s.train)  # test fold never selects
    assert sorted(c.label for c in s.val) == [0, 0, 12, 12, 49, 49]  # stratified
    again = load_esc50(esc_tree, fold=2, val_fraction=0.25, seed=1)
    assert [c.source for c in again.val] == [c.source for c in s.val]
    assert s.info["esc50_protocol"] == "4-1" and s.info["val_fraction"] == 0.25


def test_explicit_protocol_override_and_csv_order(esc_tree):
    s = load_esc50(esc_tree, fold=0, profile="corrected", esc50_protocol="3-1-1")
    assert s.info["esc50_protocol"] == "3-1-1" and s.info["profile"] == "corrected"
    lines = [c.meta["line"] for c in s.train]
    assert lines == sorted(lines)  # CSV order = the reference's loader order
    direct = load_esc50(esc_tree / "ESC-50", fold=0)  # data_path = the dataset folder itself
    assert direct.sizes() == load_esc50(esc_tree, fold=0).sizes()


def test_audio_is_resampled_to_16k_and_padded_to_500_frames(esc_tree):
    s = load_esc50(esc_tree, fold=0)  # corrected run 0 tests on fold 1, which has the 5-s clip
    ds = AudioDataset(s.test, FbankExtractor(max_length=500), num_classes=50, task="multiclass")
    i = next(i for i, c in enumerate(s.test) if c.meta["filename"] == "1-100-A-0.wav")
    assert ds.load_wave(i).shape == (80000,)  # 5 s at 16 kHz
    feats = ds[i]["input_values"]
    assert feats.shape == (500, 128)
    assert np.allclose(feats[498:].numpy(), PAD, atol=1e-4) and not np.allclose(feats[497], PAD)
    assert ds[i]["label"] == 0


def test_errors_name_the_culprit(esc_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_esc50(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        load_esc50(empty)
    for bad in (5, -1, "0", True):
        with pytest.raises(DatasetError, match="fold"):
            load_esc50(esc_tree, fold=bad)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_esc50(esc_tree, profile="reference", val_fraction=0.1)
    with pytest.raises(ConfigError, match="esc50_protocol"):
        load_esc50(esc_tree, esc50_protocol="2-2-1")

    meta = esc_tree / "ESC-50" / "meta" / "esc50.csv"
    text = meta.read_text()
    meta.write_text(text + "9-999-A-0.wav,1,0,dog,False,999,A\n")
    with pytest.raises(FileNotFoundError, match=r"line 32 .*9-999-A-0\.wav"):
        load_esc50(esc_tree)
    meta.write_text(text + "1-100-A-0.wav,1,0,unicorn,False,100,A\n")
    with pytest.raises(DatasetError, match="unknown label 'unicorn'"):
        load_esc50(esc_tree)
    meta.write_text(text + "1-100-A-0.wav,1,7,dog,False,100,A\n")
    with pytest.raises(DatasetError, match="target 7 disagrees"):
        load_esc50(esc_tree)
    meta.write_text(text + "1-100-A-0.wav,6,0,dog,False,100,A\n")
    with pytest.raises(DatasetError, match="fold '6'"):
        load_esc50(esc_tree)


def test_corrupt_and_empty_audio_fail_when_read_naming_the_file(esc_tree):
    audio = esc_tree / "ESC-50" / "audio"
    (audio / "1-100-A-0.wav").write_bytes(b"not a wav at all")
    sf.write(audio / "1-100-B-0.wav", np.zeros(0, np.float32), 44100)
    s = load_esc50(esc_tree, fold=0)  # layout checks pass: the files exist
    ds = AudioDataset(s.test, FbankExtractor(max_length=10), num_classes=50, task="multiclass")
    names = [c.meta["filename"] for c in s.test]
    with pytest.raises(AudioError, match="1-100-A-0.wav"):
        ds[names.index("1-100-A-0.wav")]
    with pytest.raises(AudioError, match=r"1-100-B-0.wav is empty"):
        ds[names.index("1-100-B-0.wav")]


def test_class_list_is_complete():
    assert len(ESC50_CLASSES) == 50 == len(set(ESC50_CLASSES))
    assert ESC50_CLASSES[30:35] == [
        "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    ]  # fmt: skip
