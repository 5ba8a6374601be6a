"""audiofolder and csv layouts on real WAV files, including every error case."""

import csv

import numpy as np
import pytest

from petl_kit.data import (
    DatasetError,
    load_audiofolder,
    load_csv,
    make_synthetic,
    write_audiofolder,
)


@pytest.fixture
def flat_folder(tmp_path, write_wav, sine):
    for cls, n in (("dog", 10), ("cat", 10), ("bird", 5)):
        for i in range(n):
            write_wav(f"flat/{cls}/{i:02d}.wav", sine(0.05, 16000, 200 + 50 * i), 16000)
    (tmp_path / "flat" / "dog" / "notes.txt").write_text("not audio")
    return tmp_path / "flat"


def write_manifest(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_flat_audiofolder_is_split_stratified_and_seeded(flat_folder):
    ds = load_audiofolder(flat_folder, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert ds.classes == ["bird", "cat", "dog"] and ds.task == "multiclass" and ds.name == "flat"
    assert ds.class_counts("test") == {"bird": 1, "cat": 2, "dog": 2}
    assert ds.class_counts("val") == {"bird": 1, "cat": 2, "dog": 2}
    assert sum(ds.sizes().values()) == 25  # notes.txt ignored
    again = load_audiofolder(flat_folder, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert [c.source for c in again.test] == [c.source for c in ds.test]
    other = load_audiofolder(flat_folder, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert [c.source for c in other.test] != [c.source for c in ds.test]
    assert ds.native_sample_rates() == {16000: 25}


def test_split_audiofolder_roundtrip_with_write_audiofolder(tmp_path):
    syn = make_synthetic(n_per_class=5, seed=0, clip_seconds=0.1)
    root = write_audiofolder(syn, tmp_path / "syn")
    (root / "val").rename(root / "valid")  # 'valid' is accepted as 'val'
    ds = load_audiofolder(root)
    assert ds.classes == sorted(syn.classes) and ds.sizes() == syn.sizes()
    assert ds.info["layout"] == "splits" and ds.info["split_folders"]["val"] == "valid"
    assert {c.meta["class"] for c in ds.test} == set(syn.classes)
    with pytest.raises(DatasetError, match="multiclass"):
        write_audiofolder(syn.__class__(**{**syn.__dict__, "task": "multilabel"}), tmp_path / "ml")


def test_audiofolder_errors_name_the_folder(tmp_path, write_wav, sine):
    with pytest.raises(FileNotFoundError, match=r"missing.*expected root/<class>/<file>"):
        load_audiofolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty has no sub-folders"):
        load_audiofolder(tmp_path / "empty")
    (tmp_path / "noaudio" / "dog").mkdir(parents=True)
    (tmp_path / "noaudio" / "dog" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"class folder .*dog has no audio files"):
        load_audiofolder(tmp_path / "noaudio")
    write_wav("mixed/train/dog/a.wav", sine(0.05, 16000), 16000)
    write_wav("mixed/cat/a.wav", sine(0.05, 16000), 16000)
    with pytest.raises(
        DatasetError, match=r"mixes split folders \['train'\] with other folders \['cat'\]"
    ):
        load_audiofolder(tmp_path / "mixed")


def test_csv_random_split_relative_paths_and_numeric_classes(tmp_path, write_wav, sine):
    rows = []
    for i in range(30):
        write_wav(f"audio/{i}.wav", sine(0.05, 16000), 16000)
        rows.append([f"audio/{i}.wav", str([2, 10, 1][i % 3]), f"spk{i % 4}"])
    ds = load_csv(
        write_manifest(tmp_path / "m.csv", ["path", "label", "speaker"], rows),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    assert ds.classes == ["1", "2", "10"] and ds.sizes() == {"train": 18, "val": 6, "test": 6}
    assert ds.train[0].meta["speaker"].startswith("spk") and "row" in ds.train[0].meta
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    moved = write_manifest(elsewhere / "m.csv", ["path", "label"], [r[:2] for r in rows])
    again = load_csv(moved, root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert [c.source for c in again.test] == [c.source for c in ds.test]


def test_csv_split_column_and_multilabel(tmp_path, write_wav, sine):
    rows = []
    for i, (split, label) in enumerate(
        [("train", "a;b"), ("train", "c"), ("valid", "b"), ("test", "a ; c"), ("Train", "b")]
    ):
        write_wav(f"{i}.wav", sine(0.05, 16000), 16000)
        rows.append([f"{i}.wav", label, split])
    ds = load_csv(write_manifest(tmp_path / "ml.csv", ["path", "label", "split"], rows))
    assert ds.task == "multilabel" and ds.classes == ["a", "b", "c"]
    assert ds.sizes() == {"train": 3, "val": 1, "test": 1}
    assert ds.train[0].label == [0, 1] and ds.test[0].label == [0, 2] and ds.val[0].label == [1]
    assert ds.class_counts("train") == {"a": 1, "b": 2, "c": 1}
    rows[2][2] = "holdout"
    with pytest.raises(DatasetError, match=r"row 3 \(line 4\) has unknown split 'holdout'"):
        load_csv(write_manifest(tmp_path / "bad.csv", ["path", "label", "split"], rows))


def test_csv_fold_selection(tmp_path, write_wav, sine):
    rows = []
    for i in range(40):
        write_wav(f"{i}.wav", sine(0.05, 16000), 16000)
        rows.append([f"{i}.wav", "xy"[(i // 4) % 2], str(i % 4 + 1)])
    manifest = write_manifest(tmp_path / "f.csv", ["path", "label", "fold"], rows)
    ds = load_csv(manifest, fold=2, val_fraction=0.25)
    assert ds.sizes() == {"train": 22, "val": 8, "test": 10}
    assert {c.meta["fold"] for c in ds.test} == {"2"}
    assert "2" not in {c.meta["fold"] for c in ds.train + ds.val}
    assert ds.info["folds"] == [1, 2, 3, 4]
    with pytest.raises(
        DatasetError, match=r"fold 7 does not exist .*existing folds: \[1, 2, 3, 4\]"
    ):
        load_csv(manifest, fold=7)
    with pytest.raises(DatasetError, match=r"has a 'fold' column: pass fold=<k>"):
        load_csv(manifest)


def test_csv_errors_name_the_culprit(tmp_path, write_wav, sine):
    with pytest.raises(FileNotFoundError, match=r"csv manifest .*none\.csv does not exist"):
        load_csv(tmp_path / "none.csv")
    write_wav("a.wav", sine(0.05, 16000), 16000)
    cols = write_manifest(tmp_path / "cols.csv", ["file", "label"], [["a.wav", "x"]])
    with pytest.raises(
        DatasetError, match=r"lacks column\(s\) \['path'\]; found \['file', 'label'\]"
    ):
        load_csv(cols)
    gone = write_manifest(
        tmp_path / "gone.csv", ["path", "label"], [["a.wav", "x"], ["b.wav", "y"]]
    )
    with pytest.raises(
        FileNotFoundError, match=r"row 2 \(line 3\): audio file .*b\.wav does not exist"
    ):
        load_csv(gone)
    nofold = write_manifest(tmp_path / "nofold.csv", ["path", "label"], [["a.wav", "x"]])
    with pytest.raises(DatasetError, match=r"fold=1 given but .* no 'fold' column"):
        load_csv(nofold, fold=1)
    empty_label = write_manifest(tmp_path / "el.csv", ["path", "label"], [["a.wav", " "]])
    with pytest.raises(DatasetError, match=r"row 1 \(line 2\) has an empty label"):
        load_csv(empty_label)
    assert np.isclose(load_csv(nofold, val_fraction=0, test_fraction=0).sizes()["train"], 1)
