"""LoRA (spec ``methods.md`` §4; counts ``reference_numbers.md`` §3.1, §3.4, §3.8)."""

import math

import pytest
import torch
from torch import nn

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.methods._init import reference_init_
from petl_kit.methods.lora import LoRAConfig, LoRALinear, LoRAPair
from tests.conftest import example_input
from tests.methods.conftest import build as _build
from tests.methods.conftest import steps as _steps

HEAD_31, HEAD_50 = 768 * 31 + 31, 768 * 50 + 50
BACKBONE_500 = 85_708_032


def _counts(method_config, profile, max_length=400, num_classes=31, device="meta"):
    """Counts of AST base (random weights); on the meta device shapes are all that is built."""
    with torch.device(device):
        model = pk.build_model(
            "ast",
            backbone_config={"max_length": max_length},
            num_classes=num_classes,
            method="lora",
            method_config=method_config,
            profile=profile,
        )
    return pk.count_parameters(model)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "rr,rank", [(8, 96), (16, 48), (24, 32), (64, 12), (96, 8), (128, 6), (512, 2)]
)
def test_reduction_rate_rounds_half_to_even(rr, rank):
    assert LoRAConfig(reduction_rate=rr).resolve(768)[0] == rank  # 768/512 = 1.5 -> 2


def test_scaling_per_profile():
    ref = pk.make_config("lora", {"reduction_rate": 64}, "reference")
    cor = pk.make_config("lora", {"reduction_rate": 64}, "corrected")
    assert ref.resolve(768) == (12, 8 / 64)  # R8: alpha / RR = 0.125
    assert cor.resolve(768) == (12, 8 / 12)
    assert pk.make_config("lora", {"rank": 6, "alpha": 16}, "reference").resolve(768) == (6, 0.125)
    assert pk.make_config("lora", {}, "corrected").resolve(768) == (12, 8 / 12)  # default RR 64
    assert (ref.lora_init, cor.lora_init) == ("reference_effective", "zero_B")  # R4


def test_target_spellings():
    cfg = pk.make_config("lora", {"targets": "Wv, Wq"})
    assert cfg.targets == ("q", "v")
    assert pk.make_config("lora", {"targets": ["out_proj", "K", "q_proj"]}).targets == (
        "q",
        "k",
        "o",
    )


@pytest.mark.parametrize(
    "values,match",
    [
        ({"rank": 4, "reduction_rate": 8}, "reduction_rate .* or rank .*not both"),
        ({"targets": "q,x"}, "unknown target 'x'.*q, k, v, o"),
        ({"rank": 0}, "rank = 0"),
        ({"lora_variant": "shared_qk_legacy"}, "targets='q,k'"),
        ({"lora_init": "kaiming"}, "lora_init = 'kaiming'"),
    ],
)
def test_bad_configs_name_the_fix(values, match):
    with pytest.raises(pk.ConfigError, match=match):
        pk.make_config("lora", values)


def test_rank_rounding_to_zero_is_an_error():
    with pytest.raises(pk.ConfigError, match="rank round"):
        pk.build_model("ast", backbone_config="tiny", method="lora")  # 32 / 64 -> 0


# ------------------------------------------------------------------ counts
# (method_config, L, C, printed, total); every row in both profiles: r = round(768 / RR) either way
ROWS = [
    ({"reduction_rate": 128}, 400, 31, 246_559, None),  # §3.1
    ({"reduction_rate": 8}, 500, 50, 3_578_930, 89_285_426),  # §3.4
    ({"reduction_rate": 16}, 500, 50, 1_809_458, 87_515_954),
    ({"reduction_rate": 64}, 500, 50, 482_354, 86_188_850),
]


@pytest.mark.parametrize("profile", ["reference", "corrected"])
@pytest.mark.parametrize("cfg,length,classes,printed,total", ROWS)
def test_published_counts(cfg, length, classes, printed, total, profile):
    c = _counts(cfg, profile, length, classes)
    assert c["trainable"] == printed
    if total is not None:
        assert c["total"] == total
        assert c["total"] - c["trainable"] == BACKBONE_500 - 1536
    head = HEAD_31 if classes == 31 else HEAD_50
    assert c["groups"] == {
        "head": head,
        "final_norm": 1536,
        "norms": 0,
        "router": 0,
        "method": printed - head - 1536,
        "backbone": 0,
    }


