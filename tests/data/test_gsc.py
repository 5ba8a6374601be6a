"""Speech Commands v2 loader on a miniature tree (35 word folders + the official lists)."""

import numpy as np
import pytest
import soundfile as sf

from petl_kit.data import AudioDataset, DatasetError, FbankExtractor, load_dataset
from petl_kit.data.gsc import GSC_CLASSES, load_gsc


@pytest.fixture
def gsc_tree(tmp_path):
    """data_path/speech_commands_v0.02: 35 words x 3 files (file 0 -> test, file 1 -> val, for
    even-numbered words), a _background_noise_ folder, and non-WAV clutter."""
    root = tmp_path / "speech_commands_v0.02"
    val, test = [], []
    for w, word in enumerate(GSC_CLASSES):
        (root / word).mkdir(parents=True)
        for i, spk in enumerate(["c0ffee00", "0a1b2c3d", "ffee0001"]):  # unsorted on purpose
            seconds = 1.0 if (word, i) == ("zero", 0) else 0.02
            t = np.arange(int(16000 * seconds)) / 16000
            sf.write(root / word / f"{spk}_nohash_{i}.wav", 0.2 * np.sin(2e3 * t), 16000)
            if w % 2 == 0 and i == 0:
                test.append(f"{word}/{spk}_nohash_{i}.wav")
            if w % 2 == 0 and i == 1:
                val.append(f"{word}/{spk}_nohash_{i}.wav")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white_noise.wav", np.zeros(1600), 16000)
    (root / "LICENSE").write_text("CC-BY-4.0")
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return tmp_path


def test_official_lists_define_val_and_test_train_is_the_rest(gsc_tree):
    s = load_gsc(gsc_tree)
    assert s.sizes() == {"train": 35 * 3 - 18 - 18, "val": 18, "test": 18}
    lists = gsc_tree / "speech_commands_v0.02"
    assert {c.meta["path"] for c in s.val} == set(
        (lists / "validation_list.txt").read_text().split()
    )
    assert {c.meta["path"] for c in s.test} == set((lists / "testing_list.txt").read_text().split())
    assert all("_background_noise_" not in str(c.source) for c in s.train)
    assert s.info["num_folds"] == 1 and load_dataset("gsc", gsc_tree, profile="reference")


def test_labels_alphabetical_and_loader_order_sorted(gsc_tree):
    s = load_gsc(gsc_tree)
    assert s.classes == sorted(s.classes) and len(s.classes) == 35
    assert s.classes.index("backward") == 0 and s.classes.index("zero") == 34
    assert s.classes.index("marvin") == 16 and s.classes.index("sheila") == 24
    for c in s.train + s.val + s.test:
        assert s.classes[c.label] == c.meta["path"].split("/")[0]
    labels = [c.label for c in s.train]
    assert labels == sorted(labels)  # words in label order
    bed = [c.meta["path"] for c in s.train if c.meta["word"] == "bed"]  # odd word: all 3 in train
    assert bed == sorted(bed) and len(bed) == 3


def test_one_second_is_98_frames_padded_to_100(gsc_tree):
    s = load_gsc(gsc_tree)
    ds = AudioDataset(s.test, FbankExtractor(max_length=100), num_classes=35, task="multiclass")
    i = next(i for i, c in enumerate(s.test) if c.meta["word"] == "zero")
    feats = ds[i]["input_values"]
    assert feats.shape == (100, 128)
    assert np.allclose(feats[98:].numpy(), 0.46703, atol=1e-4)
    assert not np.allclose(feats[97].numpy(), 0.46703, atol=1e-3)


def test_errors_name_the_culprit(gsc_tree, tmp_path):
    root = gsc_tree / "speech_commands_v0.02"
    with pytest.raises(DatasetError, match="fold 1 does not exist"):
        load_gsc(gsc_tree, fold=1)
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        load_gsc(tmp_path / "speech_commands_v0.02" / "yes")
    lst = root / "validation_list.txt"
    text = lst.read_text()
    lst.write_text(text + "zero/missing_nohash_0.wav\n")
    with pytest.raises(FileNotFoundError, match=r"validation_list.txt line 19 .*missing_nohash_0"):
        load_gsc(gsc_tree)
    lst.write_text(text + "_background_noise_/white_noise.wav\n")
    with pytest.raises(DatasetError, match="unknown label '_background_noise_'"):
        load_gsc(gsc_tree)
    lst.write_text(text + (root / "testing_list.txt").read_text().split()[0] + "\n")
    with pytest.raises(DatasetError, match="both validation and testing"):
        load_gsc(gsc_tree)
    lst.write_text(text)
    for f in (root / "visual").iterdir():
        f.unlink()
    (root / "visual").rmdir()
    with pytest.raises(FileNotFoundError, match="word folder .*visual"):
        load_gsc(gsc_tree)
    (root / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        load_gsc(gsc_tree)
