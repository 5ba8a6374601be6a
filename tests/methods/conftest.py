"""Helpers shared by the method tests: building a method on a tiny checkpoint, training steps,
the method contract's checks (run over the registries by test_contract.py and on the MERT
layouts by test_music_presets.py), the padding check and base-size counts on the meta device."""

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones.registry import get_family, load_backbone, tiny_config
from tests.conftest import example_input, train_steps

# q·(k + b) = q·k + q·b shifts every key's score by the same amount for a query, and softmax is
# shift-invariant: the key bias can never change the output (BitFit and full FT still train it),
# nor can SSF's shift of the keys (β of k: the same constant per channel for every key).
INERT = ("k_proj.bias", "linear_k.bias", "k_proj.petl_ssf.shift", "linear_k.petl_ssf.shift")
HEAD_31, HEAD_50 = 768 * 31 + 31, 768 * 50 + 50


def build(method, family, ckpt, **kw):
    """``method`` (its registry ``test_config`` unless ``method_config`` is given) on the tiny
    backbone saved in ``ckpt``, 5 classes, seed 1."""
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


def steps(model, family, n):
    """``n`` training steps on :func:`example_input`; ``{name: ever had a non-zero grad}``."""
    x, mask = example_input(family)
    return train_steps(model, x, mask, torch.tensor([0, 3]), n)


# --------------------------------------------------------------------------- the contract
@pytest.fixture(scope="session")
def family_checkpoints(tiny_checkpoints, tmp_path_factory):
    """``{family: folder}`` of a tiny random-weight backbone of every registered family, saved on
    first use (``tiny_checkpoints`` for the families it holds)."""
    root = tmp_path_factory.mktemp("families")

    class Folders(dict):
        def __missing__(self, family):
            if family in tiny_checkpoints:
                self[family] = tiny_checkpoints[family]
            else:
                torch.manual_seed(0)
                load_backbone(family, None, tiny_config(family)).save_pretrained(root / family)
                self[family] = root / family
            return self[family]

    return Folders()


@pytest.fixture(scope="session")
def unused_parameters(family_checkpoints):
    """``{family: names}`` of trainable tensors the family's own forward never reads: no gradient
    under full fine-tuning (e.g. MusicFM's positional conv, which its encoder never applies).
    They are asserted to leave the output bit-identical, so the contract may pass them over."""

    class Unused(dict):
        def __missing__(self, family):
            model = build("full_ft", family, family_checkpoints[family]).train()
            x, mask = example_input(family)
            torch.nn.functional.cross_entropy(model(x, mask), torch.tensor([0, 3])).backward()
            params = model.named_parameters()
            names = frozenset(n for n, p in params if p.requires_grad and p.grad is None)
            model.eval()
            with torch.no_grad():
                ref = model(x, mask)
                for name, p in model.named_parameters():
                    if name in names:
                        p.add_(1.0)
                assert torch.equal(model(x, mask), ref), f"{family}: {sorted(names)} are used"
            self[family] = names
            return names

    return Unused()


def inert(name: str, unused: frozenset[str] = frozenset()) -> bool:
    """A tensor that cannot reach the output: a key bias, or one the backbone never uses."""
    return name.endswith(INERT) or name in unused


def applies(method: str, family: str) -> bool:
    """Whether the family's record takes ``method`` (``methods`` None: every method)."""
    methods = get_family(family).methods
    return methods is None or pk.get_method(method).name in methods


def check_identity_at_init(method, family, ckpts):
    spec = pk.get_method(method)
    model = build(method, family, ckpts[family]).eval()
    if not applies("linear", family):
        # no frozen-backbone probe on this family: the output can only be the backbone + head's
        # when the method adds no tensor of its own
        assert pk.count_parameters(model)["groups"]["method"] == 0, f"no linear probe on {family}"
        assert spec.identity_at_init(model.method_config)
        return
    probe = build("linear", family, ckpts[family]).eval()
    x, mask = example_input(family)
    with torch.no_grad():
        same = torch.allclose(model(x, mask), probe(x, mask), atol=1e-5)
    assert same == spec.identity_at_init(model.method_config)


