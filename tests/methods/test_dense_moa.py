"""Dense-MoA (spec ``methods.md`` §8, quirks R2, R13, R22; counts ``reference_numbers.md`` §3).

Placement, trainable set and the R13 double add are shared with Soft-MoA, so the placement tests
run over both methods.
"""

import types

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.methods import blocks
from petl_kit.methods.dense_moa import AddAgain, DenseMoA, MoASublayer
from tests.conftest import Known, example_input
from tests.methods.conftest import HEAD_31
from tests.methods.conftest import build as _build
from tests.methods.conftest import meta_counts as _counts

TINY = {"reduction_rate": 8, "num_adapters": 3}


# ------------------------------------------------------------------ exact counts
# reference_numbers §3.3: printed − head, RR 128 (r = 6), bottleneck experts; MHSA = FFN
DENSE_ROWS = [(2, 278_184, 554_832), (7, 923_724, 1_845_912), (15, 1_956_588, 3_911_640)]


@pytest.mark.parametrize("n,pfeiffer,houlsby", DENSE_ROWS)
@pytest.mark.parametrize("location", ["MHSA", "FFN"])
@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_dense_counts(n, pfeiffer, houlsby, location, profile):
    for kind, expected in (("Pfeiffer", pfeiffer), ("Houlsby", houlsby)):
        c = _counts(num_adapters=n, adapter_type=kind, location=location, profile=profile)
        assert c["trainable"] - HEAD_31 == expected
        sites = 2 if kind == "Houlsby" else 1
        assert c["groups"]["router"] == 12 * sites * 769 * n  # Linear(768, N)
        assert c["groups"]["norms"] == 12 * 1536 * sites
        assert c["groups"]["final_norm"] == 1536 and c["groups"]["backbone"] == 0


def test_fsc_printed_count():  # §3.1: L = 400, C = 31, N = 7, RR 128
    assert _counts()["trainable"] == 947_563


# §3.4: ESC-50, L = 500, C = 50: printed and total (backbone 85,708,032 + head + method)
ESC_DENSE = [
    ("Pfeiffer", 2, 316_634, 86_004_698),
    ("Pfeiffer", 7, 962_174, 86_650_238),
    ("Pfeiffer", 15, 1_995_038, 87_683_102),
    ("Houlsby", 2, 593_282, 86_262_914),
    ("Houlsby", 7, 1_884_362, 87_553_994),
    ("Houlsby", 15, 3_950_090, 89_619_722),
]


@pytest.mark.parametrize("kind,n,printed,total", ESC_DENSE)
@pytest.mark.parametrize("location", ["MHSA", "FFN"])
def test_esc50_counts(kind, n, printed, total, location):
    c = _counts(
        max_length=500, num_classes=50, adapter_type=kind, location=location, num_adapters=n
    )
    assert (c["trainable"], c["total"]) == (printed, total)
    assert c["total"] - c["groups"]["head"] - c["groups"]["method"] - c["groups"]["router"] == (
        85_708_032
    )


@pytest.mark.parametrize("expert", ["convpass", "conformer"])
def test_other_experts_count_by_formula(expert):  # R22: every block is an expert in the kit
    c = _counts(expert=expert, kernel_size=31)
    a = blocks.num_params(expert, 768, 6, 3 if expert == "convpass" else 31)
    assert c["groups"]["method"] == 12 * 7 * a


# ------------------------------------------------------------------ placement formulas
def _layer(method, backbone, cfg, profile="corrected"):
    model = pk.build_model(
        backbone,
        backbone_config="tiny",
        method=method,
        method_config={**TINY, **cfg},
        profile=profile,
        seed=0,
    ).eval()
    anat = anatomy.anatomy_of(model.backbone)
    layer = anatomy.layers(model.backbone)[0]
    known = {"MHSA": Known(32, 1), "FFN": Known(32, 2)}
    for attr, site in ((anat.attention, "MHSA"), (anat.ffn, "FFN")):
        wrapper = getattr(layer, attr)
        if isinstance(wrapper, MoASublayer):
            wrapper.petl_moa = known[site]
    att = anatomy.sublayer(layer, anatomy.ATTENTION, anat)
    parts = types.SimpleNamespace(
        ln1=anatomy.layer_norm(layer, anatomy.ATTENTION, anat),
        ln2=anatomy.layer_norm(layer, anatomy.FFN, anat),
        att=lambda x: att(x)[0],
        ffn=anatomy.sublayer(layer, anatomy.FFN, anat),
        M=known["MHSA"],
        F=known["FFN"],
    )
    return layer, parts


