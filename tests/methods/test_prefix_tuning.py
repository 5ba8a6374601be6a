"""Prefix tuning (spec ``methods.md`` §5.1; counts ``reference_numbers.md`` §3.1, §3.4)."""

import math

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.methods.prefix_tuning import ATTN_IMPLEMENTATION, prefix_attention
from tests.conftest import example_input
from tests.methods.conftest import build as _build
from tests.methods.conftest import padding_invariance as _padding_invariance

HEAD_31, HEAD_50 = 768 * 31 + 31, 768 * 50 + 50
BACKBONE_500 = 85_708_032


def _counts(method_config, profile, max_length=400, num_classes=31, device="meta"):
    with torch.device(device):
        model = pk.build_model(
            "ast",
            backbone_config={"max_length": max_length},
            num_classes=num_classes,
            method="prefix_tuning",
            method_config=method_config,
            profile=profile,
        )
    return pk.count_parameters(model)


# ------------------------------------------------------------------ counts
@pytest.mark.parametrize("profile", ["reference", "corrected"])
@pytest.mark.parametrize(
    "length,classes,printed,total",
    [(400, 31, 246_559, None), (500, 50, 261_170, 85_967_666)],  # §3.1, §3.4
)
def test_published_counts(length, classes, printed, total, profile):
    c = _counts({"num_tokens": 24}, profile, length, classes)
    assert c["trainable"] == printed
    assert c["groups"]["method"] == 9_216 * 24 == 221_184
    if total is not None:
        assert c["total"] == total == BACKBONE_500 + HEAD_50 + 221_184


def test_meta_counts_equal_a_real_build():
    assert _counts({}, "reference", device="cpu")["trainable"] == 246_559  # default P = 24


@pytest.mark.parametrize("p", [0, 3, -2])
def test_num_tokens_must_be_even_and_positive(p):
    with pytest.raises(pk.ConfigError, match=f"num_tokens = {p}; expected an even"):
        pk.make_config("prefix_tuning", {"num_tokens": p})


def test_shapes_init_and_switch(tiny_checkpoints):
    model = _build("prefix_tuning", "ast", tiny_checkpoints["ast"], method_config={"num_tokens": 6})
    assert model.backbone.config._attn_implementation == ATTN_IMPLEMENTATION
    v = math.sqrt(6 / (3 * 16 * 16 + 32))
    for layer in anatomy.layers(model.backbone):
        attn = anatomy.sublayer(layer, anatomy.ATTENTION, anatomy.AST_ANATOMY)
        for p in (attn.petl_prefix_k, attn.petl_prefix_v):
            assert p.shape == (3, 32) and p.requires_grad
            assert 0.5 * v < p.abs().max() <= v


# ------------------------------------------------------------------ the attention function
def _qkv(b=2, h=2, t=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g) for _ in range(3)]


def _module(prefix_len=None, h=2, d=4):
    module = nn.Module()
    module.is_causal = False
    if prefix_len is not None:
        module.petl_prefix_k = nn.Parameter(torch.randn(prefix_len, h * d))
        module.petl_prefix_v = nn.Parameter(torch.randn(prefix_len, h * d))
    return module


@pytest.mark.parametrize("prefix_len", [None, 0])
def test_no_prefix_is_exactly_stock(prefix_len):
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    for m in (None, mask):
        ours, _ = prefix_attention(_module(prefix_len), q, k, v, m, scaling=0.5)
        stock, _ = sdpa_attention_forward(_module(), q, k, v, m, scaling=0.5)
        assert torch.equal(ours, stock)


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_attends_to_the_prefix(mask_kind):
    """softmax(q [Pk; K]ᵀ · s + mask) [Pv; V], the prefix split over heads like the keys."""
    b, h, t, d, n = 2, 2, 5, 4, 3
    q, k, v = _qkv(b, h, t, d)
    module = _module(n, h, d)
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[1, 3:] = False
    mask = None
    if mask_kind == "bool":
        mask = valid[:, None, None, :].expand(b, 1, t, t)
    elif mask_kind == "float":
        mask = torch.where(valid, 0.0, torch.finfo(torch.float32).min)[:, None, None, :].expand(
            b, 1, t, t
        )
    out, _ = prefix_attention(module, q, k, v, mask, scaling=0.5)  # [B, T, H, d]
    pk_ = module.petl_prefix_k.view(n, h, d).transpose(0, 1)  # [H, n, d]
    pv_ = module.petl_prefix_v.view(n, h, d).transpose(0, 1)
    keys = torch.cat([pk_.expand(b, -1, -1, -1), k], dim=2)
    values = torch.cat([pv_.expand(b, -1, -1, -1), v], dim=2)
    scores = q @ keys.transpose(-1, -2) * 0.5
    if mask_kind is not None:
        keep = torch.cat([torch.ones(b, n, dtype=torch.bool), valid], dim=1)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    expected = (scores.softmax(-1) @ values).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert module.petl_prefix_k.grad.abs().sum() > 0 and module.petl_prefix_v.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
def test_backbone_without_prefix_equals_stock(family, tiny_checkpoints):
    """The switched attention with the prefixes taken away gives the plain backbone's output."""
    model = _build("prefix_tuning", family, tiny_checkpoints[family]).eval()
    probe = _build("linear", family, tiny_checkpoints[family]).eval()
    x, mask = example_input(family)
    with torch.no_grad():
        assert not torch.allclose(model(x, mask), probe(x, mask), atol=1e-5)
        for layer in anatomy.layers(model.backbone):
            attn = anatomy.sublayer(layer, anatomy.ATTENTION, anatomy.anatomy_of(model.backbone))
            del attn.petl_prefix_k, attn.petl_prefix_v
        assert model.backbone.config._attn_implementation == ATTN_IMPLEMENTATION
        torch.testing.assert_close(model(x, mask), probe(x, mask), atol=1e-6, rtol=0)


def test_queries_and_length_are_unchanged(tiny_checkpoints):
    model = _build("prefix_tuning", "ast", tiny_checkpoints["ast"]).eval()
    x, _ = example_input("ast")
    with torch.no_grad():
        hidden, _ = model.encode(x)
    assert hidden.shape == (2, 110, 32)  # CLS, DIST, 108 patches: no extra positions


@pytest.mark.parametrize(
    "family,stable", [("wav2vec2", False), ("wav2vec2", True), ("hubert", False)]
)
def test_padded_batches(family, stable):
    """Needs the mask function registered beside the attention function: transformers builds no
    mask at all for an attention implementation it has no mask function for."""
    _padding_invariance("prefix_tuning", {"num_tokens": 4}, stable, family)
