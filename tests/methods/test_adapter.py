"""Adapters (spec ``methods.md`` §7, §10; counts ``reference_numbers.md`` §3)."""

import types

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.methods.adapter import PLACEMENTS, AdapterConfig, AdapterSublayer
from tests.conftest import Known, example_input
from tests.methods.conftest import build as _build
from tests.methods.conftest import steps as _steps

HEAD_31, HEAD_50 = 768 * 31 + 31, 768 * 50 + 50
BOTTLENECK = {"adapter_block": "bottleneck"}
HOULSBY = {"adapter_type": "Houlsby"}
TINY = {"reduction_rate": 8, "kernel_size": 3}


def _counts(backbone="ast", max_length=400, num_classes=31, profile="reference", meta=True, **cfg):
    """count_parameters of a base-size model. ``meta``: build on the meta device — the same build
    path (config, apply, freezing) without allocating or initialising 86M weights."""
    bc = {"max_length": max_length} if backbone == "ast" else {}
    with torch.device("meta" if meta else "cpu"):
        model = pk.build_model(
            backbone,
            backbone_config=bc,
            num_classes=num_classes,
            method="adapter",
            method_config=cfg,
            profile=profile,
        )
    return pk.count_parameters(model)


# ------------------------------------------------------------------ exact counts (§3.1, §3.2)
# reference_numbers §3.1 (L = 400, C = 31, printed) and §3.2 (printed - head, paper-1 convention =
# printed - head - final LN); each row built in the reference profile with one mode and in the
# corrected profile with the other ("parallel or sequential"; the dead LN is applied, same count)
AST_ROWS = [
    (dict(BOTTLENECK, reduction_rate=64), 274_351, 250_512, 248_976),
    (dict(reduction_rate=96, kernel_size=31), 296_095, 272_256, 270_720),
    (dict(HOULSBY, reduction_rate=96, kernel_size=31), 566_815, 542_976, 541_440),
    ({**BOTTLENECK, **HOULSBY, "reduction_rate": 64}, None, 499_488, 497_952),
    (dict(reduction_rate=96, kernel_size=8), None, 270_048, 268_512),
    (dict(HOULSBY, reduction_rate=96, kernel_size=8), None, 538_560, 537_024),
]


@pytest.mark.parametrize("cfg,printed,minus_head,paper", AST_ROWS)
@pytest.mark.parametrize("profile,mode", [("reference", "parallel"), ("corrected", "sequential")])
def test_ast_counts(cfg, printed, minus_head, paper, profile, mode):
    c = _counts(profile=profile, seq_or_par=mode, meta=printed is None, **cfg)  # §3.1 rows: real
    if printed is not None:
        assert c["trainable"] == printed
    assert c["trainable"] - HEAD_31 == minus_head
    assert c["trainable"] - HEAD_31 - c["groups"]["final_norm"] == paper
    houlsby = cfg.get("adapter_type") == "Houlsby"
    assert c["groups"]["norms"] == 12 * 1536 * (2 if houlsby else 1)
    assert (c["groups"]["final_norm"], c["groups"]["head"], c["groups"]["backbone"]) == (
        1536,
        HEAD_31,
        0,
    )


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_ablation_placements_have_the_pfeiffer_count(placement):
    c = _counts(reduction_rate=96, kernel_size=31, placement=placement)
    assert c["trainable"] - HEAD_31 == 272_256  # §3.2 / §7.3: equal to conformer Pfeiffer
    assert c["groups"]["norms"] == 12 * 1536  # LN1 (MHSA cases) or LN2 (FFN cases)


