"""Music sets: JSON-Lines manifests of 24-kHz audio, manifest building, the segment protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

import petl_kit as pk
from petl_kit.data import DatasetError, WaveformExtractor, load_dataset
from petl_kit.data.music.build import main as build_main
from petl_kit.data.music.build import write_music_manifest
from petl_kit.data.music.manifests import load_music_manifest, load_music_set
from petl_kit.data.segments import SegmentDataset, num_segments
from petl_kit.training.music_tasks import KEY_CLASSES

SR = 24000


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def row(split, audio_path, label, length=SR // 2):
    return {"key": Path(audio_path).stem, "split": split, "audio_path": audio_path, "sr": SR,
            "length": length, "label": label}  # fmt: skip


@pytest.fixture
def music_root(tmp_path, sine, write_wav):
    """A miniature data_path with the key, tempo and MTAT manifests and their 24-kHz WAVs."""
    key_rows = [
        row("train", "gs/100.LOFI.wav", 9),  # A major and two pitch-shifted copies
        row("train", "gs/100.LOFI.2.wav", 11),
        row("train", "gs/100.LOFI.-4.wav", 5),
        row("val", "gs/200.LOFI.wav", 21),
        row("test", "gs/300.LOFI.wav", 0),
    ]
    tempo_rows = [
        row("train", "gtzan/blues.00000.wav", 120),
        row("train", "gtzan/blues.00000.0.95.wav", 114),
        row("val", "gtzan/jazz.00001.wav", 90),
        row("val", "gtzan/jazz.00001.1.05.wav", 95),
        row("test", "gtzan/rock.00002.wav", 150),
    ]
    tag_rows = [
        row("train", "a/clip1.wav", [1, 0, 0]),
        row("valid", "b/clip2.wav", [-1, 1, 1]),
        row("test", "c/clip3.wav", [1, -1, -1]),
    ]
    for i, r in enumerate(key_rows + tempo_rows):
        write_wav(f"data/{r['audio_path']}", sine(0.5, SR, 200 + 50 * i), SR)
    for i, r in enumerate(tag_rows):
        write_wav(f"data/MagnaTagATune/{r['audio_path']}", sine(0.5, SR, 300 + 50 * i), SR)
    root = tmp_path / "data"
    write_manifest(root / "metadata/giantsteps_key_augmented.json", key_rows)
    write_manifest(root / "metadata/gtzan_tempo_augmented.json", tempo_rows)
    write_manifest(root / "metadata/mtat.json", tag_rows)
    (root / "metadata/mtat_tags.txt").write_text("rock\npiano\nguitar\n")
    return root


def test_key_manifest_with_pitch_shifted_rows(music_root):
    splits = load_dataset("giantsteps_key", music_root)
    assert splits.task == "key" and splits.classes == list(KEY_CLASSES)
    assert splits.sizes() == {"train": 3, "val": 1, "test": 1}
    assert [c.label for c in splits.train] == [9, 11, 5] and splits.val[0].label == 21
    shifted = splits.train[1].meta
    assert shifted["original"] == "100.LOFI" and shifted["semitones"] == 2
    assert splits.train[2].meta["semitones"] == -4 and "original" not in splits.train[0].meta
    originals = load_music_set("giantsteps_key", music_root, augmented=False)  # one key: no run
    assert originals.sizes() == {"train": 1, "val": 1, "test": 1}


def test_tempo_manifest_with_time_stretched_rows(music_root):
    splits = load_dataset("gtzan_tempo", music_root)
    assert splits.task == "tempo" and splits.num_classes == 300
    assert [c.label for c in splits.train] == [120, 114]
    assert splits.train[1].meta["factor"] == 0.95 and splits.val[1].meta["factor"] == 1.05
    assert load_music_set("gtzan_tempo", music_root, augmented=False).sizes()["val"] == 1


def test_tagging_manifest_reads_valid_split_signed_labels_and_tag_order(music_root):
    splits = load_music_set("mtat", music_root)  # the loader itself; load_dataset refuses it:
    with pytest.raises(DatasetError, match="'mtat': the train split holds 1 class"):
        load_dataset("mtat", music_root)  # one tag in train (rock), piano and guitar in val
    assert splits.task == "multilabel" and splits.classes == ["rock", "piano", "guitar"]
    assert splits.sizes() == {"train": 1, "val": 1, "test": 1}  # "valid" is val
    assert splits.train[0].label == [0] and splits.val[0].label == [1, 2]
    assert splits.test[0].label == [0]  # -1 is a negative
    assert splits.sample_rate == SR and splits.info["tags_file"].endswith("mtat_tags.txt")


def test_missing_folder_manifest_and_bad_rows_are_named(music_root, tmp_path, sine, write_wav):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_dataset("mtat", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="mtg_top50.json not found"):
        load_dataset("mtg_top50", music_root)
    with pytest.raises(TypeError, match="no option.*'fold'"):
        load_dataset("mtat", music_root, fold=1)
    manifest = music_root / "metadata/giantsteps_key_augmented.json"
    good = manifest.read_text()
    cases = [
        (good.replace('"label": 21', '"label": 24'), DatasetError, "line 4: key label.*got 24"),
        (
            good.replace('"label": 11', '"label": 10'),
            DatasetError,
            "line 2: key label 10 of a \\+2",
        ),
        (good.replace('"val"', '"dev"'), DatasetError, "line 4: unknown split 'dev'"),
        (good + "{not json\n", DatasetError, "line 6 is not a JSON object"),
        (good.replace("300.LOFI", "missing"), FileNotFoundError, "line 5 refers to audio"),
    ]
    for text, error, message in cases:
        manifest.write_text(text)
        with pytest.raises(error, match=message):
            load_dataset("giantsteps_key", music_root)
    manifest.write_text(good)
    tags = music_root / "metadata/mtat.json"
    tags.write_text(tags.read_text().replace("[1, 0, 0]", "[2, 0, 0]"))
    with pytest.raises(DatasetError, match="line 1: tagging label values must be 0/1 or -1/1"):
        load_dataset("mtat", music_root)


def test_wrong_rate_or_channels_is_an_error_naming_the_file(music_root, sine, write_wav):
    write_wav("data/gs/300.LOFI.wav", sine(0.5, 16000), 16000)
    with pytest.raises(DatasetError, match="300.LOFI.wav .*16000 Hz with 1 channel.*24000 Hz mono"):
        load_dataset("giantsteps_key", music_root)
    write_wav("data/gs/300.LOFI.wav", sine(0.5, SR, channels=2), SR)
    with pytest.raises(DatasetError, match="24000 Hz with 2 channel"):
        load_dataset("giantsteps_key", music_root)
    assert load_dataset("giantsteps_key", music_root, check_audio=False).sizes()["test"] == 1


def test_write_music_manifest_resamples_and_records_the_tag_order(tmp_path, sine, write_wav):
    for name in ("x/one.flac", "x/two.wav", "y/three.wav"):
        write_wav(f"src/{name}", sine(1.0, 44100, channels=2), 44100)
    table = tmp_path / "labels.csv"
    table.write_text(
        "path,split,label\nx/one.flac,train,rock;piano\nx/two.wav,valid,piano\ny/three.wav,test,piano\n"
    )
    out = write_music_manifest(table, tmp_path / "src", tmp_path / "meta/tags.json",
                               task="multilabel", output_audio_dir=tmp_path / "audio")  # fmt: skip
    assert (tmp_path / "meta/tags_tags.txt").read_text().split() == ["piano", "rock"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"key": "x/one", "split": "train", "audio_path": "x/one.wav", "sr": SR,
                       "length": SR, "label": [1, 1]}  # fmt: skip
    info = sf.info(str(tmp_path / "audio/x/one.wav"))
    assert (info.samplerate, info.channels, info.frames) == (SR, 1, SR)
    splits = load_music_manifest(out, tmp_path / "audio", task="multilabel")
    assert splits.classes == ["piano", "rock"] and splits.val[0].label == [0]

    keys = [{"path": "x/two.wav", "split": "train", "label": "A minor"},
            {"path": "y/three.wav", "split": "test", "label": "Eb major"}]  # fmt: skip
    out = write_music_manifest(keys, tmp_path / "src", tmp_path / "k.json", task="key",
                               output_audio_dir=tmp_path / "audio")  # fmt: skip
    assert [c.label for c in load_music_manifest(out, tmp_path / "audio", task="key").train] == [21]
    with pytest.raises(DatasetError, match="44100 Hz with 2 channel"):
        write_music_manifest(keys, tmp_path / "src", tmp_path / "k2.json", task="key")
    keys[0]["label"] = "H minor"
    with pytest.raises(DatasetError, match="row 1: key 'H minor'"):
        write_music_manifest(keys, tmp_path / "src", tmp_path / "k2.json", task="key",
                             output_audio_dir=tmp_path / "audio")  # fmt: skip


# ---------------------------------------------------------------------------- segments
def test_segment_counts_of_the_music_protocol():
    assert num_segments(698_976, 120_000) == 5  # MERT on an MTAT clip
    assert num_segments(698_976, 698_976) == 1  # MusicFM on it
    assert num_segments(720_000, 719_725) == 1  # MusicFM MTG crop on a 30-s clip
    assert num_segments(2_880_000, 120_000) == 24  # a 120-s GiantSteps key clip
    assert num_segments(100_000, 120_000) == 1  # shorter than a segment: kept whole


def test_segments_read_the_right_spans_and_crops_vary_by_draw(music_root):
    splits = load_dataset("giantsteps_key", music_root)
    extractor = WaveformExtractor(sample_rate=SR, normalize=False)
    loaders = splits.loaders(extractor, batch_size=2, train_crop=5000, eval_segment=5000)
    test = loaders["test"].dataset
    assert isinstance(test, SegmentDataset) and len(test) == 2  # 12,000 samples -> 2 segments
    whole = pk.data.load_audio(splits.test[0].source, SR)
    for k in range(2):
        assert torch.equal(test[k]["input_values"], whole[5000 * k : 5000 * (k + 1)])
        assert test[k]["clip_index"] == 0 and test[k]["label"] == 0
    batch = next(iter(loaders["test"]))
    assert batch["clip_index"].tolist() == [0, 0] and batch["input_values"].shape == (2, 5000)

    train = loaders["train"].dataset
    crops = [train[0]["input_values"] for _ in range(4)]
    assert all(c.shape == (5000,) for c in crops)
    assert len({float(c[0]) for c in crops}) > 1  # a new crop at every draw
    again = splits.loaders(extractor, batch_size=2, train_crop=5000)["train"].dataset
    assert torch.equal(again[0]["input_values"], crops[0])  # same seed, same first crop
    with pytest.raises(ValueError, match="train_crop must be a positive number"):
        splits.loaders(extractor, batch_size=2, train_crop=-1)
    with pytest.raises(ValueError, match="val_crop='center'.*segments"):
        splits.loaders(extractor, batch_size=2, val_crop="center")


def test_manifest_command_line_builds_a_tempo_manifest(tmp_path, sine, write_wav, capsys):
    write_wav("src/blues.00000.wav", sine(0.5, 22050), 22050)
    (tmp_path / "t.csv").write_text("path,split,label\nblues.00000.wav,test,119.6\n")
    args = [str(tmp_path / name) for name in ("t.csv", "src", "t.json")]
    out = build_main([*args, "--task", "tempo", "--output-audio-dir", str(tmp_path / "audio")])
    assert "wrote" in capsys.readouterr().out
    splits = load_music_manifest(out, tmp_path / "audio", task="tempo")
    assert splits.test[0].label == 120 and splits.test[0].meta["length"] == SR // 2
    with pytest.raises(SystemExit):
        build_main([str(tmp_path / "t.csv"), "src", "o.json", "--task", "chords"])


def test_fbank_cache_cannot_be_cropped(music_root):
    splits = load_dataset("giantsteps_key", music_root)
    fbank = pk.data.FbankExtractor(max_length=32)
    with pytest.raises(ValueError, match="fbank cache holds whole-clip features"):
        splits.loaders(fbank, batch_size=2, cache=True, eval_segment=5000)
    assert {"mtg_genre", "mtg_instrument", "mtg_moodtheme"} <= set(pk.data.MUSIC_SETS)
