"""Method-specific looks (petl_kit.analysis.insight) on tiny random-weight AST models: shapes
and sanity."""

import numpy as np
import pytest
import torch

import petl_kit as pk
from petl_kit.analysis import insight
from petl_kit.backbones import anatomy
from tests.conftest import example_input

C = 3


def _model(method, config=None, **kw):
    return pk.build_model("ast", backbone_config="tiny", num_classes=C, method=method,
                          method_config=config, seed=0, **kw).eval()  # fmt: skip


def _loader(n_batches=2, batch=2):
    out = []
    for i in range(n_batches):
        x, _ = example_input("ast", batch=batch, seed=i)
        out.append({"input_values": x, "labels": torch.arange(batch) % C})
    return out


def _blocks(model):
    return anatomy.layers(model.backbone)


# ---------------------------------------------------------------------------- LoRA
def test_lora_spectra_are_the_singular_values_of_the_scaled_update():
    model = _model("lora", {"rank": 2, "lora_init": "reference_effective"})  # ΔW ≠ 0 at init
    spectra = insight.lora_spectra(model)
    n_layers = len(_blocks(model))
    assert len(spectra) == n_layers * 2 * 2  # layers × {q, v} × r
    assert set(spectra["target"]) == {"q", "v"} and sorted(set(spectra["layer"])) == [0, 1]
    q0 = _blocks(model)[0].attention.q_proj
    delta = q0.scaling * q0.petl_lora.delta_weight()
    rows = spectra[(spectra.layer == 0) & (spectra.target == "q")]
    assert np.allclose(rows["sigma"], torch.linalg.svdvals(delta)[:2].detach(), rtol=1e-5)
    assert rows["sigma"].is_monotonic_decreasing and rows["energy"].sum() == pytest.approx(1)
    ranks = insight.effective_rank(spectra)
    assert len(ranks) == n_layers * 2
    assert ((ranks["erank"] >= 1 - 1e-6) & (ranks["erank"] <= 2 + 1e-6)).all()
    assert ranks["rank_0.9"].between(1, 2).all() and ranks["rank_0.9"].dtype.kind == "i"
    assert ranks["norm"].to_numpy() == pytest.approx(
        spectra.assign(s2=spectra.sigma**2).groupby(["layer", "target"])["s2"].sum() ** 0.5
    )


def test_lora_spectra_of_an_untrained_zero_B_model_are_zero_and_other_methods_raise():
    ranks = insight.effective_rank(insight.lora_spectra(_model("lora", {"rank": 2})))
    assert (ranks["norm"] == 0).all() and (ranks["rank_0.9"] == 0).all()
    with pytest.raises(ValueError, match="LoRALinear"):
        insight.lora_spectra(_model("linear"))


# ---------------------------------------------------------------------------- attention
CASES = [
    ("linear", None),
    ("lora", {"rank": 2, "lora_init": "reference_effective"}),
    ("prompt_tuning", {"num_prompts": 3}),
]


