"""``precision`` as a run parameter (fp32 | bf16 | fp16 | auto): autocast on CPU as on CUDA,
loss and metrics in fp32, recorded in the fit, the metrics and the ledger."""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import petl_kit as pk
from petl_kit.config import build
from petl_kit.experiments.provenance import read_json
from petl_kit.training import precision as prec
from petl_kit.training.metrics import forward_batch
from petl_kit.training.train import TrainConfig, fit

CPU = torch.device("cpu")


def _model(seed=0):
    config = pk.tiny_config("ast", max_length=32, num_mel_bins=32)
    return pk.build_model("ast", backbone_config=config, num_classes=3, method="bitfit", seed=seed)


def _loaders():
    g = torch.Generator().manual_seed(0)
    batch = {"input_values": torch.randn(6, 32, 32, generator=g), "labels": torch.arange(6) % 3}
    return {"train": [batch], "val": [batch], "test": [batch]}


def _cfg(**values):
    return build(TrainConfig, {"progress": False, "device": "cpu", "epochs": 1, **values})


@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_default_is_fp32_in_both_profiles(profile):
    assert build(TrainConfig, {}, profile).precision == "fp32"


def test_paper1_presets_train_in_fp32():
    """PETL_AST trained in fp32: its presets (params/paper1, the reference profile) must too."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    files = sorted((Path(__file__).resolve().parents[2] / "params" / "paper1").rglob("*.yaml"))
    assert files
    for file in files:
        params = yaml.safe_load(file.read_text())
        train = {k: v for k, v in params.items() if k in fields and k != "profile"}
        assert build(TrainConfig, train, params["profile"]).precision == "fp32", file


def test_unknown_precision_names_the_valid_ones():
    with pytest.raises(pk.ConfigError, match="precision.*'fp32'.*'bf16'.*'fp16'.*'auto'"):
        build(TrainConfig, {"precision": "fp8"})


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_autocast_acts_on_cpu_and_logits_come_back_fp32(name):
    model = _model().eval()
    batch = _loaders()["test"][0]
    seen = []
    handle = model.head.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.no_grad():
        logits, _ = forward_batch(model, batch, CPU, name)
        ref, _ = forward_batch(model, batch, CPU, "fp32")
    handle.remove()
    assert seen == [prec.DTYPES[name], torch.float32]  # the head ran under the autocast
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, ref) and torch.allclose(logits, ref, atol=0.1)


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert prec.resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert prec.resolve_precision("auto", CPU) == "fp32"
    assert prec.resolve_precision("fp16", CPU) == "fp16"


def test_fp16_scales_the_loss_and_trains():
    result = fit(_model(), _loaders(), _cfg(precision="fp16", grad_clip=1.0))
    assert result.precision == "fp16" and result.steps == 1
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_run_records_precision_in_metrics_and_ledger(tmp_path, tiny_checkpoints):
    params = dict(
        experiment="t", method="bitfit", dataset="synthetic", data_path=None, n_per_class=3,
        backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100, epochs=1,
        batch_size=8, lr=None, seed=0, profile="corrected", device="cpu", precision="bf16",
        progress=False,
    )  # fmt: skip
    result = pk.run_experiment(params, tmp_path / "run")
    assert result.metrics["precision"] == "bf16"
    assert read_json(tmp_path / "run" / "ledger.json")["precision"] == "bf16"
    assert read_json(tmp_path / "run" / "metrics.json")["precision"] == "bf16"


def test_map_records_the_tags_it_dropped():
    from petl_kit.training.metrics import compute_metrics

    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]])
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.2, 0.8, 0.5, 0.3], [0.7, 0.3, 0.5, 0.9]])
    m = compute_metrics("multilabel", scores, labels)
    assert m["mAP_tags_dropped"] == 1  # tag 2 has no positive
    assert m["mAP"] == pytest.approx((1.0 + 1.0 + 1.0) / 3)


@pytest.mark.parametrize(
    ("flags", "native", "auto"),
    [("fpu avx2 avx512f avx512_vnni", False, "fp32"), ("fpu avx512f amx_bf16", True, "bf16")],
)
def test_cpu_summary_reads_the_bf16_flags(monkeypatch, flags, native, auto):
    text = f"processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: {flags}\n\n"
    monkeypatch.setattr(prec, "_cpuinfo", lambda: text)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    s = prec.cpu_summary()
    assert s["model"] == "Test CPU @ 2.0GHz" and s["capability"] == "AVX512"
    assert s["matrix_flags"] == sorted(f for f in flags.split() if f != "fpu" and f != "avx2")
    assert s["native_bf16"] is native and s["auto"] == auto