def check_training_touches_only_trainable(method, family, ckpts, unused=frozenset()):
    spec = pk.get_method(method)
    model = build(method, family, ckpts[family])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = steps(model, family, max(spec.needs_grad_steps, 1) + 1)
    for name, p in model.named_parameters():
        if p.requires_grad and inert(name, unused):
            continue
        if p.requires_grad:
            assert grads[name], f"{name} never received a non-zero gradient"
            assert not torch.equal(p, before[name]), f"{name} did not change"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def trained_for_eval(method, family, ckpts):
    """``(model, x, mask)``: ``method`` built on ``family``'s tiny checkpoint, trained the steps
    its registry entry needs to make every tensor matter, in eval mode, and an example input."""
    model = build(method, family, ckpts[family])
    steps(model, family, pk.get_method(method).needs_grad_steps)
    x, mask = example_input(family)
    return model.eval(), x, mask


def check_every_trainable_tensor_changes_output(method, family, ckpts, unused=frozenset()):
    model, x, mask = trained_for_eval(method, family, ckpts)
    with torch.no_grad():
        ref = model(x, mask)
        for name, p in model.named_parameters():
            if not p.requires_grad or inert(name, unused):
                continue
            saved = p.detach().clone()
            p.add_(torch.randn_like(p) * 0.5 + 0.5)
            # A tensor with no path to the output leaves it bit-identical; real effects can be tiny
            # on random tiny backbones (AST prefix keys against near-uniform attention move the
            # logits by ~1e-6), so only rounding-level differences count as "no effect".
            changed = not torch.allclose(model(x, mask), ref, rtol=0.0, atol=1e-7)
            p.copy_(saved)
            assert changed, f"{name} has no effect on the output"


def check_save_load_round_trip(method, family, ckpts, tmp_path):
    model, x, mask = trained_for_eval(method, family, ckpts)
    pk.save_trained(model, tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.allclose(model(x, mask), again(x, mask), atol=1e-6)
    counts = pk.count_parameters(model)
    assert counts == pk.count_parameters(again)


def check_merge_equals_unmerged(method, family, ckpts):
    model, x, mask = trained_for_eval(method, family, ckpts)
    with torch.no_grad():
        ref = model(x, mask)
        model.merge()
        assert torch.allclose(model(x, mask), ref, atol=1e-5)
        model.merge()  # idempotent
        assert torch.allclose(model(x, mask), ref, atol=1e-5)
        model.unmerge()
        assert torch.allclose(model(x, mask), ref, atol=1e-5)


# --------------------------------------------------------------------------- other helpers
def padding_invariance(method, method_config, stable, family="wav2vec2"):
    """Padding an example (with its attention mask) leaves its logits unchanged.

    The conv feature encoder uses per-frame LayerNorm (``feat_extract_norm='layer'``): with the
    base models' GroupNorm over time even the stock backbone depends on the padding.
    """
    cfg = pk.tiny_config(family, feat_extract_norm="layer", do_stable_layer_norm=stable)

    def build(**options):
        return pk.build_model(
            family,
            backbone_config=cfg,
            num_classes=4,
            method=method,
            method_config=method_config,
            seed=0,
            options=options,
        ).eval()

    model, unmasked = build(), build(pass_attention_mask=False)
    assert model.options.pass_attention_mask and model.options.masked_pooling
    x, mask = example_input(family)  # example 1 is padded from sample 3000
    with torch.no_grad():
        alone = model(x[1:, :3000], torch.ones(1, 3000, dtype=torch.long))
        torch.testing.assert_close(model(x, mask)[1:], alone, atol=1e-5, rtol=1e-5)
        # without the mask in the attention the padded frames leak in
        assert not torch.allclose(unmasked(x, mask)[1:], alone, atol=1e-4)


def meta_counts(method="dense_moa", max_length=400, num_classes=31, profile="reference", **cfg):
    """count_parameters of a base-size AST built on the meta device (same build path, no 86M
    weights allocated)."""
    with torch.device("meta"):
        model = pk.build_model(
            "ast",
            backbone_config={"max_length": max_length},
            num_classes=num_classes,
            method=method,
            method_config=cfg,
            profile=profile,
        )
    return pk.count_parameters(model)