def _pre_ln(h, P, site_m, site_f, again):
    """AST (§8): h' = h + a [+ MoA_m(LN1 h)]; out = h' + f [+ MoA_f(z)] [+ MoA_m(LN1 h), R13]."""
    x = P.ln1(h)
    hp = h + P.att(x) + (P.M(x) if site_m else 0)
    z = P.ln2(hp)
    return hp + P.ffn(z) + (P.F(z) if site_f else 0) + (P.M(x) if again else 0)


def _post_ln(x, P, site_m, site_f, again):
    """wav2vec2/HuBERT base: u = x + a [+ MoA_m(x)]; v = LN_att(u);
    out = LN_fin(v + FF(v) [+ MoA_f(v)] [+ MoA_m(x), R13])."""
    u = x + P.att(x) + (P.M(x) if site_m else 0)
    v = P.ln1(u)
    return P.ln2(v + P.ffn(v) + (P.F(v) if site_f else 0) + (P.M(x) if again else 0))


PLACEMENTS = [  # (config, profile, MoA at MHSA, MoA at FFN, R13 double add)
    ({"location": "MHSA"}, "corrected", True, False, False),
    ({"location": "MHSA"}, "reference", True, False, True),
    ({"location": "MHSA", "moa_double_add": False}, "reference", True, False, False),
    ({"location": "MHSA", "moa_double_add": True}, "corrected", True, False, True),
    ({"location": "FFN"}, "reference", False, True, False),
    ({"location": "FFN"}, "corrected", False, True, False),
    ({"adapter_type": "Houlsby"}, "reference", True, True, False),
    ({"adapter_type": "Houlsby", "location": "FFN"}, "corrected", True, True, False),
]


@pytest.mark.parametrize("cfg,profile,site_m,site_f,again", PLACEMENTS)
@pytest.mark.parametrize("method", ["dense_moa", "soft_moa"])
@pytest.mark.parametrize("backbone", ["ast", "wav2vec2", "hubert"])
def test_placement_formulas(cfg, profile, site_m, site_f, again, method, backbone):
    layer, P = _layer(method, backbone, cfg, profile)
    block = _pre_ln if backbone == "ast" else _post_ln
    h = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = layer(h)
        got = out[0] if isinstance(out, tuple) else out
        expected = block(h, P, site_m, site_f, again)
        plain = block(h, P, False, False, False)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert isinstance(getattr(layer, "mlp" if backbone == "ast" else "feed_forward"), AddAgain) == (
        again
    )


@pytest.mark.parametrize("method", ["dense_moa", "soft_moa"])
def test_trainable_norms(method, tiny_checkpoints):
    for cfg, ln1, ln2 in (
        ({"location": "MHSA"}, True, False),
        ({"location": "FFN"}, False, True),
        ({"adapter_type": "Houlsby"}, True, True),
    ):
        model = _build(method, "ast", tiny_checkpoints["ast"], method_config={**TINY, **cfg})
        for layer in anatomy.layers(model.backbone):
            assert layer.layernorm_before.weight.requires_grad == ln1
            assert layer.layernorm_after.weight.requires_grad == ln2
        assert model.backbone.layernorm.weight.requires_grad
    for profile, mask in (("reference", True), ("corrected", False)):  # R24 on frame models
        model = _build(method, "wav2vec2", tiny_checkpoints["wav2vec2"], profile=profile)
        c = pk.count_parameters(model)
        assert c["groups"]["norms"] == c["groups"]["final_norm"] == 0
        assert model.backbone.masked_spec_embed.requires_grad == mask


# ------------------------------------------------------------------ the mixture itself
def test_dense_mixture_equals_a_loop_over_experts():
    torch.manual_seed(0)
    parts = [
        blocks.init_block(blocks.make_block("bottleneck", 32, 4), "reference_effective")
        for _ in range(5)
    ]
    from petl_kit.methods.experts import group_blocks

    moa = DenseMoA(group_blocks(parts), dim=32)
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        p = torch.softmax(x @ moa.router.weight.T + moa.router.bias, -1)  # per token over experts
        expected = sum(p[..., i : i + 1] * parts[i](x) for i in range(5))
        assert torch.allclose(moa(x), expected, atol=1e-6)
        assert torch.allclose(p.sum(-1), torch.ones(2, 11))


