"""Pitch-shifted (key) and time-stretched (tempo) training copies of music manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import petl_kit as pk
from petl_kit.data import DatasetError
from petl_kit.data.music.augment import augment_manifest, main

SR = 24000


def tone(seconds: float, freq: float, n: int | None = None) -> np.ndarray:
    n = int(round(seconds * SR)) if n is None else n
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def make_set(root: Path, name: str, originals: list[tuple[str, str, object]], n=SR // 2):
    """``root/metadata/<name>.json`` listing 24-kHz tones at ``root/<path>``."""
    rows = []
    for i, (split, path, label) in enumerate(originals):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / path), tone(0, 300 + 40 * i, n), SR, subtype="PCM_16")
        rows.append({"key": Path(path).stem, "split": split, "audio_path": path, "sr": SR,
                     "length": n, "label": label})  # fmt: skip
    manifest = root / "metadata" / f"{name}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest


def read_rows(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def peak_hz(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spec)) * SR / len(wave)


def test_pitch_shift_moves_a_tone_by_the_semitones(tmp_path):
    manifest = make_set(tmp_path, "gs", [("train", "a/440.LOFI.wav", 9)], n=SR)
    sf.write(str(tmp_path / "a/440.LOFI.wav"), tone(1, 440), SR)
    out = augment_manifest(manifest, tmp_path, task="key", shifts=[2, -3])
    up, sr = sf.read(str(tmp_path / "a/440.LOFI.2.wav"))
    down, _ = sf.read(str(tmp_path / "a/440.LOFI.-3.wav"))
    assert sr == SR and len(up) == len(down) == SR  # same length as the original
    assert abs(peak_hz(up) - 440 * 2 ** (2 / 12)) <= 2  # 1-Hz bins
    assert abs(peak_hz(down) - 440 * 2 ** (-3 / 12)) <= 2
    rows = read_rows(out)
    assert rows["440.LOFI.2"]["label"] == 11 and rows["440.LOFI.-3"]["label"] == 6


def test_key_labels_rotate_and_the_manifest_loads(tmp_path):
    originals = [("train", "gs/1.LOFI.wav", 11), ("train", "gs/2.LOFI.wav", 21),
                 ("val", "gs/3.LOFI.wav", 0), ("test", "gs/4.LOFI.wav", 23)]  # fmt: skip
    manifest = make_set(tmp_path, "giantsteps_key", originals, n=SR // 4)
    out = augment_manifest(manifest, tmp_path, task="key")
    assert out == tmp_path / "metadata/giantsteps_key_augmented.json"
    rows = read_rows(out)
    assert len(rows) == 2 * 9 + 2  # val and test are not augmented by default
    b_major = {s: rows[f"1.LOFI.{s}"]["label"] for s in (-4, -3, -2, -1, 1, 2, 3, 4)}
    assert b_major == {-4: 7, -3: 8, -2: 9, -1: 10, 1: 0, 2: 1, 3: 2, 4: 3}  # B +1 = C major
    a_minor = {s: rows[f"2.LOFI.{s}"]["label"] for s in (-4, -1, 1, 2, 3, 4)}
    assert a_minor == {-4: 17, -1: 20, 1: 22, 2: 23, 3: 12, 4: 13}  # A minor +3 = C minor
    assert rows["1.LOFI.-4"]["audio_path"] == "gs/1.LOFI.-4.wav"
    assert rows["1.LOFI.1"]["split"] == "train" and rows["1.LOFI.1"]["length"] == SR // 4
    splits = pk.load_dataset("giantsteps_key", tmp_path)
    assert splits.sizes() == {"train": 18, "val": 1, "test": 1}
    assert {c.meta.get("semitones") for c in splits.train} == {None, -4, -3, -2, -1, 1, 2, 3, 4}
    assert pk.load_dataset("giantsteps_key", tmp_path, augmented=False).sizes()["train"] == 2


def test_tempo_stretch_lengths_labels_and_pitch(tmp_path):
    n = 12001  # odd, so round(n / f) is not trivial
    originals = [("train", "g/blues.00000.wav", 110), ("valid", "g/jazz.00001.wav", 90),
                 ("test", "g/rock.00002.wav", 150)]  # fmt: skip
    manifest = make_set(tmp_path, "gtzan_tempo", originals, n=n)
    sf.write(str(tmp_path / "g/blues.00000.wav"), tone(0, 440, n), SR)
    augment_manifest(manifest, tmp_path, task="tempo")
    rows = read_rows(tmp_path / "metadata/gtzan_tempo_augmented.json")
    for key, bpm in (("blues.00000", 110), ("jazz.00001", 90)):
        for f in (0.95, 0.975, 1.025, 1.05):
            row = rows[f"{key}.{f}"]
            wave, _ = sf.read(str(tmp_path / row["audio_path"]))
            assert len(wave) == row["length"] == round(n / f)
            assert row["label"] == round(bpm * f)
    assert rows["blues.00000.0.95"]["audio_path"] == "g/blues.00000.0.95.wav"
    stretched, _ = sf.read(str(tmp_path / "g/blues.00000.1.05.wav"))
    assert abs(peak_hz(stretched) - 440) <= 2 * SR / len(stretched)  # the pitch stays
    splits = pk.load_dataset("gtzan_tempo", tmp_path)
    assert splits.sizes() == {"train": 5, "val": 5, "test": 1}
    assert sorted(c.label for c in splits.val) == [86, 88, 90, 92, 94]


def test_existing_files_are_never_silently_replaced(tmp_path):
    manifest = make_set(tmp_path, "gs", [("train", "gs/1.LOFI.wav", 3)], n=SR // 8)
    taken = tmp_path / "taken.json"
    taken.write_text("{}\n")
    with pytest.raises(FileExistsError, match="taken.json"):
        augment_manifest(manifest, tmp_path, task="key", out=taken, overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        augment_manifest(manifest, tmp_path, task="key", out=manifest)
    out = augment_manifest(manifest, tmp_path, task="key", shifts=[1])
    with pytest.raises(FileExistsError, match="gs_augmented.json"):
        augment_manifest(manifest, tmp_path, task="key", shifts=[1])
    with pytest.raises(FileExistsError, match=r"1\.LOFI\.1\.wav"):  # audio of an earlier run
        augment_manifest(manifest, tmp_path, task="key", shifts=[1], out=tmp_path / "new.json")
    assert len(read_rows(out)) == 2 and taken.read_text() == "{}\n"
    augment_manifest(manifest, tmp_path, task="key", shifts=[1], out=manifest, overwrite=True)
    assert set(read_rows(manifest)) == {"1.LOFI", "1.LOFI.1"}


def test_errors_name_the_problem(tmp_path):
    manifest = make_set(tmp_path, "gs", [("train", "gs/1.LOFI.wav", 3)], n=SR // 8)
    with pytest.raises(ValueError, match="'multilabel'"):
        augment_manifest(manifest, tmp_path, task="multilabel")
    with pytest.raises(ValueError, match="pitch shift 0"):
        augment_manifest(manifest, tmp_path, task="key", shifts=[1, 0])
    with pytest.raises(ValueError, match="0.5"):
        augment_manifest(manifest, tmp_path, task="key", shifts=[0.5])
    for bad in (0, -0.9):
        with pytest.raises(ValueError, match=f"factor {bad!r}"):
            augment_manifest(manifest, tmp_path, task="tempo", factors=[bad])
    with pytest.raises(ValueError, match="takes shifts"):
        augment_manifest(manifest, tmp_path, task="key", factors=[0.95])
    with pytest.raises(ValueError, match="'dev'"):
        augment_manifest(manifest, tmp_path, task="key", splits=["dev"])
    (tmp_path / "gs/1.LOFI.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1\.LOFI\.wav"):
        augment_manifest(manifest, tmp_path, task="key")
    tempo = make_set(tmp_path, "t", [("train", "g/a.wav", 290)], n=SR // 8)
    with pytest.raises(DatasetError, match="290"):  # 290 x 1.05 = 304: beyond the 300 bins
        augment_manifest(tempo, tmp_path, task="tempo")
    done = make_set(tmp_path, "done", [("train", "d/7.wav", 2), ("train", "d/7.2.wav", 4)])
    with pytest.raises(DatasetError, match=r"'7\.2'.*already an augmented copy of '7'"):
        augment_manifest(done, tmp_path, task="key")
    assert not list(tmp_path.rglob("*_augmented.json"))  # nothing written on error


def test_command_line(tmp_path, capsys):
    manifest = make_set(tmp_path, "gtzan", [("val", "g/x.1.wav", 100)], n=SR // 8)
    out = main([str(manifest), str(tmp_path), "--task", "tempo", "--factors", "0.5", "2",
                "--out", str(tmp_path / "aug.json")])  # fmt: skip
    assert out == tmp_path / "aug.json" and "wrote" in capsys.readouterr().out
    rows = read_rows(out)
    assert {k: r["label"] for k, r in rows.items()} == {"x.1": 100, "x.1.0.5": 50, "x.1.2.0": 200}
    assert rows["x.1.2.0"]["length"] == round(SR // 8 / 2)