@pytest.mark.parametrize("method,config", CASES)
def test_attention_probs_equal_the_eager_attention_weights(method, config):
    model = _model(method, config)
    x, _ = example_input("ast")
    probs = insight.attention_probs(model, x)
    model.backbone.set_attn_implementation("eager")
    weights = []
    hooks = [anatomy.sublayer(b, anatomy.ATTENTION, anatomy.anatomy_of(model.backbone))
             .register_forward_hook(lambda m, a, out: weights.append(out[1]))
             for b in _blocks(model)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(probs) == len(weights) == len(_blocks(model))
    for p, w in zip(probs, weights, strict=True):
        assert p.shape == w.shape
        torch.testing.assert_close(p, w, atol=1e-6, rtol=1e-5)


def test_attention_probs_with_a_prefix_reproduce_the_attention_context():
    """probs @ [prefix_v; V] is what the prefix attention hands to the output projection."""
    model = _model("prefix_tuning", {"num_tokens": 4})
    x, _ = example_input("ast")
    attn = anatomy.sublayer(_blocks(model)[1], anatomy.ATTENTION, anatomy.AST_ANATOMY)
    seen = {}
    hooks = [
        attn.v_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("v", out)),
        attn.o_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("ctx", a[0])),
    ]
    probs = insight.attention_probs(model, x)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    b, t, hd = seen["v"].shape
    heads = model.backbone.config.num_attention_heads
    assert probs[1].shape == (b, heads, t, 2 + t)
    torch.testing.assert_close(probs[1].sum(-1), torch.ones(b, heads, t))
    v = torch.cat([attn.petl_prefix_v.detach().expand(b, -1, -1), seen["v"]], dim=1)
    v = v.view(b, 2 + t, heads, hd // heads).transpose(1, 2)  # [B, H, P/2 + T, d]
    ctx = (probs[1] @ v).transpose(1, 2).reshape(b, t, hd)
    torch.testing.assert_close(ctx, seen["ctx"], atol=1e-5, rtol=1e-4)


def test_attention_mass_on_prompts_and_prefix():
    loader = _loader()
    dpt = _model("prompt_tuning", {"num_prompts": 3, "deep": True})
    mass = insight.attention_mass(dpt, loader, on="prompts")
    heads = dpt.backbone.config.num_attention_heads
    assert len(mass) == len(_blocks(dpt)) * heads
    assert mass["mass"].between(0, 1).all()
    assert mass["uniform"].to_numpy() == pytest.approx(3 / 113)  # [CLS, DIST, P×3, 108 patches]
    prefix = _model("prefix_tuning", {"num_tokens": 4})
    mass = insight.attention_mass(prefix, loader, on="prefix", max_batches=1)
    assert mass["mass"].between(0, 1).all()
    assert mass["uniform"].to_numpy() == pytest.approx(2 / 112)  # P/2 = 2 keys + 110 tokens
    with pytest.raises(ValueError, match="no prompts keys"):
        insight.attention_mass(prefix, loader, on="prompts")
    with pytest.raises(ValueError, match="valid"):
        insight.attention_mass(prefix, loader, on="heads")


# ---------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("kind,sites", [("Pfeiffer", {"ffn"}), ("Houlsby", {"attention", "ffn"})])
def test_adapter_output_norms_one_row_per_adapter(kind, sites):
    model = _model("adapter", {"reduction_rate": 8, "adapter_type": kind, "kernel_size": 3})
    norms = insight.adapter_output_norms(model, _loader(), max_batches=1)
    assert len(norms) == len(_blocks(model)) * len(sites) and set(norms["site"]) == sites
    assert (norms["rel_norm"] > 0).all() and (norms["stream_norm"] > 0).all()


def test_adapter_output_norms_are_zero_for_zero_initialised_bottlenecks():
    model = _model("adapter", {"reduction_rate": 8, "adapter_block": "bottleneck"})
    norms = insight.adapter_output_norms(model, _loader(n_batches=1))
    assert (norms["rel_norm"] == 0).all()
    with pytest.raises(ValueError, match="no adapter"):
        insight.adapter_output_norms(_model("linear"), _loader(n_batches=1))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conformer_kernels_and_depthwise_ablation():
    model = _model("adapter", {"reduction_rate": 8, "kernel_size": 4})
    kernels = insight.conformer_kernels(model)
    assert len(kernels) == len(_blocks(model)) * 4
    assert sorted(set(kernels["tap"])) == [-1, 0, 1, 2]  # 'same' padding: (k-1)//2 before
    assert (kernels["weight_abs"] >= 0).all()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    table = insight.depthwise_ablation(model, _loader())
    assert list(table["kernel"]) == ["trained", "centre tap only", "zeroed"]
    assert {"accuracy", "loss"} <= set(table.columns)
    assert table["loss"].nunique() == 3  # each variant changes the output
    calibrated = insight.depthwise_ablation(model, _loader(), calibrate=_loader(n_batches=1))
    assert calibrated["loss"].nunique() == 3 and not calibrated["loss"].equals(table["loss"])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} not restored"
    for n, b in model.named_buffers():
        assert torch.equal(b, stats[n]), f"{n} not restored"
    assert not model.training
    with pytest.raises(ValueError, match="no conformer"):
        insight.conformer_kernels(
            _model("adapter", {"reduction_rate": 8, "adapter_block": "bottleneck"})
        )
