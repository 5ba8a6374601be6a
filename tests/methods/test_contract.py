"""Contract checks every registered method passes on tiny AST, wav2vec2 and HuBERT (design §6).

Per-method facts come from the registry entry (``identity_at_init``, ``merges``,
``test_config``, ``needs_grad_steps``), never from ``isinstance`` special cases here.
"""

import pytest
import torch

import petl_kit as pk
from tests.conftest import FAMILIES, example_input, train_steps

CASES = [(m, f) for m in pk.list_methods() for f in FAMILIES]
# q·(k + b) = q·k + q·b shifts every key's score by the same amount for a query, and softmax is
# shift-invariant: the key bias can never change the output (BitFit and full FT still train it),
# nor can SSF's shift of the keys (β of k: the same constant per channel for every key).
INERT = ("k_proj.bias", "k_proj.petl_ssf.shift")


def _build(method, family, ckpt, **kw):
    spec = pk.get_method(method)
    return pk.build_model(
        backbone=family,
        checkpoint=str(ckpt),
        num_classes=5,
        method=method,
        method_config=kw.pop("method_config", spec.test_config),
        seed=1,
        **kw,
    )


def _steps(model, family, n):
    x, mask = example_input(family)
    return train_steps(model, x, mask, torch.tensor([0, 3]), n)


@pytest.mark.parametrize("method,family", CASES)
def test_identity_at_init(method, family, tiny_checkpoints):
    spec = pk.get_method(method)
    model = _build(method, family, tiny_checkpoints[family]).eval()
    probe = _build("linear", family, tiny_checkpoints[family]).eval()
    x, mask = example_input(family)
    with torch.no_grad():
        same = torch.allclose(model(x, mask), probe(x, mask), atol=1e-5)
    assert same == spec.identity_at_init(model.method_config)


@pytest.mark.parametrize("method,family", CASES)
def test_training_touches_only_trainable(method, family, tiny_checkpoints):
    spec = pk.get_method(method)
    model = _build(method, family, tiny_checkpoints[family])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _steps(model, family, max(spec.needs_grad_steps, 1) + 1)
    for name, p in model.named_parameters():
        if p.requires_grad and name.endswith(INERT):
            continue
        if p.requires_grad:
            assert grads[name], f"{name} never received a non-zero gradient"
            assert not torch.equal(p, before[name]), f"{name} did not change"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("method,family", CASES)
def test_every_trainable_tensor_changes_output(method, family, tiny_checkpoints):
    spec = pk.get_method(method)
    model = _build(method, family, tiny_checkpoints[family])
    _steps(model, family, spec.needs_grad_steps)
    model.eval()
    x, mask = example_input(family)
    with torch.no_grad():
        ref = model(x, mask)
        for name, p in model.named_parameters():
            if not p.requires_grad or name.endswith(INERT):
                continue
            saved = p.detach().clone()
            p.add_(torch.randn_like(p) * 0.5 + 0.5)
            # A tensor with no path to the output leaves it bit-identical; real effects can be tiny
            # on random tiny backbones (AST prefix keys against near-uniform attention move the
            # logits by ~1e-6), so only rounding-level differences count as "no effect".
            changed = not torch.allclose(model(x, mask), ref, rtol=0.0, atol=1e-7)
            p.copy_(saved)
            assert changed, f"{name} has no effect on the output"


@pytest.mark.parametrize("method,family", CASES)
def test_save_load_round_trip(method, family, tiny_checkpoints, tmp_path):
    spec = pk.get_method(method)
    model = _build(method, family, tiny_checkpoints[family])
    _steps(model, family, spec.needs_grad_steps)
    model.eval()
    pk.save_trained(model, tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    x, mask = example_input(family)
    with torch.no_grad():
        assert torch.allclose(model(x, mask), again(x, mask), atol=1e-6)
    counts = pk.count_parameters(model)
    assert counts == pk.count_parameters(again)


@pytest.mark.parametrize("method,family", [c for c in CASES if pk.get_method(c[0]).merges])
def test_merge_equals_unmerged(method, family, tiny_checkpoints):
    spec = pk.get_method(method)
    model = _build(method, family, tiny_checkpoints[family])
    _steps(model, family, spec.needs_grad_steps)
    model.eval()
    x, mask = example_input(family)
    with torch.no_grad():
        ref = model(x, mask)
        model.merge()
        assert torch.allclose(model(x, mask), ref, atol=1e-5)
        model.merge()  # idempotent
        assert torch.allclose(model(x, mask), ref, atol=1e-5)
        model.unmerge()
        assert torch.allclose(model(x, mask), ref, atol=1e-5)


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(
        pk.ConfigError, match="unknown method 'lorra'.*valid methods: linear, full_ft, bitfit"
    ):
        pk.build_model("ast", backbone_config="tiny", method="lorra")


def test_unknown_method_key_names_the_valid_ones():
    with pytest.raises(pk.ConfigError, match="unknown bitfit method_config key.*'rank'"):
        pk.build_model("ast", backbone_config="tiny", method="bitfit", method_config={"rank": 4})


def test_wrong_typed_method_value():
    with pytest.raises(pk.ConfigError, match="probe_final_ln = 'yes'.*expected bool"):
        pk.build_model(
            "ast", backbone_config="tiny", method="linear", method_config={"probe_final_ln": "yes"}
        )


def test_reference_spellings_are_accepted():
    assert pk.get_method("full-FT").name == "full_ft"
    assert pk.get_method("BitFit").name == "bitfit"
