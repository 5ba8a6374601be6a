"""Prompt tuning (spec ``methods.md`` §6; counts ``reference_numbers.md`` §3.1, §3.4)."""

import copy
import math

import pytest
import torch
from transformers import ASTConfig

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.backbones.anatomy import CLS, DIST, PATCH, PROMPT
from petl_kit.methods._init import vpt_uniform_bound
from tests.conftest import example_input
from tests.methods.conftest import build as _build
from tests.methods.conftest import padding_invariance as _padding_invariance

HEAD_31, HEAD_50 = 768 * 31 + 31, 768 * 50 + 50
BACKBONE_500 = 85_708_032
TINY_PATCHES = 12 * 9  # tiny AST: 128 mel bins x 100 frames -> 12 x 9 patches


def _counts(method_config, profile, max_length=400, num_classes=31, device="meta"):
    with torch.device(device):
        model = pk.build_model(
            "ast",
            backbone_config={"max_length": max_length},
            num_classes=num_classes,
            method="prompt_tuning",
            method_config=method_config,
            profile=profile,
        )
    return pk.count_parameters(model)


# ------------------------------------------------------------------ counts
ROWS = [
    ({"num_prompts": 25, "deep": True}, 400, 31, 255_775, None),  # §3.1 DPT-25
    ({"num_prompts": 300, "deep": False}, 400, 31, 255_775, None),  # §3.1 SPT-300
    ({"num_prompts": 25, "deep": False}, 500, 50, 59_186, 85_765_682),  # §3.4
    ({"num_prompts": 25, "deep": True}, 500, 50, 270_386, 85_976_882),
]


@pytest.mark.parametrize("profile", ["reference", "corrected"])  # keeping DIST adds no parameter
@pytest.mark.parametrize("cfg,length,classes,printed,total", ROWS)
def test_published_counts(cfg, length, classes, printed, total, profile):
    c = _counts(cfg, profile, length, classes)
    assert c["trainable"] == printed
    if total is not None:
        assert c["total"] == total == BACKBONE_500 + HEAD_50 + c["groups"]["method"]
    n = cfg["num_prompts"]
    assert c["groups"]["method"] == (9_216 * n if cfg["deep"] else 768 * n)
    assert c["groups"]["final_norm"] == 1536


def test_meta_counts_equal_a_real_build():
    assert _counts({"num_prompts": 25}, "reference", device="cpu")["trainable"] == 255_775


def test_init_bound():
    assert vpt_uniform_bound(ASTConfig()) == 0.0625  # sqrt(6 / (3*16*16 + 768))
    model = pk.build_model("ast", backbone_config="tiny", method="prompt_tuning", seed=0)
    v = math.sqrt(6 / (3 * 16 * 16 + 32))
    for p in (model.petl_prompts.shallow, model.petl_prompts.deep):
        assert p.abs().max() <= v and p.abs().max() > 0.9 * v


def test_config_errors():
    with pytest.raises(pk.ConfigError, match="num_prompts = 0"):
        pk.make_config("prompt_tuning", {"num_prompts": 0})
    with pytest.raises(pk.ConfigError, match="dropout = 1.0"):
        pk.make_config("prompt_tuning", {"dropout": 1.0})
    assert pk.make_config("prompt_tuning", {}, "reference").prompt_keep_dist is False  # R10
    assert pk.make_config("prompt_tuning", {}, "corrected").prompt_keep_dist is True


# ------------------------------------------------------------------ layouts
def _block_inputs(model, x, mask=None):
    """The raw block-input module output and every block's input, as the blocks see them."""
    seen = {}
    site = anatomy.block_input(model.backbone)
    handles = [
        site.register_forward_hook(
            lambda m, a, out: seen.__setitem__("raw", out.clone()), prepend=True
        )
    ]
    for i, block in enumerate(anatomy.layers(model.backbone)):
        handles.append(
            block.register_forward_pre_hook(
                lambda m, a, kw, i=i: seen.__setitem__(
                    i, (a[0] if a else kw["hidden_states"]).clone()
                ),
                with_kwargs=True,
            )
        )
    with torch.no_grad():
        out = model(x, mask)
    for h in handles:
        h.remove()
    return seen, out


@pytest.mark.parametrize("profile,keep_dist", [("reference", False), ("corrected", True)])
@pytest.mark.parametrize("deep", [True, False])
def test_ast_layout(profile, keep_dist, deep, tiny_checkpoints):
    n = 3
    model = _build(
        "prompt_tuning",
        "ast",
        tiny_checkpoints["ast"],
        profile=profile,
        method_config={"num_prompts": n, "deep": deep},
    ).eval()
    x, _ = example_input("ast")
    seen, _ = _block_inputs(model, x)
    raw, first, second = seen["raw"], seen[0], seen[1]  # raw: [CLS, DIST, patches] + pos
    prompts = model.petl_prompts
    head = 2 if keep_dist else 1
    assert first.shape[1] == head + n + TINY_PATCHES
    torch.testing.assert_close(first[:, :head], raw[:, :head])  # CLS (and DIST) unchanged
    torch.testing.assert_close(first[:, head : head + n], prompts.shallow.expand(2, -1, -1))
    torch.testing.assert_close(first[:, head + n :], raw[:, 2:])  # patches keep their positions
    if deep:  # block 2 sees its own prompts in place of block 1's outputs there
        torch.testing.assert_close(second[:, head : head + n], prompts.deep[0].expand(2, -1, -1))
        assert prompts.deep.shape == (1, n, 32)
    else:
        assert prompts.deep is None
        assert not torch.allclose(second[:, head : head + n], prompts.shallow.expand(2, -1, -1))
    roles = model.role_layout(first.shape[1]).tolist()
    expected = [CLS, DIST][:head] + [PROMPT] * n + [PATCH] * TINY_PATCHES
    assert roles == expected


