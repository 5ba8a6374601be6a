"""Fluent Speech Commands loader on a miniature tree (data/*_data.csv + wavs/speakers/...)."""

import numpy as np
import pytest
import soundfile as sf

from petl_kit.data import AudioDataset, DatasetError, FbankExtractor, load_dataset
from petl_kit.data.fsc import FSC_CLASSES, load_fsc

HEADER = ",path,speakerId,transcription,action,object,location"
# (transcription, action, object, location, expected id); commas inside quoted transcriptions
ROWS = [
    ("Change language", "change language", "none", "none", 0),
    ('"Lights on, please"', "activate", "lights", "none", 2),
    ("Turn up the heat in the bathroom", "increase", "heat", "washroom", 19),
    ('"Switch to Chinese, now"', "change language", "Chinese", "none", 26),
    ("Bring me my shoes", "bring", "shoes", "none", 30),
    ("Turn off the kitchen lights", "deactivate", "lights", "kitchen", 14),
]


@pytest.fixture
def fsc_tree(tmp_path):
    """data_path/fluent_speech_commands_dataset with 3 CSVs of the 6 rows above (16 kHz WAVs;
    one 5-s utterance, one 24-bit)."""
    root = tmp_path / "fluent_speech_commands_dataset"
    (root / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        lines = [HEADER]
        for n, (text, action, obj, loc, _) in enumerate(ROWS):
            rel = f"wavs/speakers/spk{n % 2}/{split}-{n}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            seconds = 5.0 if (split, n) == ("test", 4) else 0.03
            t = np.arange(int(16000 * seconds)) / 16000
            sf.write(root / rel, 0.2 * np.sin(3e3 * t), 16000,
                     subtype="PCM_24" if n == 3 else "PCM_16")  # fmt: skip
            lines.append(f"{n},{rel},spk{n % 2},{text},{action},{obj},{loc}")
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_official_splits_and_label_ids(fsc_tree):
    s = load_fsc(fsc_tree)
    assert s.sizes() == {"train": 6, "val": 6, "test": 6} and len(s.classes) == 31
    for split in ("train", "val", "test"):
        assert [c.label for c in s.split(split)] == [r[-1] for r in ROWS]  # CSV order
    assert s.classes[26] == "change languageChinesenone"  # the reference's concatenation
    assert s.classes[0] == "change languagenonenone" and s.classes[30] == "bringshoesnone"
    assert all(str(c.source).endswith(f"val-{i}.wav".replace("val", "valid"))
               for i, c in enumerate(s.val))  # fmt: skip
    assert s.info["num_folds"] == 1
    assert load_dataset("fsc", fsc_tree / "fluent_speech_commands_dataset").sizes() == s.sizes()


def test_utterances_are_cropped_to_400_frames(fsc_tree):
    s = load_fsc(fsc_tree)
    ds = AudioDataset(s.test, FbankExtractor(max_length=400), num_classes=31, task="multiclass")
    long = ds[4]["input_values"]  # 5 s: 498 frames, the first 400 kept
    assert long.shape == (400, 128) and not np.allclose(long[-1].numpy(), 0.46703, atol=1e-3)
    short = ds[0]["input_values"]
    assert np.allclose(short[3:].numpy(), 0.46703, atol=1e-4)


def test_errors_name_the_culprit(fsc_tree):
    root = fsc_tree / "fluent_speech_commands_dataset"
    with pytest.raises(DatasetError, match="fold 2 does not exist"):
        load_fsc(fsc_tree, fold=2)
    csv = root / "data" / "valid_data.csv"
    text = csv.read_text()
    csv.write_text(text + "9,wavs/speakers/spk0/train-0.wav,spk0,Dance,dance,floor,none\n")
    with pytest.raises(
        DatasetError, match=r"valid_data.csv line 8 has unknown label 'dancefloornone'"
    ):
        load_fsc(fsc_tree)
    csv.write_text(text + "9,wavs/speakers/spk9/gone.wav,spk9,Bring juice,bring,juice,none\n")
    with pytest.raises(FileNotFoundError, match=r"line 8 .*spk9/gone\.wav"):
        load_fsc(fsc_tree)
    csv.unlink()
    with pytest.raises(FileNotFoundError, match="valid_data.csv"):
        load_fsc(fsc_tree)
    assert sorted(FSC_CLASSES) != FSC_CLASSES  # reference id order, not alphabetical