@pytest.mark.parametrize(
    "cfg,profile,identity",
    [
        ({}, "corrected", True),
        ({"expert": "convpass"}, "corrected", True),
        ({"expert": "conformer", "kernel_size": 3}, "corrected", False),  # non-zero by design
        ({}, "reference", False),  # R2: trunc-normal up-projections
        ({"expert_init": "zero_up"}, "reference", True),  # R13's second add adds 0 too
    ],
)
@pytest.mark.parametrize("method", ["dense_moa", "soft_moa"])
def test_identity_at_init(cfg, profile, identity, method, tiny_checkpoints):
    spec = pk.get_method(method)
    ckpt = tiny_checkpoints["ast"]
    model = _build(method, "ast", ckpt, method_config={**TINY, **cfg}, profile=profile).eval()
    probe = _build("linear", "ast", ckpt, profile=profile).eval()
    x, _ = example_input("ast")
    with torch.no_grad():
        same = torch.allclose(model(x), probe(x), atol=1e-5)
    assert same == identity == spec.identity_at_init(model.method_config)


def test_effective_init_statistics():
    """R2: experts' Linears and routers trunc-normal(0, 0.02), bias 0; corrected: W_up = 0."""

    def mixtures(profile):
        model = pk.build_model(
            "ast",
            backbone_config={"num_hidden_layers": 1},
            method="dense_moa",
            method_config={"num_adapters": 15, "reduction_rate": 8},
            profile=profile,
            seed=0,
        )
        return [m for m in model.modules() if isinstance(m, DenseMoA)]

    (ref,), (cor,) = mixtures("reference"), mixtures("corrected")
    for w in (ref.experts.down_weight, ref.experts.up_weight, ref.router.weight, cor.router.weight):
        assert abs(w.std().item() - 0.02) < 5e-4 and w.abs().max() < 0.2
    for b in (ref.experts.down_bias, ref.experts.up_bias, ref.router.bias):
        assert torch.count_nonzero(b) == 0
    assert abs(cor.experts.down_weight.std().item() - 0.02) < 5e-4
    assert (
        torch.count_nonzero(cor.experts.up_weight) == torch.count_nonzero(cor.experts.up_bias) == 0
    )


@pytest.mark.parametrize("expert", ["convpass", "conformer"])
@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_every_expert_kind_trains(expert, profile, tiny_checkpoints):  # R22
    cfg = {**TINY, "expert": expert, "kernel_size": 3}
    model = _build("dense_moa", "ast", tiny_checkpoints["ast"], method_config=cfg, profile=profile)
    x, _ = example_input("ast")
    model(x).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    dead = [n for n, g in grads.items() if g is None]
    if profile == "reference":  # R5 dead conformer LN / R6 unused Convpass conv: no gradient
        dead_parts = (
            ("norm_weight", "norm_bias") if expert == "conformer" else ("conv_weight", "conv_bias")
        )
        assert dead and all(n.rsplit(".", 1)[-1] in dead_parts for n in dead)
    else:
        assert not dead


def test_config_errors():
    with pytest.raises(pk.ConfigError, match="expert = 'lora'.*'bottleneck'"):
        pk.make_config("Dense-MoA", {"expert": "lora"})
    with pytest.raises(pk.ConfigError, match="num_adapters = 0"):
        pk.make_config("dense_moa", {"num_adapters": 0})
    with pytest.raises(pk.ConfigError, match="reduction_rate.*or bottleneck"):
        pk.make_config("dense_moa", {"reduction_rate": 8, "bottleneck": 4})
    with pytest.raises(pk.ConfigError, match="unknown dense_moa method_config key.*'num_slots'"):
        pk.make_config("dense_moa", {"num_slots": 2})
    with pytest.raises(pk.ConfigError, match="r = round"):
        pk.build_model(
            "ast", backbone_config="tiny", method="dense_moa", method_config={"reduction_rate": 128}
        )
    assert pk.get_method("Dense-MoA").name == "dense_moa"