@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_pooling_by_role(profile, tiny_checkpoints):
    n = 3
    model = _build(
        "prompt_tuning",
        "ast",
        tiny_checkpoints["ast"],
        profile=profile,
        method_config={"num_prompts": n},
    ).eval()
    x, _ = example_input("ast")
    with torch.no_grad():
        hidden, _ = model.encode(x)
    head = 2 if profile == "corrected" else 1
    expected = {
        "ALL": hidden.mean(1),
        "CLS": hidden[:, 0],
        "PROMPTS": hidden[:, head : head + n].mean(1),
        "SPEECH": hidden[:, head + n :].mean(1),
        "PROMPTS+SPEECH": hidden[:, head:].mean(1),
    }
    for pooling, value in expected.items():
        model.pooling = pooling
        torch.testing.assert_close(model.pool(hidden), value)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_frame_model_layout(family, tiny_checkpoints):
    n = 3
    model = _build(
        "prompt_tuning", family, tiny_checkpoints[family], method_config={"num_prompts": n}
    ).eval()
    x, mask = example_input(family)
    seen, _ = _block_inputs(model, x, mask)
    frames = seen["raw"].shape[1]
    assert seen[0].shape[1] == n + frames
    torch.testing.assert_close(seen[0][:, :n], model.petl_prompts.shallow.expand(2, -1, -1))
    torch.testing.assert_close(seen[0][:, n:], seen["raw"])  # after pos conv (+ encoder LN)
    torch.testing.assert_close(seen[1][:, :n], model.petl_prompts.deep[0].expand(2, -1, -1))
    assert model.role_layout(n + frames).tolist() == [PROMPT] * n + [PATCH] * frames


@pytest.mark.parametrize(
    "family,stable", [("wav2vec2", False), ("wav2vec2", True), ("hubert", False)]
)
@pytest.mark.parametrize("deep", [True, False])
def test_padded_batches(family, stable, deep):
    _padding_invariance("prompt_tuning", {"num_prompts": 3, "deep": deep}, stable, family)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_mask_types(implementation, tiny_checkpoints):
    """Boolean (sdpa) and additive (eager) masks are both widened to the prompts."""
    model = _build(
        "prompt_tuning", "wav2vec2", tiny_checkpoints["wav2vec2"], method_config={"num_prompts": 3}
    ).eval()
    model.backbone.set_attn_implementation(implementation)
    x, mask = example_input("wav2vec2")
    with torch.no_grad():
        out = model(x, mask)
    assert torch.isfinite(out).all()
    model.backbone.set_attn_implementation("sdpa" if implementation == "eager" else "eager")
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), out, atol=1e-5, rtol=1e-5)


def test_deepcopy_rebinds_the_hooks(tiny_checkpoints):
    model = _build(
        "prompt_tuning", "ast", tiny_checkpoints["ast"], method_config={"num_prompts": 3}
    )
    model.eval()
    twin = copy.deepcopy(model)
    x, _ = example_input("ast")
    with torch.no_grad():
        ref = model(x)
        twin.petl_prompts.shallow.normal_()  # (a constant shift would vanish in the LNs)
        twin.petl_prompts.deep.normal_()
        assert torch.equal(model(x), ref)
        assert not torch.allclose(twin(x), ref)


def test_prompt_dropout_acts_in_training_only(tiny_checkpoints):
    model = _build(
        "prompt_tuning",
        "ast",
        tiny_checkpoints["ast"],
        method_config={"num_prompts": 3, "dropout": 0.5},
    )
    x, _ = example_input("ast")
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_layer_drop_cannot_skip_the_prompts():
    """With frozen modules left in train mode LayerDrop may skip block 1: prompts still enter."""
    cfg = pk.tiny_config("hubert", layerdrop=0.99)
    model = pk.build_model(
        "hubert",
        backbone_config=cfg,
        num_classes=2,
        method="prompt_tuning",
        method_config={"num_prompts": 3},
        options={"frozen_modules_train_mode": True},
        seed=0,
    )
    assert model.backbone.encoder.training
    x, _ = example_input("hubert")
    hidden, _ = model.encode(x)
    assert hidden.shape[1] == 3 + 12  # 4000 samples -> 12 frames
