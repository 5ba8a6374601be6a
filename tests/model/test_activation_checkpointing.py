"""Activation checkpointing (model.checkpointing): the same loss and gradients as a plain step for
every family and the methods that inject modules inside blocks, recomputation really happens in
backward (with the padding context of Soft-MoA) and is not recorded twice by a routing recorder,
no effect without autograd, and the run
parameter reaches ``fit`` through ``run_experiment``."""

import random
from copy import deepcopy

import numpy as np
import pytest
import torch

import petl_kit as pk
from petl_kit.analysis.routing import RoutingRecorder
from petl_kit.backbones import anatomy
from petl_kit.backbones.registry import tiny_config
from petl_kit.config import ConfigError, build
from petl_kit.methods import padding
from petl_kit.model.checkpointing import (
    activation_checkpointing,
    is_checkpointed,
    recomputing,
    set_activation_checkpointing,
)
from petl_kit.training.train import TrainConfig
from tests.conftest import example_input

FAMILIES = ("ast", "wav2vec2", "hubert", "mert", "musicfm")
METHODS = ("full_ft", "lora", "adapter", "prompt_tuning", "prefix_tuning", "soft_moa")
SMALL = {"lora": {"rank": 4}, "adapter": {"bottleneck": 4}, "soft_moa": {"bottleneck": 4},
         "dense_moa": {"bottleneck": 4}}  # fmt: skip


def _model(family: str, method: str, **options):
    torch.manual_seed(0)
    # frozen modules in train mode: dropout (and wav2vec2's SpecAugment, LayerDrop) act
    options = {"frozen_modules_train_mode": True, **options}
    return pk.build_model(family, None, backbone_config=tiny_config(family), num_classes=3,
                          method=method, method_config=SMALL.get(method),
                          options=options)  # fmt: skip


def _step(model, x, mask, checkpointed: bool, seed: int = 1):
    """One seeded training step: ``(loss, {name: grad})`` of every trainable tensor (None: the
    loss does not reach it: the prefix of a block that LayerDrop skipped in this step)."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    np.random.seed(seed)  # HF SpecAugment masks draw from numpy
    random.seed(seed)
    with activation_checkpointing(model, checkpointed):
        loss = torch.nn.functional.cross_entropy(model(x, mask), torch.tensor([0, 2]))
        loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_same_loss_and_gradients(family, method):
    model = _model(family, method)
    x, mask = example_input(family)
    plain_loss, plain = _step(model, x, mask, checkpointed=False)
    attention = anatomy.sublayer(anatomy.layers(model.backbone)[0], anatomy.ATTENTION,
                                 anatomy.anatomy_of(model.backbone))  # fmt: skip
    calls = _count_calls(attention)
    loss, grads = _step(model, x, mask, checkpointed=True)
    assert calls[0] == 2  # the block ran in the forward pass and again in backward
    assert torch.allclose(loss, plain_loss, atol=1e-6, rtol=0)
    assert grads.keys() == plain.keys() and any(g is not None for g in plain.values())
    for name, g in grads.items():
        assert (g is None) == (plain[name] is None), name
        if g is not None:
            torch.testing.assert_close(g, plain[name], atol=1e-6, rtol=0, msg=name)
    assert not is_checkpointed(model)  # the context manager restored the plain blocks


def test_dropout_is_replayed_in_the_recomputation():
    model = _model("wav2vec2", "lora", pass_attention_mask=True)
    x, mask = example_input("wav2vec2")
    first, _ = _step(model, x, mask, checkpointed=False, seed=1)
    other, _ = _step(model, x, mask, checkpointed=False, seed=2)
    assert not torch.equal(first, other)  # dropout is on: the seed changes the loss
    loss, grads = _step(model, x, mask, checkpointed=True, seed=2)
    _, plain = _step(model, x, mask, checkpointed=False, seed=2)
    assert torch.equal(loss, other)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("family", ("ast", "musicfm"))
def test_autocast_is_replayed_in_the_recomputation(family):
    model = _model(family, "lora")
    x, mask = example_input(family)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # precision="bf16"
        plain_loss, plain = _step(model, x, mask, checkpointed=False)
        loss, grads = _step(model, x, mask, checkpointed=True)
    assert torch.equal(loss, plain_loss)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("family", ("wav2vec2", "musicfm"))
def test_soft_moa_sees_the_valid_frames_when_recomputed(family):
    model = _model(family, "soft_moa", pass_attention_mask=True)
    x, mask = example_input(family)  # the last example is padded
    seen = []
    mixture = next(m for m in model.modules() if type(m).__name__ == "SoftMoA")
    mixture.register_forward_pre_hook(lambda m, args: seen.append(padding.current()))
    _, plain = _step(model, x, mask, checkpointed=False)
    _, grads = _step(model, x, mask, checkpointed=True)
    assert len(seen) == 3  # plain forward, checkpointed forward, recomputation in backward
    assert all(s is not None and not bool(s.all()) for s in seen)  # the padded batch's mask
    torch.testing.assert_close(seen[2], seen[1])
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("method", ("soft_moa", "dense_moa"))
def test_a_routing_recorder_keeps_one_record_per_forward(method):
    """The recomputation in backward runs the mixtures again; the recorder keeps the forward's."""
    model = _model("ast", method)
    x, mask = example_input("ast")
    records = {}
    for checkpointed in (False, True):
        with RoutingRecorder(model) as recorder:
            _step(model, x, mask, checkpointed=checkpointed)
        records[checkpointed] = recorder.records
        assert all(len(calls) == 1 for calls in recorder.records.values()), checkpointed
    for site, (plain,) in records[False].items():
        for name, value in plain.items():
            torch.testing.assert_close(records[True][site][0][name], value, atol=0, rtol=0)
    assert recomputing() is False


