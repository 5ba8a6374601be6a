"""Exports end to end, offline: transformers pipeline, PEFT adapter, the kit's format, card."""

import json

import numpy as np
import pytest
import torch

import petl_kit as pk
from petl_kit.errors import ExportError
from tests.share.conftest import tone


@pytest.mark.parametrize("method", ["lora", "bitfit", "linear"])
def test_hf_pipeline_scores_equal_predict(make_run, tmp_path, method):
    from transformers import pipeline

    run = pk.load_run(make_run("wav2vec2", method))
    out = pk.export_run(run.folder, tmp_path / "hf", "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["0"] == run.labels[0] and len(config["id2label"]) == 12
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["sampling_rate"] == 16000 and pre["do_normalize"] is True
    assert not any(p.suffix in (".bin", ".pt") for p in out.rglob("*"))
    wave = tone(1.0, freq=700, seed=3)  # max_length = 16000 samples: the run's crop length
    scores = pipeline("audio-classification", model=str(out))(
        {"raw": wave, "sampling_rate": 16000}, top_k=12
    )
    expected = run.predict(wave).iloc[0]
    assert len(scores) == 12
    for s in scores:
        assert s["score"] == pytest.approx(expected[s["label"]], abs=1e-4)
    assert scores[0]["label"] == expected["label"]
    card = (out / "README.md").read_text()
    assert 'pipeline("audio-classification"' in card and method in card


def test_hf_refuses_what_the_stock_classes_cannot_compute(make_run, tmp_path):
    with pytest.raises(ExportError, match="LayerNorm.*--format kit.*--format peft"):
        pk.export_run(make_run("ast", "lora"), tmp_path / "a", "hf")
    with pytest.raises(ExportError, match="method 'adapter'.*petl_.*--format kit"):
        pk.export_run(make_run("wav2vec2", "adapter"), tmp_path / "b", "hf")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_peft_adapter_loads_onto_the_stock_backbone(make_run, tmp_path):
    from peft import PeftModel
    from transformers import ASTModel

    run = pk.load_run(make_run("ast", "lora"))
    out = pk.export_run(run.folder, tmp_path / "peft", "peft")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4  # hidden 32 / reduction_rate 8
    backbone = PeftModel.from_pretrained(ASTModel.from_pretrained(out / "base"), out).eval()
    feats = torch.stack([run.extractor(torch.from_numpy(tone(1.0, seed=s))) for s in range(2)])
    with torch.no_grad():
        kit_hidden = run.model.backbone(feats).last_hidden_state
        peft_hidden = backbone(feats).last_hidden_state
        plain = ASTModel.from_pretrained(out / "base").eval()(feats).last_hidden_state
    assert torch.allclose(peft_hidden, kit_hidden, atol=1e-5)
    assert not torch.allclose(plain, kit_hidden, atol=1e-3)  # the adapter changes the output
    from safetensors.torch import load_file

    head = load_file(str(out / "head" / "head.safetensors"))
    logits = torch.nn.functional.linear(run.model.pool(peft_hidden), head["weight"], head["bias"])
    assert torch.allclose(logits, run.model(feats), atol=1e-5)


def test_peft_refuses_other_methods(make_run, tmp_path):
    with pytest.raises(ExportError, match="PEFT.*'bitfit'.*--format kit"):
        pk.export_run(make_run("wav2vec2", "bitfit"), tmp_path / "p", "peft")


@pytest.mark.parametrize("method", ["adapter", "soft_moa"])
def test_kit_export_predicts_as_the_run(make_run, tmp_path, method):
    run = pk.load_run(make_run("ast", method))
    out = pk.export_run(run.folder, tmp_path / "kit", "kit")
    assert (out / "weights" / "trainable.safetensors").is_file()
    assert (out / "backbone" / "config.json").is_file()  # a local checkpoint travels along
    assert json.loads((out / "labels.json").read_text()) == run.labels
    again = pk.load_run(out)
    assert again.model.build_args["checkpoint"] == str(out / "backbone")  # not the original
    waves = [tone(1.0, seed=1), tone(2.5, freq=1500, seed=2)]
    a = run.predict(waves)[run.labels].to_numpy()
    b = again.predict(waves)[run.labels].to_numpy()
    assert np.abs(a - b).max() < 1e-6
    with pytest.raises(ExportError, match="not empty"):
        pk.export_run(run.folder, out, "kit")


def test_model_card_reports_metrics_ledger_versions_and_spread(make_run, tmp_path):
    folder = make_run("ast", "lora")
    out = pk.export_run(folder, tmp_path / "one", "kit")
    card = (out / "README.md").read_text()
    for text in (
        "checkpoint",
        "method: `lora`",
        "trainable parameters",
        "data set: `synthetic`",
        "one run: no spread",
        "forward GFLOPs per example",
        "torch:",
        "## Use",
    ):
        assert text in card, text
    # a second seed of the same setting beside it: the card gives mean ± std over both
    import petl_kit.experiments.provenance as prov

    params = prov.load_yaml((folder / "params.yaml").read_text())
    other = folder.parent / "seed1"
    pk.run_experiment({**params, "seed": 1, "run_dir": str(other)}, run_dir=other)
    card = (pk.export_run(folder, tmp_path / "two", "kit") / "README.md").read_text()
    assert "mean ± std over 2 seeds" in card


def test_unknown_format_is_refused(make_run, tmp_path):
    with pytest.raises(ExportError, match="valid formats: hf, peft, kit"):
        pk.export_run(make_run("ast", "lora"), tmp_path / "x", "onnx")
