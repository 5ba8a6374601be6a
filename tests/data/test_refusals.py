"""What the kit refuses, and why: every row of the README table, with the error type and the file,
key or column the message must name."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import petl_kit as pk
from petl_kit.data import (
    Clip,
    DatasetSplits,
    DataWarning,
    FbankExtractor,
    FeatureStore,
    load_audio,
    load_audiofolder,
    load_csv,
    load_dataset,
)
from petl_kit.data.checks import audio_extensions
from petl_kit.data.dataset import AudioDataset, collate
from petl_kit.data.music.manifests import load_music_manifest
from petl_kit.errors import AudioError, DatasetError
from petl_kit.training import train

SR = 16000


def tone(freq: float = 440.0, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def manifest(tmp_path, header: str, rows: list[str]):
    for i in range(len(rows)):
        sf.write(str(tmp_path / f"c{i}.wav"), tone(200 + 50 * i), SR)
    path = tmp_path / "m.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "outputs"


# ---------------------------------------------------------------------------- classes and splits
def test_one_class_in_train_is_refused_naming_the_dataset(tmp_path):
    (tmp_path / "only" / "dog").mkdir(parents=True)
    for i in range(4):
        sf.write(str(tmp_path / "only" / "dog" / f"{i}.wav"), tone(), SR)
    with pytest.raises(DatasetError, match=r"dataset 'only'.*train split holds 1 class.*\['dog'\]"):
        load_dataset("audiofolder", tmp_path / "only")


def test_a_class_absent_from_train_is_an_error_naming_it(tmp_path):
    rows = ["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,test", "c3.wav,cat,test"]
    path = manifest(tmp_path, "path,label,split", rows)
    with pytest.raises(DatasetError, match=r"dataset 'm'.*\['cat'\].*none in the train split"):
        load_dataset("csv", path)


def test_a_class_absent_from_test_is_a_recorded_warning(tmp_path, tiny_checkpoints, outputs):
    rows = ["c0.wav,a,train", "c1.wav,b,train", "c2.wav,a,test", "c3.wav,b,train"]
    path = manifest(tmp_path, "path,label,split", rows)
    with pytest.warns(DataWarning, match=r"dataset 'm'.*\['b'\].*no clip in the test split"):
        splits = load_dataset("csv", path)
    assert any("['b']" in w for w in splits.info["warnings"])
    params = dict(experiment="warn", method="linear", dataset="csv", data_path=str(path),
                  backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100,
                  epochs=1, batch_size=4, lr=None, seed=0, profile="corrected", device="cpu",
                  progress=False)  # fmt: skip
    with pytest.warns(DataWarning):
        result = pk.run_experiment(params)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert any("no clip in the test split" in w for w in metrics["data_warnings"])


def test_an_empty_split_the_run_needs_is_refused_before_training(tiny_checkpoints, outputs):
    two = [Clip(tone(f), label, SR) for label, f in ((0, 300.0), (1, 600.0))]
    no_test = DatasetSplits("notest", ["a", "b"], "multiclass", two, [], [])
    params = dict(experiment="empty", method="linear", dataset="synthetic", data_path=None,
                  backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100,
                  epochs=1, batch_size=4, lr=None, seed=0, profile="corrected", device="cpu",
                  progress=False)  # fmt: skip
    with pytest.raises(DatasetError, match=r"dataset 'notest': the test split is empty"):
        pk.run_experiment(params, splits=no_test)
    (run_dir,) = (outputs / "empty").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert not (run_dir / "weights").exists()  # nothing trained


def test_an_empty_train_split_is_refused_at_load(tmp_path):
    path = manifest(tmp_path, "path,label,split", ["c0.wav,a,test", "c1.wav,b,test"])
    with pytest.raises(DatasetError, match=r"dataset 'm': the train split is empty"):
        load_dataset("csv", path)


# ---------------------------------------------------------------------------- NaN and Inf
def test_nan_or_inf_samples_are_refused_at_load_naming_the_file(tmp_path):
    for bad in (np.nan, np.inf):
        wave = tone()
        wave[100] = bad
        path = tmp_path / f"bad_{bad}.wav"
        sf.write(str(path), wave, SR, subtype="FLOAT")
        with pytest.raises(AudioError, match=f"audio file {path} holds 1 NaN/Inf value"):
            load_audio(path, SR)


def test_nan_is_refused_when_the_feature_cache_is_built(tmp_path, outputs):
    wave = tone()
    wave[5] = np.nan
    clips = [Clip(tone(), 0, SR), Clip(wave, 1, SR, {"path": "clip_b.wav"})]
    store = FeatureStore("nan", FbankExtractor(max_length=32), root=tmp_path / "cache")
    with pytest.raises(AudioError, match=r"in-memory clip \(clip_b.wav\) holds 1 NaN"):
        store.locate(clips, progress=False)
    assert not list(store.folder.glob("shard-*.json"))  # nothing committed


def test_nan_loss_names_the_step_and_the_files_of_its_batch(tmp_path, tiny_checkpoints,
                                                            monkeypatch):  # fmt: skip
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(str(paths[-1]), tone(300 + 100 * i), SR)
    clips = [Clip(p, i % 2) for i, p in enumerate(paths)]
    model = pk.build_model("ast", str(tiny_checkpoints["ast"]), {"max_length": 100}, 2, seed=0)
    ds = AudioDataset(clips, model.feature_extractor(), num_classes=2, task="multiclass")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    monkeypatch.setattr(train, "loss_fn", lambda *a, **k: lambda logits, _: logits.sum() * np.nan)
    cfg = pk.config.build(train.TrainConfig, {"epochs": 1, "progress": False, "device": "cpu"})
    with pytest.raises(FloatingPointError, match=rf"epoch 1, step 0.*{paths[0]}, {paths[1]}"):
        train.fit(model, {"train": loader}, cfg)


# ---------------------------------------------------------------------------- manifests
@pytest.mark.parametrize(
    ("header", "column", "expected"),
    [("path,label,Split", "Split", "split"), ("path,label,splits", "splits", "split"),
     ("PATH,label,split", "PATH", "path"), ("path,Labels,split", "Labels", "label"),
     ("path,label,Folds", "Folds", "fold")],
)  # fmt: skip
def test_a_manifest_column_variant_is_refused_naming_it(tmp_path, header, column, expected):
    path = manifest(tmp_path, header, ["c0.wav,a,train", "c1.wav,b,train"])
    with pytest.raises(DatasetError, match=rf"{path}: column '{column}' looks like '{expected}'"):
        load_csv(path)


def test_a_music_manifest_key_variant_is_refused_naming_it(tmp_path):
    sf.write(str(tmp_path / "a.wav"), np.zeros(2400, np.float32), 24000)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"Split": "train", "audio_path": "a.wav", "label": 3}) + "\n")
    with pytest.raises(DatasetError, match=rf"{path} line 1: column 'Split' looks like 'split'"):
        load_music_manifest(path, tmp_path, task="key")


# ---------------------------------------------------------------------------- audiofolder files
def test_audiofolder_reads_soundfile_types_and_warns_about_the_rest(tmp_path):
    root = tmp_path / "af"
    types = [("FLAC", ".flac"), ("OGG", ".ogg"), ("WAV", ".wav")]
    if "MP3" in sf.available_formats():
        types.append(("MP3", ".mp3"))
    for cls, f in (("a", 300.0), ("b", 600.0)):
        (root / cls).mkdir(parents=True)
        for fmt, ext in types:
            sf.write(str(root / cls / f"x{ext}"), tone(f), SR, format=fmt)
        (root / cls / "notes.txt").write_text("not audio")
    (root / "b" / "cover.jpg").write_bytes(b"\xff\xd8")
    assert {ext for _, ext in types} <= set(audio_extensions())
    with pytest.warns(DataWarning, match=r"3 file\(s\) skipped.*a/notes.txt"):
        ds = load_audiofolder(root, val_fraction=0.0, test_fraction=0.0)
    assert len(ds.train) == 2 * len(types)  # every readable type is read, none skipped
    assert {str(c.source)[-4:].lstrip(".") for c in ds.train} >= {"flac", "ogg", "wav"}
    assert "3 file(s) skipped" in ds.info["warnings"][0]
    for clip in ds.train:
        assert load_audio(clip.source, SR).isfinite().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder of audio only: no warning
        for junk in root.rglob("*"):
            if junk.suffix in (".txt", ".jpg"):
                junk.unlink()
        load_audiofolder(root, val_fraction=0.0, test_fraction=0.0)
