"""The efficiency ledger: FLOPs, latency, merged latency, the run ledger, Pareto fronts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import petl_kit as pk
from petl_kit import efficiency
from petl_kit.efficiency import pareto_front
from petl_kit.training.train import FitResult
from tests.conftest import example_input


def _model(method, family="ast", **cfg):
    return pk.build_model(
        family, backbone_config="tiny", num_classes=3, method=method, method_config=cfg, seed=0
    ).eval()


class _Toy(nn.Module):
    """8 → 6 → 2 with an injected 6 → 6 module: hand-countable FLOPs."""

    def __init__(self):
        super().__init__()
        self.body, self.petl_extra, self.out = nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.body(x)
        return self.out(h + self.petl_extra(h))


# ---------------------------------------------------------------------------- FLOPs
def test_flops_match_a_hand_count():
    x = torch.randn(5, 8)
    flops = efficiency.flops_per_example(_Toy(), x)
    # a matmul [m, k] @ [k, n] is 2·m·k·n FLOPs; per example m = 1
    assert flops == {"total": 2 * (8 * 6 + 6 * 6 + 6 * 2), "method": 2 * 6 * 6}
    both = efficiency.flops_per_example(_Toy(), x, backward=True)
    assert both["method"] == 2 * 6 * 6 and both["total"] > 2 * flops["total"]


class _Attention(nn.Module):
    def forward(self, q):
        return nn.functional.scaled_dot_product_attention(q, q, q)


def test_flops_count_attention_on_cpu():
    q = torch.randn(2, 4, 10, 8)  # [b, heads, tokens, head dim]
    # QKᵀ and AV: 2 · (2 · n · n · d) per head
    assert efficiency.flops_per_example(_Attention(), q)["total"] == 4 * 2 * (2 * 10 * 10 * 8)
    x, _ = example_input("ast")
    plain = efficiency.flops_per_example(_model("linear"), x)["total"]
    for method in ("prompt_tuning", "prefix_tuning"):  # more tokens to attend over: dearer
        assert efficiency.flops_per_example(_model(method), x)["total"] > plain, method


def test_flops_lora_attribution_and_merge():
    model = _model("lora", reduction_rate=8)
    x, _ = example_input("ast")
    flops = efficiency.flops_per_example(model, x)
    plain = efficiency.flops_per_example(_model("linear"), x)
    assert flops["method"] > 0 and flops["total"] == pytest.approx(plain["total"] + flops["method"])
    model.merge()  # merged LoRA costs what the plain backbone costs
    assert efficiency.flops_per_example(model, x) == {"total": plain["total"], "method": 0}


def test_flops_with_attention_mask():
    model = _model("adapter", "wav2vec2", reduction_rate=8)
    x, mask = example_input("wav2vec2")
    flops = efficiency.flops_per_example(model, x, mask)
    assert flops["total"] > flops["method"] > 0


# ---------------------------------------------------------------------------- latency
def test_inference_latency_median_and_mode_restored():
    model = _model("bitfit").train()
    x, _ = example_input("ast", batch=4)
    out = efficiency.inference_latency(model, x, repeats=3, warmup=1)
    assert model.training and out["batch"] == 4 and len(out["ms_all"]) == 3
    assert out["ms_per_batch"] == pytest.approx(float(np.median(out["ms_all"])))
    assert out["ms_per_example"] == pytest.approx(out["ms_per_batch"] / 4)
    with pytest.raises(ValueError, match="repeats = 0"):
        efficiency.inference_latency(model, x, repeats=0)


def test_merged_latency_checks_outputs_and_restores_weights():
    model = _model("lora", reduction_rate=8)
    with torch.no_grad():  # a trained-looking update (B is zero at init)
        for name, p in model.named_parameters():
            if "petl_lora" in name:
                p.normal_(0, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = example_input("ast")
    ref = model(x)
    out = efficiency.merged_latency(model, x, repeats=2)
    assert out["outputs_agree"] and 0 < out["max_abs_diff"] < 1e-4 and len(out["ms_all"]) == 2
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert torch.equal(model(x), ref)


@pytest.mark.parametrize("training", [False, True])
def test_merged_latency_leaves_a_merge_on_eval_model_as_it_was(training):
    model = _model("lora", reduction_rate=8, merge_on_eval=True, lora_init="reference_effective")
    model.train(training)  # eval: merged (the music reference's behaviour), train: unmerged
    flags = [m.merged for m in model.modules() if hasattr(m, "merged")]
    assert set(flags) == {not training}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = efficiency.merged_latency(model, example_input("ast")[0], repeats=1)
    assert out["outputs_agree"] and model.training == training
    assert [m.merged for m in model.modules() if hasattr(m, "merged")] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------- the run ledger
def _loaders(family="ast", batch=10):
    x, mask = example_input(family, batch=batch)
    b = {"input_values": x, "labels": torch.zeros(batch, dtype=torch.long)}
    if mask is not None:
        b["attention_mask"] = mask
    return {"train": [b], "test": [b]}


FIT = FitResult(train_seconds=2.0, wall_seconds=3.0, peak_memory_mb=100.0, steps=4,
                examples_per_second=16.0, peak_memory_kind="process_peak_rss")  # fmt: skip


@pytest.mark.parametrize("method,family", [("bitfit", "ast"), ("lora", "wav2vec2")])
def test_run_ledger_fields(method, family):
    model = _model(method, family, **({"reduction_rate": 8} if method == "lora" else {})).train()
    ledger = efficiency.run_ledger(model, FIT, _loaders(family), max_examples=3, repeats=2)
    assert model.training
    counts = pk.count_parameters(model)
    assert ledger["parameters"] == counts and ledger["stored_bytes"] == 4 * counts["trainable"]
    assert ledger["flops_per_example"]["total"] > 0
    assert ledger["inference"]["batch"] == 3 and ledger["inference"]["ms_per_example"] > 0
    for key in ("train_seconds", "wall_seconds", "examples_per_second", "steps", "peak_memory_mb"):
        assert ledger[key] == getattr(FIT, key), key
    assert ledger["gflops"] == pytest.approx(ledger["flops_per_example"]["total"] / 1e9)
    assert ledger["latency_ms"] == ledger["inference"]["ms_per_example"]
    if pk.get_method(method).merges:  # the registry says whether the method folds into W
        assert ledger["merged"]["outputs_agree"] and ledger["merged"]["batch"] == 3
        assert ledger["merged_agree"] is True and ledger["merged_latency_ms"] > 0
    else:
        assert ledger["merged"] is None and ledger["merged_latency_ms"] is None
    assert ledger["errors"] == {}
    json.dumps(ledger)  # plain JSON


def test_run_ledger_keeps_going_when_a_measure_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no formula for this op")

    monkeypatch.setattr(efficiency.ledger, "flops_per_example", broken)
    model = _model("bitfit")
    with pytest.warns(UserWarning, match="flops not measured"):
        ledger = efficiency.run_ledger(model, FIT, _loaders(), repeats=1)
    assert ledger["errors"] == {"flops": "RuntimeError: no formula for this op"}
    assert ledger["flops_per_example"] is None and ledger["gflops"] is None
    assert ledger["latency_ms"] > 0 and ledger["stored_bytes"] > 0
    with pytest.warns(UserWarning, match="batch not measured"):
        ledger = efficiency.run_ledger(model, FIT, {"train": []})
    assert set(ledger["errors"]) == {"batch"} and ledger["inference"] is None


def test_ledger_batch_falls_back_and_fails_clearly():
    loaders = _loaders()
    inputs, mask = efficiency.ledger_batch({"train": loaders["train"], "test": []}, 4)
    assert inputs.shape[0] == 4 and mask is None
    with pytest.raises(ValueError, match="no non-empty loader"):
        efficiency.ledger_batch({"train": []})


def test_every_run_writes_the_ledger(tmp_path, monkeypatch, tiny_checkpoints):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    params = dict(
        experiment="ledger", method="lora", dataset="synthetic", data_path=None, n_per_class=3,
        backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100, epochs=1,
        batch_size=8, lr=None, seed=0, profile="corrected", device="cpu", progress=False,
        reduction_rate=8,
    )  # fmt: skip
    result = pk.run_experiment(params)
    ledger = json.loads((result.run_dir / "ledger.json").read_text())
    assert ledger["parameters"]["trainable"] == result.metrics["trainable_params"]
    assert ledger["flops_per_example"]["method"] > 0 and ledger["merged"]["outputs_agree"]
    assert ledger["inference"]["batch"] == min(8, result.splits.sizes()["test"])
    # measuring stays a small part of a tiny run
    assert ledger["ledger_seconds"] < max(1.0, ledger["wall_seconds"])


# ---------------------------------------------------------------------------- Pareto
def _front(costs, scores):
    table = pd.DataFrame({"c": costs, "s": scores}, index=[f"r{i}" for i in range(len(costs))])
    return pareto_front(table, cost="c", score="s")


def test_pareto_front_basic():
    front = _front([1, 2, 3, 4], [0.5, 0.4, 0.7, 0.9])
    assert front.tolist() == [True, False, True, True] and front.index[1] == "r1"
    table = pd.DataFrame({"trainable_params": [10, 5], "test_accuracy": [0.9, 0.8]})
    assert pareto_front(table).tolist() == [True, True]  # defaults name the columns


def test_pareto_front_ties():
    # equal cost and score: both on the front; equal cost, lower score: dominated
    assert _front([1, 1, 1], [0.5, 0.5, 0.4]).tolist() == [True, True, False]
    # a dearer row that only ties a cheaper one's score is dominated
    assert _front([1, 2], [0.5, 0.5]).tolist() == [True, False]
    # order of rows does not matter
    assert _front([3, 1, 2], [0.9, 0.2, 0.9]).tolist() == [False, True, True]


def test_pareto_front_missing_values_and_errors():
    front = _front([1, np.nan, 3, 2], [0.1, 0.9, np.nan, 0.5])
    assert front.tolist() == [True, False, False, True]
    assert _front([], []).tolist() == []
    with pytest.raises(KeyError, match="no column 'gflops'"):
        pareto_front(pd.DataFrame({"c": [1]}), cost="gflops", score="c")