@pytest.mark.parametrize("family", ("ast", "musicfm"))
def test_no_effect_without_autograd(family):
    model = _model(family, "lora").eval()
    x, mask = example_input(family)
    with torch.no_grad():
        plain = model(x, mask)
    set_activation_checkpointing(model, True)
    assert is_checkpointed(model)
    attention = anatomy.sublayer(anatomy.layers(model.backbone)[0], anatomy.ATTENTION,
                                 anatomy.anatomy_of(model.backbone))  # fmt: skip
    calls = _count_calls(attention)
    with torch.no_grad():
        out = model(x, mask)
    assert calls[0] == 1
    assert torch.equal(out, plain)
    keys = set(model.state_dict())  # parameters and their names are the blocks' own
    set_activation_checkpointing(model, False)
    assert not is_checkpointed(model) and keys == set(model.state_dict())


def test_a_deep_copy_recomputes_its_own_blocks():
    model = set_activation_checkpointing(_model("musicfm", "lora"), True)
    copy = deepcopy(model)
    assert is_checkpointed(copy)
    x, mask = example_input("musicfm")
    loss = torch.nn.functional.cross_entropy(copy.train()(x, mask), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is None for p in model.parameters())  # nothing reached the original
    assert any(p.grad is not None for p in copy.backbone.parameters())


def test_the_switch_is_checked():
    model = _model("ast", "lora")
    with pytest.raises(TypeError, match="activation_checkpointing"):
        set_activation_checkpointing(model, "yes")
    with pytest.raises(ConfigError, match="activation_checkpointing"):
        build(TrainConfig, {"activation_checkpointing": "yes"})


def test_run_parameter_reaches_fit_with_the_same_result(tmp_path, tiny_checkpoints, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    params = dict(
        experiment="t", method="lora", rank=4, dataset="synthetic", data_path=None,
        n_per_class=3, backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100,
        epochs=1, batch_size=8, lr=None, seed=0, profile="corrected", device="cpu",
        progress=False,
    )  # fmt: skip
    assert "activation_checkpointing" in pk.experiments.runs.known_keys("lora")
    plain = pk.run_experiment(params, tmp_path / "plain")
    ckpt = pk.run_experiment({**params, "activation_checkpointing": True}, tmp_path / "ckpt")
    assert is_checkpointed(ckpt.model) and not is_checkpointed(plain.model)
    assert ckpt.params["activation_checkpointing"] is True
    history, plain_history = ckpt.fit.history[0], plain.fit.history[0]
    assert history["train_loss"] == pytest.approx(plain_history["train_loss"], abs=1e-6)
    assert ckpt.metrics["test"]["accuracy"] == plain.metrics["test"]["accuracy"]