@pytest.mark.parametrize(
    "backbone,cfg,printed",
    [
        ("wav2vec2", dict(BOTTLENECK, reduction_rate=64), 255_151),
        ("wav2vec2", dict(reduction_rate=96), 276_895),
        ("hubert", dict(reduction_rate=96), 276_895),  # same post-LN layer, same placements
    ],
)
def test_frame_model_counts(backbone, cfg, printed):
    c = _counts(
        backbone, meta=backbone == "hubert", **cfg
    )  # §3.1 / §3.6 (reference: + masked_spec_embed 768)
    assert c["trainable"] == printed
    assert c["groups"]["backbone"] == 768 and c["groups"]["norms"] == c["groups"]["final_norm"] == 0
    assert _counts(backbone, profile="corrected", **cfg)["trainable"] == printed - 768  # R24


def test_iemocap_paper_counts_match_larger_bottlenecks():  # §3.6: 895K / 927K (derived)
    assert (
        _counts("wav2vec2", num_classes=4, **BOTTLENECK, reduction_rate=16)["groups"]["method"]
        == 894_528
    )
    assert _counts("wav2vec2", num_classes=4, reduction_rate=24)["groups"]["method"] == 926_208


# §3.4: ESC-50, L = 500, C = 50, printed and total (backbone 85,708,032 + head + method)
ESC_ROWS = [
    ("bottleneck", "Pfeiffer", 64, 288_962, 85_977_026),
    ("bottleneck", "Pfeiffer", 128, 178_298, 85_866_362),
    ("bottleneck", "Houlsby", 64, 537_938, 86_207_570),
    ("bottleneck", "Houlsby", 128, 316_610, 85_986_242),
    ("conformer", "Pfeiffer", 64, 423_026, 86_111_090),
    ("conformer", "Pfeiffer", 128, 254_546, 85_942_610),
    ("conformer", "Houlsby", 64, 806_066, 86_475_698),
    ("conformer", "Houlsby", 128, 469_106, 86_138_738),
]