# §3.8 and §4.2: LoRA matrices only (no final LN, no head)
@pytest.mark.parametrize(
    "cfg,method_count",
    [
        ({"targets": "Wq", "reduction_rate": 128}, 110_592),
        ({"targets": "Wq,Wk", "reduction_rate": 128}, 221_184),
        ({"targets": "Wq,Wv", "reduction_rate": 128}, 221_184),
        ({"targets": "Wq,Wk,Wv,Wo", "reduction_rate": 128}, 442_368),
        ({"targets": "q,v", "rank": 12}, 442_368),
        ({"lora_variant": "shared_qk_legacy", "targets": "q,k", "reduction_rate": 128}, 110_592),
    ],
)
def test_ablation_counts(cfg, method_count):
    assert _counts(cfg, "reference")["groups"]["method"] == method_count


def test_meta_counts_equal_a_real_build():
    assert _counts({"reduction_rate": 128}, "reference", device="cpu")["trainable"] == 246_559


# ------------------------------------------------------------------ maths
def test_init_per_profile():
    torch.manual_seed(0)
    ref = LoRAPair(768, 768, 12, "reference_effective")
    for w in (ref.A.weight, ref.B.weight):  # R4: both trunc-normal(0, 0.02)
        assert abs(w.std().item() - 0.02) < 0.001 and w.abs().max() < 0.1
    zero = LoRAPair(768, 768, 12, "zero_B")
    assert torch.count_nonzero(zero.B.weight) == 0
    bound = 1 / math.sqrt(768)  # Kaiming-uniform(a = sqrt 5) on fan_in 768
    assert zero.A.weight.abs().max() <= bound and zero.A.weight.abs().max() > 0.9 * bound


