"""IEMOCAP loader on a miniature tree (Session{s}/dialog/EmoEvaluation + sentences/wav)."""

import numpy as np
import pytest
import soundfile as sf

from petl_kit.config import ConfigError
from petl_kit.data import AudioDataset, DatasetError, FbankExtractor, load_dataset
from petl_kit.data.iemocap import IEMOCAP_CLASSES, load_iemocap

# per dialog: (speaker+index, label); fru and xxx are dropped, exc is merged into happy
TURNS = [("F000", "neu"), ("M000", "hap"), ("F001", "exc"), ("M001", "sad"), ("F002", "ang"),
         ("M002", "fru"), ("F003", "xxx"), ("M003", "neu")]  # fmt: skip
KEPT = 6  # per dialog


def _label_file(dialog, turns):
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for i, (turn, label) in enumerate(turns):
        lines.append(f"[{i}.0000 - {i}.5000]\t{dialog}_{turn}\t{label}\t[2.5000, 2.5000, 2.5000]")
        lines.append(f"C-E1:\t{'Neutral' if label == 'neu' else 'Other'};\t()")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def iemo_tree(tmp_path):
    """data_path/IEMOCAP_full_release: 5 sessions x (impro01, script01_1) x 8 turns, 16 kHz."""
    root = tmp_path / "IEMOCAP_full_release"
    for s in range(1, 6):
        emo = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True)
        (emo / "Categorical").mkdir()  # sub-folders of the real release are not label files
        for dialog in (f"Ses0{s}F_script01_1", f"Ses0{s}F_impro01"):  # file order != name order
            (emo / f"{dialog}.txt").write_text(_label_file(dialog, TURNS))
            wav_dir = root / f"Session{s}" / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True)
            for turn, _ in TURNS:
                seconds = (
                    9.0 if (s, dialog.endswith("impro01"), turn) == (5, True, "M001") else 0.03
                )
                t = np.arange(int(16000 * seconds)) / 16000
                sf.write(wav_dir / f"{dialog}_{turn}.wav", 0.1 * np.sin(900 * t), 16000)
    return tmp_path


def test_labels_dialogs_and_speakers(iemo_tree):
    s = load_iemocap(iemo_tree)
    assert s.classes == IEMOCAP_CLASSES == ["neutral", "happy", "sad", "angry"]
    clips = s.train + s.val + s.test
    assert len(clips) == 5 * 2 * KEPT
    emo = {c.meta["emotion"] for c in clips}
    assert emo == {"neu", "hap", "exc", "sad", "ang"}
    assert all(c.label == {"neu": 0, "hap": 1, "exc": 1, "sad": 2, "ang": 3}[c.meta["emotion"]]
               for c in clips)  # fmt: skip
    script = next(c for c in clips if c.meta["turn"] == "Ses01F_script01_1_F000")
    assert script.meta["dialog"] == "Ses01F_script01_1" and script.meta["speaker"] == "F"
    assert script.source.parent.name == "Ses01F_script01_1"
    impro = next(c for c in clips if c.meta["turn"] == "Ses01F_impro01_M001")
    assert impro.meta["dialog"] == "Ses01F_impro01" and impro.meta["speaker"] == "M"
    # label files sorted by name: impro01 before script01_1, lines in file order
    assert [c.meta["turn"] for c in s.train[:2]] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]


@pytest.mark.parametrize(
    "run, session, val_spk, test_spk",
    [(0, 5, "F", "M"), (1, 5, "M", "F"), (2, 1, "F", "M"), (3, 1, "M", "F"), (9, 4, "M", "F")],
)
def test_leave_one_speaker_out_folds(iemo_tree, run, session, val_spk, test_spk):
    s = load_dataset("iemocap", iemo_tree, fold=run, profile="reference")
    assert {c.meta["session"] for c in s.train} == set(range(1, 6)) - {session}
    assert {(c.meta["session"], c.meta["speaker"]) for c in s.val} == {(session, val_spk)}
    assert {(c.meta["session"], c.meta["speaker"]) for c in s.test} == {(session, test_spk)}
    assert {c.meta["speaker"] for c in s.train} == {"F", "M"}
    assert s.sizes() == {"train": 4 * 2 * KEPT, "val": 6, "test": 6}
    assert s.info["val_speaker"] == val_spk and s.info["num_folds"] == 10


def test_session_variant_and_its_validation_policy(iemo_tree):
    s = load_iemocap(iemo_tree, fold=2, iemocap_protocol="session")
    assert {c.meta["session"] for c in s.test} == {3} and s.val == []
    v = load_iemocap(iemo_tree, fold=2, iemocap_protocol="session", val_fraction=0.25, seed=3)
    assert len(v.val) > 0 and {c.meta["session"] for c in v.val} <= {1, 2, 4, 5}
    with pytest.raises(ConfigError, match="val_fraction"):
        load_iemocap(iemo_tree, val_fraction=0.1)
    with pytest.raises(DatasetError, match="fold 5 does not exist"):
        load_iemocap(iemo_tree, fold=5, iemocap_protocol="session")
    with pytest.raises(ConfigError, match="iemocap_protocol"):
        load_iemocap(iemo_tree, iemocap_protocol="dialog")


def test_eight_seconds_of_frames(iemo_tree):
    s = load_iemocap(iemo_tree, fold=0)  # session 5: M tests
    ds = AudioDataset(s.test, FbankExtractor(max_length=800), num_classes=4, task="multiclass")
    i = next(i for i, c in enumerate(s.test) if c.meta["turn"] == "Ses05F_impro01_M001")
    feats = ds[i]["input_values"]  # 9 s -> 898 frames, the first 800 kept
    assert feats.shape == (800, 128) and ds[i]["label"] == 2
    assert not np.allclose(feats[-1].numpy(), 0.46703, atol=1e-3)


def test_errors_name_the_culprit(iemo_tree):
    root = iemo_tree / "IEMOCAP_full_release"
    with pytest.raises(DatasetError, match="fold 10 does not exist"):
        load_iemocap(iemo_tree, fold=10)
    label_file = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    text = label_file.read_text()
    label_file.write_text(text + "[9.0 - 9.5]\tSes02F_impro01_F099\tang\t[1, 1, 1]\n")
    with pytest.raises(FileNotFoundError, match=r"Ses02F_impro01.txt line \d+ .*F099\.wav"):
        load_iemocap(iemo_tree)
    label_file.write_text(text + "[9.0 - 9.5]\tSes02F_X099\tang\t[1, 1, 1]\n")
    with pytest.raises(DatasetError, match="turn id 'Ses02F_X099'"):
        load_iemocap(iemo_tree)
    label_file.write_text(text)
    (root / "Session4" / "dialog" / "EmoEvaluation").rename(root / "Session4" / "dialog" / "x")
    with pytest.raises(FileNotFoundError, match="Session4/dialog/EmoEvaluation"):
        load_iemocap(iemo_tree)