@pytest.mark.parametrize("block,kind,rr,printed,total", ESC_ROWS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_esc50_counts(block, kind, rr, printed, total, mode):
    c = _counts(
        max_length=500,
        num_classes=50,
        adapter_block=block,
        adapter_type=kind,
        reduction_rate=rr,
        kernel_size=31,
        seq_or_par=mode,
    )
    assert (c["trainable"], c["total"]) == (printed, total)
    assert c["total"] - c["groups"]["head"] - c["groups"]["method"] == 85_708_032


# ------------------------------------------------------------------ placement formulas
def _adapted_layer(backbone, cfg, profile="corrected", overrides=None):
    """Layer 0 of a tiny random model with Known adapters, and its parts for hand formulas."""
    bc = pk.tiny_config(backbone, **(overrides or {}))
    model = pk.build_model(
        backbone,
        backbone_config=bc,
        method="adapter",
        method_config={**TINY, **cfg},
        profile=profile,
        seed=0,
    ).eval()
    anat = anatomy.anatomy_of(model.backbone)
    layer = anatomy.layers(model.backbone)[0]
    d = model.backbone.config.hidden_size
    known = {anatomy.ATTENTION: Known(d, 1), anatomy.FFN: Known(d, 2)}
    for which, fn in known.items():
        wrapper = getattr(layer, anat.attention if which == anatomy.ATTENTION else anat.ffn)
        if isinstance(wrapper, AdapterSublayer):
            wrapper.petl_adapter = fn
    att = anatomy.sublayer(layer, anatomy.ATTENTION, anat)
    parts = types.SimpleNamespace(
        ln1=anatomy.layer_norm(layer, anatomy.ATTENTION, anat),
        ln2=anatomy.layer_norm(layer, anatomy.FFN, anat),
        att=lambda x: att(x)[0],
        ffn=anatomy.sublayer(layer, anatomy.FFN, anat),
        AM=known[anatomy.ATTENTION],
        AF=known[anatomy.FFN],
    )
    return layer, parts


def _pre_ln(h, P, attn_out=lambda x, a: a, ffn_out=lambda z, f: f):
    """AST / stable-layer-norm block (§0): h' = h + MHSA-site(LN1 h); out = h' + FFN-site(z)."""
    x = P.ln1(h)
    hp = h + attn_out(x, P.att(x))
    z = P.ln2(hp)
    return hp + ffn_out(z, P.ffn(z))


def _post_ln(x, P, attn_out=lambda x, a: a, ffn_out=lambda v, f: f):
    """wav2vec2/HuBERT base block (§0, §10): u = x + MHSA-site(x); v = LN_att(u);
    out = LN_fin(v + FFN-site(v))."""
    u = x + attn_out(x, P.att(x))
    v = P.ln1(u)
    return P.ln2(v + ffn_out(v, P.ffn(v)))


# (method config, MHSA-site formula, FFN-site formula) — spec §7.2 and §7.3, written out
AST_FORMULAS = [
    ({}, None, lambda P, z, f: f + P.AF(z)),
    ({"apply_residual": True}, None, lambda P, z, f: f + P.AF(z) + z),
    ({"seq_or_par": "sequential", "apply_residual": False}, None, lambda P, z, f: P.AF(f)),
    ({"seq_or_par": "sequential"}, None, lambda P, z, f: P.AF(f) + f),
    ({**HOULSBY}, lambda P, x, a: a + P.AM(x), lambda P, z, f: f + P.AF(z)),
    (
        {**HOULSBY, "apply_residual": True},
        lambda P, x, a: a + P.AM(x) + x,
        lambda P, z, f: f + P.AF(z) + z,
    ),
    (
        {**HOULSBY, "seq_or_par": "sequential", "apply_residual": False},
        lambda P, x, a: P.AM(a),
        lambda P, z, f: P.AF(f),
    ),
    (
        {**HOULSBY, "seq_or_par": "sequential"},
        lambda P, x, a: P.AM(a) + a,
        lambda P, z, f: P.AF(f) + f,
    ),
    ({"pfeiffer_location": "MHSA"}, lambda P, x, a: a + P.AM(x), None),
    ({"pfeiffer_location": "MHSA", "seq_or_par": "sequential"}, lambda P, x, a: P.AM(a) + a, None),
    ({"placement": "MHSA-parallel-before"}, lambda P, x, a: a + P.AM(x), None),
    ({"placement": "MHSA-parallel-after"}, lambda P, x, a: a + P.AM(a), None),
    ({"placement": "MHSA-sequential-before"}, lambda P, x, a: P.att(P.AM(x)) + P.AM(x), None),
    ({"placement": "MHSA-sequential-after"}, lambda P, x, a: P.AM(a) + a, None),
    ({"placement": "FFN-parallel-before"}, None, lambda P, z, f: f + P.AF(z)),
    ({"placement": "FFN-parallel-after"}, None, lambda P, z, f: f + P.AF(f)),
    ({"placement": "FFN-sequential-before"}, None, lambda P, z, f: P.ffn(P.AF(z)) + P.AF(z)),
    ({"placement": "FFN-sequential-after"}, None, lambda P, z, f: P.AF(f) + f),
]


def _check(layer, P, block_fn, site_mhsa, site_ffn, d=32, m=9):
    h = torch.randn(2, m, d, generator=torch.Generator().manual_seed(3))
    attn_out = (lambda x, a: site_mhsa(P, x, a)) if site_mhsa else (lambda x, a: a)
    ffn_out = (lambda z, f: site_ffn(P, z, f)) if site_ffn else (lambda z, f: f)
    with torch.no_grad():
        expected = block_fn(h, P, attn_out, ffn_out)
        plain = block_fn(h, P)
        got = layer(h)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter did something


@pytest.mark.parametrize("cfg,site_mhsa,site_ffn", AST_FORMULAS)
def test_ast_placement_formulas(cfg, site_mhsa, site_ffn):
    profile = "reference" if "placement" in cfg else "corrected"  # R12: same formulas in both
    layer, P = _adapted_layer("ast", {**BOTTLENECK, **cfg}, profile)
    _check(layer, P, _pre_ln, site_mhsa, site_ffn)


@pytest.mark.parametrize(
    "cfg,site_mhsa,site_ffn",
    [
        ({}, None, lambda P, v, f: f + P.AF(v)),
        ({"seq_or_par": "sequential", "apply_residual": False}, None, lambda P, v, f: P.AF(f)),
        ({"seq_or_par": "sequential", "apply_residual": True}, None, lambda P, v, f: P.AF(f) + f),
        # Houlsby-parallel: the MHSA adapter sees the un-normalised layer input (§10)
        ({**HOULSBY}, lambda P, x, a: a + P.AM(x), lambda P, v, f: f + P.AF(v)),
        (
            {**HOULSBY, "seq_or_par": "sequential", "apply_residual": True},
            lambda P, x, a: P.AM(a) + a,
            lambda P, v, f: P.AF(f) + f,
        ),
        (
            {**HOULSBY, "seq_or_par": "sequential", "apply_residual": False},
            lambda P, x, a: P.AM(a),
            lambda P, v, f: P.AF(f),
        ),
        ({"placement": "MHSA-sequential-before"}, lambda P, x, a: P.att(P.AM(x)) + P.AM(x), None),
    ],
)
@pytest.mark.parametrize("backbone", ["wav2vec2", "hubert"])
def test_post_ln_frame_formulas(cfg, site_mhsa, site_ffn, backbone):
    layer, P = _adapted_layer(backbone, {**BOTTLENECK, **cfg}, "reference")
    _check(layer, P, _post_ln, site_mhsa, site_ffn)


@pytest.mark.parametrize(
    "cfg,site_mhsa,site_ffn",
    [
        (
            {**HOULSBY, "apply_residual": True},
            lambda P, x, a: a + P.AM(x) + x,
            lambda P, z, f: f + P.AF(z) + z,
        ),
        (
            {**HOULSBY, "seq_or_par": "sequential", "apply_residual": False},
            lambda P, x, a: P.AM(a),
            lambda P, z, f: P.AF(f),
        ),
    ],
)
def test_stable_layer_norm_frame_models_use_the_ast_formulas(cfg, site_mhsa, site_ffn):
    layer, P = _adapted_layer(
        "wav2vec2", {**BOTTLENECK, **cfg}, overrides={"do_stable_layer_norm": True}
    )
    assert P.ln1 is layer.layer_norm and P.ln2 is layer.final_layer_norm  # LN1, LN2 (§10)
    _check(layer, P, _pre_ln, site_mhsa, site_ffn)


# ------------------------------------------------------------------ reference quirks at model level
def _dead_parts(model):
    for m in model.modules():
        if isinstance(m, AdapterSublayer):
            block = m.petl_adapter
            yield from (
                block.norm.parameters() if hasattr(block, "norm") else block.conv.parameters()
            )


@pytest.mark.parametrize("block", ["conformer", "convpass"])
@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_dead_ln_and_unused_conv_only_in_reference(block, profile, tiny_checkpoints):
    # reference_effective init in both profiles: a zero up-projection would hide the conv
    cfg = {**TINY, "adapter_block": block, **HOULSBY, "adapter_init": "reference_effective"}
    model = _build("adapter", "ast", tiny_checkpoints["ast"], method_config=cfg, profile=profile)
    dead = profile == "reference"
    x, _ = example_input("ast")
    model.train()
    model(x).sum().backward()
    params = list(_dead_parts(model))
    assert len(params) == 2 * 2 * 2  # layers × sites × (weight, bias)
    assert all((p.grad is None) == dead for p in params)
    assert all(p.requires_grad for p in params)  # counted either way (R5/R6)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        for p in params:
            p.add_(torch.randn_like(p) + 0.5)
        assert torch.equal(model(x), ref) == dead


def test_frame_reference_conformer_applies_its_ln(tiny_checkpoints):
    model = _build("adapter", "wav2vec2", tiny_checkpoints["wav2vec2"], profile="reference")
    x, mask = example_input("wav2vec2")
    model(x, mask).sum().backward()
    assert all(p.grad is not None for p in _dead_parts(model))  # §10: the wav2vec2 copy is right


def test_frame_model_switches(tiny_checkpoints):
    ref = _build("adapter", "wav2vec2", tiny_checkpoints["wav2vec2"], profile="reference")
    cor = _build("adapter", "wav2vec2", tiny_checkpoints["wav2vec2"])
    assert ref.backbone.masked_spec_embed.requires_grad  # R24, in the 'backbone' group
    assert pk.count_parameters(ref)["groups"]["backbone"] == 32
    assert not cor.backbone.masked_spec_embed.requires_grad
    for m in (ref, cor):  # the reference feeds the encoder itself: no masking, no LayerDrop
        assert m.backbone.config.apply_spec_augment is False and m.backbone.config.layerdrop == 0
        norms = anatomy.norm_parameter_names(m.backbone)
        assert not any(
            p.requires_grad
            for n, p in m.backbone.named_parameters()
            if n.replace(".inner", "") in norms
        )  # LNs frozen


# ------------------------------------------------------------------ init, identity, mode
IDENTITY_CASES = [
    ({**BOTTLENECK}, True),
    ({**BOTTLENECK, "seq_or_par": "sequential"}, True),
    ({**BOTTLENECK, "seq_or_par": "sequential", "apply_residual": False}, False),
    ({**BOTTLENECK, "apply_residual": True}, False),
    ({**BOTTLENECK, "adapter_init": "reference_effective"}, False),
    ({"adapter_block": "convpass", "adapter_type": "Houlsby"}, True),
    ({}, False),  # conformer: non-zero at init by design
    ({**BOTTLENECK, "placement": "FFN-parallel-after"}, True),
    ({**BOTTLENECK, "placement": "MHSA-sequential-before"}, False),
]


@pytest.mark.parametrize("cfg,identity", IDENTITY_CASES)
def test_identity_at_init(cfg, identity, tiny_checkpoints):
    spec = pk.get_method("adapter")
    model = _build("adapter", "ast", tiny_checkpoints["ast"], method_config={**TINY, **cfg}).eval()
    probe = _build("linear", "ast", tiny_checkpoints["ast"]).eval()
    x, _ = example_input("ast")
    with torch.no_grad():
        same = torch.allclose(model(x), probe(x), atol=1e-5)
    assert same == identity == spec.identity_at_init(model.method_config)


def test_effective_init_statistics():
    """R2: reference weights trunc-normal(0, 0.02), biases 0; corrected: W_up = 0 (R3)."""
    bc = {"num_hidden_layers": 2}  # d = 768, r = 96: 147,456 weights per projection

    def weights(profile, name):
        model = pk.build_model(
            "ast",
            backbone_config=bc,
            method="adapter",
            profile=profile,
            seed=0,
            method_config={**BOTTLENECK, "reduction_rate": 8},
        )
        blocks = [w.petl_adapter for w in model.modules() if isinstance(w, AdapterSublayer)]
        linears = [getattr(b, name) for b in blocks]
        biases = torch.cat([lin.bias for lin in linears])
        return torch.cat([lin.weight.flatten() for lin in linears]), biases

    for name in ("down", "up"):
        w, b = weights("reference", name)
        assert abs(w.std().item() - 0.02) < 2e-4 and abs(w.mean().item()) < 2e-4
        assert torch.count_nonzero(b) == 0
    w, _ = weights("corrected", "down")
    assert abs(w.std().item() - 0.02) < 2e-4
    w, b = weights("corrected", "up")
    assert torch.count_nonzero(w) == torch.count_nonzero(b) == 0


@pytest.mark.parametrize("profile", ["corrected", "reference"])
def test_mode_adapters_train_frozen_parts_in_eval(profile, tiny_checkpoints):
    """Both profiles: the reference PETL wrappers also put the frozen encoder in eval (§7.4)."""
    model = _build("adapter", "ast", tiny_checkpoints["ast"], method_config=TINY, profile=profile)
    wrappers = [m for m in model.modules() if isinstance(m, AdapterSublayer)]
    model.train()
    for w in wrappers:
        assert w.petl_adapter.training and w.petl_adapter.bn.training
        assert not w.inner.training
    bn = wrappers[0].petl_adapter.bn
    x, _ = example_input("ast")
    before = bn.running_mean.clone()
    model(x)
    assert not torch.equal(bn.running_mean, before)  # batch statistics while training
    model.eval()
    assert not any(m.training for m in model.modules())
    after = bn.running_mean.clone()
    model(x)
    assert torch.equal(bn.running_mean, after)


# further configurations through the contract checks (the registry's test_config covers one)
EXTRA = [
    ("ast", {**BOTTLENECK}),  # zero-up: W_down gets gradient from step 2
    ("ast", {"adapter_block": "convpass", "seq_or_par": "sequential"}),
    ("ast", {"conformer_axis": "time_per_band"}),
    ("ast", {**BOTTLENECK, "placement": "FFN-sequential-before"}),
    ("ast", {**BOTTLENECK, "pfeiffer_location": "MHSA", "adapter_act": "relu"}),
    ("wav2vec2", {**BOTTLENECK, **HOULSBY, "seq_or_par": "sequential"}),
    ("hubert", {"adapter_block": "convpass"}),
]


@pytest.mark.parametrize("family,cfg", EXTRA)
def test_extra_configurations_train_and_round_trip(family, cfg, tiny_checkpoints, tmp_path):
    model = _build("adapter", family, tiny_checkpoints[family], method_config={**TINY, **cfg})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = _steps(model, family, 2)
    for name, p in model.named_parameters():
        assert grads[name] if p.requires_grad else torch.equal(p, before[name]), name
    model.eval()
    x, mask = example_input(family)
    with torch.no_grad():
        ref = model(x, mask)
        for name, p in model.named_parameters():
            if p.requires_grad:
                saved = p.detach().clone()
                p.add_(torch.randn_like(p) * 0.5 + 0.5)
                assert not torch.allclose(model(x, mask), ref, atol=1e-6), name
                p.copy_(saved)
    pk.save_trained(model, tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.allclose(again(x, mask), ref, atol=1e-6)


# ------------------------------------------------------------------ configuration
def test_profile_defaults_and_resolved_residual():
    ref = pk.make_config("adapter", {}, "reference")
    assert (ref.reduction_rate, ref.bottleneck, ref.apply_residual) == (96, None, False)
    assert (ref.adapter_init, ref.conformer_ln, ref.convpass_conv, ref.w2v_train_mask_emb) == (
        "reference_effective",
        "dead",
        "unused",
        True,
    )
    assert (
        pk.make_config("adapter", {"seq_or_par": "sequential"}, "reference").apply_residual is False
    )
    cor = pk.make_config("adapter", {}, "corrected")
    assert (cor.adapter_init, cor.conformer_ln, cor.convpass_conv, cor.w2v_train_mask_emb) == (
        "zero_up",
        "applied",
        "used",
        False,
    )
    assert cor.apply_residual is False
    assert pk.make_config("adapter", {"seq_or_par": "sequential"}).apply_residual is True
    assert AdapterConfig().apply_residual is False and AdapterConfig().conformer_ln == "applied"


def test_resolved_values_are_recorded(tiny_checkpoints):
    model = _build(
        "adapter",
        "ast",
        tiny_checkpoints["ast"],
        method_config={**TINY, "seq_or_par": "sequential"},
    )
    assert model.build_args["method_config"]["apply_residual"] is True
    assert model.build_args["method_config"]["reduction_rate"] == 8


@pytest.mark.parametrize(
    "rr,r", [(64, 12), (96, 8), (128, 6), (8, 96), (16, 48), (24, 32), (512, 2)]
)
def test_reduction_rate_rounds_half_to_even(rr, r):
    assert AdapterConfig(reduction_rate=rr).bottleneck_size(768) == r


def test_bottleneck_gives_r_directly():
    cfg = pk.make_config("adapter", {"bottleneck": 5})
    assert (cfg.reduction_rate, cfg.bottleneck_size(768)) == (None, 5)
    model = pk.build_model(
        "ast",
        backbone_config="tiny",
        method="adapter",
        method_config={**BOTTLENECK, "bottleneck": 5},
    )
    assert pk.count_parameters(model)["groups"]["method"] == 2 * (2 * 32 * 5 + 5 + 32)


@pytest.mark.parametrize(
    "values,match",
    [
        ({"reduction_rate": 64, "bottleneck": 12}, "not both"),
        ({"reduction_rate": 0}, "reduction_rate = 0"),
        ({"placement": "FFN-parallel-middle"}, "expected .*FFN-sequential-after"),
        ({"placement": "FFN-parallel-after", "adapter_type": "Houlsby"}, "Pfeiffer"),
        ({"placement": "FFN-parallel-after", "seq_or_par": "sequential"}, "contradicts"),
        ({"placement": "FFN-parallel-after", "pfeiffer_location": "MHSA"}, "contradicts"),
        ({"placement": "FFN-parallel-after", "apply_residual": True}, "no effect with a placement"),
        ({"adapter_block": "bottleneck", "conformer_axis": "time_per_band"}, "'conformer' only"),
        ({"adapter_act": "relu"}, "bottleneck' only"),
        ({"adapter_type": "Houlsby", "pfeiffer_location": "MHSA"}, "'Pfeiffer' only"),
        ({"adapter_init": "zeros"}, "reference_effective.*zero_up.*written_zero"),
        ({"apply_residual": "False"}, "expected bool"),  # R16 cannot happen: typed values
    ],
)
def test_bad_configs_are_errors(values, match):
    with pytest.raises(pk.ConfigError, match=match):
        pk.make_config("adapter", values)


def test_placement_fixes_mode_and_location():
    cfg = pk.make_config("adapter", {"placement": "MHSA-sequential-before"}, "reference")
    assert (cfg.seq_or_par, cfg.pfeiffer_location, cfg.apply_residual) == (
        "sequential",
        "MHSA",
        None,
    )


def test_backbone_dependent_errors():
    with pytest.raises(pk.ConfigError, match="round\\(32 / 128\\) = 0"):
        pk.build_model(
            "ast", backbone_config="tiny", method="adapter", method_config={"reduction_rate": 128}
        )
    with pytest.raises(pk.ConfigError, match="AST patch grid"):
        pk.build_model(
            "wav2vec2",
            backbone_config="tiny",
            method="adapter",
            method_config={**TINY, "conformer_axis": "time_per_band"},
        )
    with pytest.raises(pk.ConfigError, match="no residual option"):
        pk.build_model(
            "hubert",
            backbone_config="tiny",
            method="adapter",
            method_config={**TINY, "apply_residual": True},
        )


def test_written_zero_is_a_warned_diagnostic():
    with pytest.warns(UserWarning, match="diagnostic"):
        pk.build_model(
            "ast",
            backbone_config="tiny",
            method="adapter",
            method_config={**TINY, **BOTTLENECK, "adapter_init": "written_zero"},
        )


def test_registry_entry():
    spec = pk.get_method("Wav2Vec_adapter")
    assert spec.name == "adapter" and spec.lr == 5e-3 and "adapter" in pk.list_methods()