def test_r2_helpers():
    """``_init.reference_init_`` (shared with the adapters): Linear trunc-normal 0.02, bias 0."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(768, 256), nn.LayerNorm(256), nn.Conv1d(4, 4, 3))
    with torch.no_grad():
        block[1].weight.mul_(3)
    conv = block[2].weight.detach().clone()
    reference_init_(block)
    assert abs(block[0].weight.std().item() - 0.02) < 0.001
    assert torch.count_nonzero(block[0].bias) == 0
    assert torch.equal(block[1].weight, torch.ones(256))
    assert torch.equal(block[2].weight, conv)  # convs keep their written init


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
def test_wrapper_computes_w_x_plus_scaled_ba_x(family, tiny_checkpoints):
    model = _build(
        "lora",
        family,
        tiny_checkpoints[family],
        method_config={"rank": 4, "targets": "q,k,v,o", "lora_init": "reference_effective"},
    )
    layer = anatomy.layers(model.backbone)[0]
    projs = anatomy.projections(layer, anatomy.anatomy_of(model.backbone))
    assert all(isinstance(p, LoRALinear) for p in projs.values())
    q = projs["q"]
    x = torch.randn(3, 32)
    expected = (
        x @ q.weight.T + q.bias + (8 / 4) * (x @ q.petl_lora.A.weight.T @ q.petl_lora.B.weight.T)
    )
    torch.testing.assert_close(q(x), expected)
    # the frozen weights are the backbone's own tensors, under their own names
    names = dict(model.backbone.named_parameters())
    assert (
        names[
            "layers.0.attention.q_proj.weight"
            if family == "ast"
            else "encoder.layers.0.attention.q_proj.weight"
        ]
        is q.weight
    )
    assert not q.weight.requires_grad and q.petl_lora.A.weight.requires_grad


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
@pytest.mark.parametrize("targets", ["q,v", "q,k,v,o"])
def test_equals_hugging_face_peft(family, targets, tiny_checkpoints):
    """Same targets, rank, scaling and weights as ``peft`` → the same hidden states."""
    peft = pytest.importorskip("peft")
    model = _build(
        "lora",
        family,
        tiny_checkpoints[family],
        profile="reference",
        method_config={"reduction_rate": 8, "alpha": 6, "targets": targets},
    ).eval()
    rank, scaling = model.method_config.resolve(32)  # r = 4, s = alpha / RR = 0.75
    anat = anatomy.anatomy_of(model.backbone)
    names = [anat.projections[t] for t in model.method_config.targets]
    stock = pk.load_backbone(family, str(tiny_checkpoints[family])).eval()
    config = peft.LoraConfig(
        r=rank, lora_alpha=scaling * rank, target_modules=names, lora_dropout=0.0, bias="none"
    )
    stock = peft.inject_adapter_in_model(config, stock)
    with torch.no_grad():
        for ours, theirs in zip(anatomy.layers(model.backbone), anatomy.layers(stock), strict=True):
            ours_attn = anatomy.sublayer(ours, anatomy.ATTENTION, anat)
            theirs_attn = anatomy.sublayer(theirs, anatomy.ATTENTION, anat)
            for name in names:
                lora, peft_layer = getattr(ours_attn, name), getattr(theirs_attn, name)
                assert peft_layer.scaling["default"] == pytest.approx(scaling)
                peft_layer.lora_A["default"].weight.copy_(lora.petl_lora.A.weight)
                peft_layer.lora_B["default"].weight.copy_(lora.petl_lora.B.weight)
    x, mask = example_input(family)
    with torch.no_grad():
        ours_out = model.backbone(x).last_hidden_state
        theirs_out = stock(x).last_hidden_state
        plain = pk.load_backbone(family, str(tiny_checkpoints[family])).eval()(x).last_hidden_state
    assert not torch.allclose(ours_out, plain, atol=1e-4)  # the reference init moves the output
    torch.testing.assert_close(ours_out, theirs_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["ast", "hubert"])
def test_merge_unmerge_and_unload(family, tiny_checkpoints):
    model = _build(
        "lora",
        family,
        tiny_checkpoints[family],
        method_config={"reduction_rate": 8, "targets": "q,k,v,o"},
    )
    _steps(model, family, 2)
    model.eval()
    before = {
        n: p.detach().clone() for n, p in model.backbone.named_parameters() if not p.requires_grad
    }
    x, mask = example_input(family)
    with torch.no_grad():
        ref = model(x, mask)
        model.merge()
        wrappers = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
        assert len(wrappers) == 8 and all(w.merged for w in wrappers)
        torch.testing.assert_close(model(x, mask), ref, atol=1e-5, rtol=0)
        model.unmerge()
        for n, p in model.backbone.named_parameters():
            if n in before:
                torch.testing.assert_close(p, before[n], atol=1e-6, rtol=0)
        model.merge(unload=True)
        assert not any(isinstance(m, LoRALinear) for m in model.backbone.modules())
        projs = anatomy.projections(
            anatomy.layers(model.backbone)[0], anatomy.anatomy_of(model.backbone)
        )
        assert all(type(p) is nn.Linear for p in projs.values())
        torch.testing.assert_close(model(x, mask), ref, atol=1e-5, rtol=0)
    assert pk.count_parameters(model)["groups"]["method"] == 0


def test_merge_is_refused_by_methods_that_do_not_merge(tiny_checkpoints):
    model = _build("bitfit", "ast", tiny_checkpoints["ast"])
    with pytest.raises(ValueError, match="'bitfit' does not merge"):
        model.merge()


def test_shared_qk_legacy_adds_one_delta_to_q_and_k(tiny_checkpoints, tmp_path):
    model = _build(
        "lora",
        "ast",
        tiny_checkpoints["ast"],
        method_config={"reduction_rate": 8, "lora_variant": "shared_qk_legacy", "targets": "q,k"},
    )
    for layer in anatomy.layers(model.backbone):
        projs = anatomy.projections(layer, anatomy.AST_ANATOMY)
        assert projs["q"].petl_lora is projs["k"].petl_lora
        assert not isinstance(projs["v"], LoRALinear)
    assert pk.count_parameters(model)["groups"]["method"] == 2 * 2 * 32 * 4  # one pair per layer
    _steps(model, "ast", 2)
    x, _ = example_input("ast")
    model.eval()
    pk.save_trained(model, tmp_path / "run")  # the shared pair is stored once, loaded into both
    again = pk.load_trained(tmp_path / "run").eval()
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(again(x), ref, atol=1e-6, rtol=0)
        model.merge()
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)


def test_stable_layer_norm_variant():
    """Pre-LN wav2vec2: LoRA + head; the final encoder LN stays frozen."""
    cfg = pk.tiny_config("wav2vec2", do_stable_layer_norm=True, feat_extract_norm="layer")
    model = pk.build_model(
        "wav2vec2",
        backbone_config=cfg,
        num_classes=3,
        method="lora",
        method_config={"rank": 2},
        seed=0,
    )
    groups = pk.count_parameters(model)["groups"]
    assert groups["method"] == 2 * 2 * 2 * 2 * 32 and groups["final_norm"] == 0
    x, mask = example_input("wav2vec2")
    model(x, mask).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
