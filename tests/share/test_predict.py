"""load_run and predict: the run's pipeline on new audio, any length, files or arrays."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import petl_kit as pk
from petl_kit.errors import AudioError
from petl_kit.training.metrics import evaluate
from tests.share.conftest import tone


def test_run_folder_keeps_labels_and_load_run_reads_them(make_run):
    folder = make_run("ast", "lora")
    labels = json.loads((folder / "labels.json").read_text())
    run = pk.load_run(folder)
    assert run.labels == labels and len(labels) == 12 and labels[0] == "tone"
    assert run.task == "multiclass" and run.segment is None and not run.model.training
    assert run.extractor.max_length == 100


def test_predict_equals_the_runs_evaluation(make_run):
    folder = make_run("ast", "lora")
    run = pk.load_run(folder)
    splits = pk.load_dataset("synthetic", None, n_per_class=3)
    loader = splits.loaders(run.extractor, batch_size=4)["test"]
    _, out = evaluate(run.model, loader, "multiclass", return_outputs=True)
    table = run.predict([c.source for c in splits.test], batch_size=3)
    expected = torch.softmax(out["logits"], -1).numpy()
    assert np.abs(table[run.labels].to_numpy() - expected).max() < 1e-6
    assert list(table.columns[:5]) == ["file", "seconds", "segments", "label", "probability"]
    top = expected.argmax(1)
    assert table["label"].tolist() == [run.labels[i] for i in top]
    assert np.allclose(table["probability"], expected.max(1))


def test_predict_reads_files_folders_and_other_rates(make_run, tmp_path):
    run = pk.load_run(make_run("ast", "lora"))
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    wave = tone(1.0)
    sf.write(clips / "a.wav", wave, 16000)
    sf.write(clips / "sub" / "b.flac", tone(3.5, freq=900), 16000)
    sf.write(tmp_path / "c.wav", tone(1.0, rate=22050), 22050)  # resampled to 16 kHz
    (clips / "notes.txt").write_text("not audio")
    table = run.predict([clips, tmp_path / "c.wav"], progress=False)
    assert [p.split("/")[-1] for p in table["file"]] == ["a.wav", "b.flac", "c.wav"]
    assert table["seconds"].tolist() == pytest.approx([1.0, 3.5, 1.0], abs=1e-3)
    from_array = run.predict(wave)  # the same samples as an array at the run's rate
    assert np.abs(from_array[run.labels].to_numpy() - table[run.labels].to_numpy()[:1]).max() < 1e-6


def test_predict_bad_input_gets_the_loaders_errors(make_run, tmp_path):
    run = pk.load_run(make_run("ast", "lora"))
    with pytest.raises(AudioError, match="not found: .*missing.wav"):
        run.predict(tmp_path / "missing.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioError, match="cannot read audio file .*broken.wav"):
        run.predict([tmp_path / "broken.wav"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="holds no audio file"):
        run.predict(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"shape \(2, 100\).*mono"):
        run.predict(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(AudioError, match="empty waveform"):
        run.predict(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="threshold"):
        run.predict(tone(1.0), threshold=2.0)


def test_predict_uses_the_segment_protocol(make_run):
    folder = make_run("wav2vec2", "linear", max_length=None, eval_segment=4000)
    run = pk.load_run(folder)
    assert run.segment == 4000 and run.aggregate == "mean_prob"
    wave = tone(0.9, freq=300)  # 14,400 samples: 3 segments, the remainder dropped
    table = run.predict(wave)
    assert table["segments"].tolist() == [3]
    with torch.no_grad():
        pieces = torch.stack([torch.from_numpy(wave[k * 4000 : (k + 1) * 4000]) for k in range(3)])
        feats = torch.stack([run.extractor(p)[0] for p in pieces])
        expected = torch.softmax(run.model(feats), -1).mean(0).numpy()
    assert np.abs(table[run.labels].to_numpy()[0] - expected).max() < 1e-5


def test_load_run_refuses_what_it_cannot_load(make_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        pk.load_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "params.yaml").write_text("method: lora\n")
    with pytest.raises(FileNotFoundError, match="weights"):
        pk.load_run(tmp_path / "half")
    import shutil

    failed = tmp_path / "failed"
    shutil.copytree(make_run("ast", "lora"), failed)
    (failed / "metrics.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ValueError, match="did not complete"):
        pk.load_run(failed)


def test_predict_tables_of_multilabel_and_key_runs(make_run):
    run = pk.load_run(make_run("ast", "lora"))
    wave = tone(1.0)
    run.model.task = "multilabel"  # the same outputs read as independent tags (sigmoid)
    with torch.no_grad():
        feats = run.extractor(torch.from_numpy(wave))[None]
        sig = torch.sigmoid(run.model(feats))[0].numpy()
    threshold = float(np.sort(sig)[-3])  # the three highest tags are on
    table = run.predict(wave, threshold=threshold)
    on = [run.labels[i] for i in np.flatnonzero(sig >= threshold)]
    assert table["tags"].tolist() == [";".join(on)] and len(on) == 3
    assert np.abs(table[run.labels].to_numpy()[0] - sig).max() < 1e-6
    run.model.task = "key"
    assert "key" in run.predict(wave).columns


def test_predict_reads_a_tempo_run_as_bpm(make_run):
    """Tempo: ``tempo_bpm`` is the read-out of the 300 bin probabilities (a head whose
    probabilities peak at 123 BPM whatever the input)."""
    from petl_kit.training.music_tasks import TEMPO_BINS, TEMPO_CLASSES, tempo_readout

    run = pk.load_run(make_run("ast", "linear"))
    head = torch.nn.Linear(run.model.backbone.config.hidden_size, TEMPO_BINS)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(-0.5 * ((torch.arange(TEMPO_BINS) - 123.0) / 2.0) ** 2)
    run.model.head, run.model.task = head, "tempo"
    run.labels = list(TEMPO_CLASSES)
    table = run.predict([tone(1.0), tone(2.0, freq=220.0)])
    assert list(table.columns) == ["file", "seconds", "segments", "tempo_bpm"]
    assert table["tempo_bpm"].to_numpy() == pytest.approx([123.0, 123.0], abs=0.01)
    _, probs, _ = run.probabilities([tone(1.0)])
    assert table["tempo_bpm"][0] == tempo_readout(probs)[0]
