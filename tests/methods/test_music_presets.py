"""Music presets (adapter §11, LoRA §4.3), their placements, and every method's contract on MERT
(95M post-LN layout and 330M pre-LN layout, tiny sizes)."""

import pytest
import torch
from torch import nn

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.backbones.registry import load_backbone
from petl_kit.methods.lora import LoRAConv1d, LoRALinear, LoRAPair
from petl_kit.methods.registry import get_preset, list_presets, method_preset
from tests.conftest import example_input
from tests.methods import conftest as contract

LAYOUTS = {"post_ln": {}, "pre_ln": {"do_stable_layer_norm": True}}


@pytest.fixture(scope="module")
def mert_checkpoints(tmp_path_factory):
    """``{layout: folder}``: tiny MERT (95M post-LN layout, 330M pre-LN layout) in the published
    MERT-v1 format, non-trivial weights."""
    from petl_kit.backbones import mert

    root = tmp_path_factory.mktemp("mert_layouts")
    out = {}
    for layout, extra in LAYOUTS.items():
        torch.manual_seed(0)
        model = load_backbone("mert", None, pk.tiny_config("mert", **extra))
        out[layout] = mert.save_mert_checkpoint(model, root / layout)
    return out


def _music(preset, layout, ckpts, profile="corrected", seed=1):
    return pk.build_model(
        "mert", str(ckpts[layout]), num_classes=5, profile=profile, seed=seed,
        **method_preset(preset, profile),
    )  # fmt: skip


# ----------------------------------------------------------------------------- the mechanism
def test_presets_are_listed_and_named_in_errors():
    assert {"music_adapter", "music_lora"} <= set(list_presets())
    assert all(get_preset(name).doc for name in list_presets())  # every preset documents itself
    ref = method_preset("music_adapter", "reference")
    assert ref["method"] == "adapter"
    assert ref["method_config"]["music_adapter_position"] == "after_residual"
    cor = method_preset("music_adapter")
    assert cor["method_config"]["music_adapter_position"] == "sublayer_output"
    with pytest.raises(pk.ConfigError, match="unknown preset 'music'.*valid presets: .*music_lora"):
        method_preset("music")
    with pytest.raises(pk.ConfigError, match="unknown profile 'paper'"):
        method_preset("music_lora", "paper")


def test_music_layout_refuses_contradicting_keys():
    cfg = dict(method_preset("music_adapter")["method_config"], seq_or_par="parallel")
    with pytest.raises(pk.ConfigError, match="music layout.*'seq_or_par': 'parallel'"):
        pk.make_config("adapter", cfg)


@pytest.mark.parametrize("profile", ["reference", "corrected"])
@pytest.mark.parametrize(
    "preset,count,groups",
    [
        ("music_adapter", 322_752, {"method": 304_320, "norms": 18_432}),
        ("music_lora", 165_888, {"method": 165_888, "norms": 0}),
    ],
)
def test_preset_counts_on_mert_95m_six_layers(preset, count, groups, profile):
    with torch.device("meta"):
        model = pk.build_model(
            "mert", num_classes=50, encoder_depth=6, head="mlp", profile=profile,
            **method_preset(preset, profile),
        )  # fmt: skip
    counts = pk.count_parameters(model)
    assert counts["trainable"] - counts["groups"]["head"] == count
    assert counts["groups"]["head"] == 629_042  # MLP head, tagging (n = 50)
    for group, n in groups.items():
        assert counts["groups"][group] == n
    assert counts["groups"]["backbone"] == 0  # masked_spec_embed stays frozen


@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_music_finetune_trains_everything_under_both_profiles(profile):
    """methods.md §2: the music reference trains the whole 6-layer MERT, conv encoder included
    (the reference profile's plain ``full_ft`` would train only the last 3 layers, R25)."""
    with torch.device("meta"):
        model = pk.build_model(
            "mert", num_classes=50, encoder_depth=6, head="mlp", profile=profile,
            **method_preset("music_finetune", profile),
        )  # fmt: skip
    counts = pk.count_parameters(model)
    assert counts["trainable"] == 51_843_712 + 629_042
    assert all(p.requires_grad for p in model.backbone.feature_extractor.parameters())


@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_music_lora_scaling_is_one(profile, mert_checkpoints):
    model = _music("music_lora", "post_ln", mert_checkpoints, profile)
    wrapped = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 6  # q, k, v, o, ffn_in, ffn_out in each of the 2 tiny blocks
    assert {m.scaling for m in wrapped} == {1.0}
    assert {m.petl_lora.A.out_features for m in wrapped} == {2}


def test_lora_conv1d_equals_the_merged_conv():
    torch.manual_seed(0)
    base = nn.Conv1d(8, 6, 1, bias=False)
    pair = LoRAPair(8, 6, 2, "reference_effective")  # both factors non-zero
    lora = LoRAConv1d(base, pair, scaling=1.0)
    x = torch.randn(2, 8, 5)
    want = nn.functional.conv1d(x, base.weight + (pair.B.weight @ pair.A.weight)[..., None])
    assert torch.allclose(lora(x), want, atol=1e-6)
    lora.merge()
    assert torch.allclose(lora(x), want, atol=1e-6)
    assert torch.allclose(lora.unload()(x), want, atol=1e-6)
    with pytest.raises(ValueError, match="pointwise Conv1d"):
        LoRAConv1d(nn.Conv1d(8, 8, 3), LoRAPair(8, 8, 2, "zero_B"), 1.0)


# ----------------------------------------------------------------------------- placements
def _randomise_adapters(model):
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if ".petl_" in f".{name}" and p.requires_grad:
                p.normal_(0, 0.3)


def _adapters(layer, anat, position):
    """``(f_attention, f_ffn)`` blocks of one layer, wherever the layout put them."""
    if position == "after_residual" and not anat.pre_ln:
        return layer.petl_music_adapter_attention.block, layer.petl_music_adapter_ffn.block
    return layer.attention.petl_adapter, layer.feed_forward.petl_adapter


def _adapt(position, s, y, f):
    """The stream after a sub-layer with output y added to stream s, adapter f (§11)."""
    if position == "sublayer_output":
        return s + (y + f(y))  # Houlsby: A on the sub-layer output
    return (s + y) + f(s + y)  # reference: A on the residual sum


def _manual_layer(layer, anat, x, position):
    """Spec §11's formulas for one HuBERT block (eval mode: dropouts off)."""
    f_att, f_ffn = _adapters(layer, anat, position)
    attn = anatomy.sublayer(layer, anatomy.ATTENTION, anat)
    ffn = anatomy.sublayer(layer, anatomy.FFN, anat)

    def plain(ln):  # the LayerNorm without the kit's hooks
        return lambda t: nn.functional.layer_norm(
            t, ln.normalized_shape, ln.weight, ln.bias, ln.eps
        )

    ln_att, ln_ffn = plain(layer.layer_norm), plain(layer.final_layer_norm)
    if not anat.pre_ln:  # u = x + MHSA(x); v = LN(A(u)); w = v + FF(v); out = LN(A(w))
        v = ln_att(_adapt(position, x, attn(x)[0], f_att))
        return ln_ffn(_adapt(position, v, ffn(v), f_ffn))
    h = _adapt(position, x, attn(ln_att(x))[0], f_att)
    return _adapt(position, h, ffn(ln_ffn(h)), f_ffn)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("position", ["after_residual", "sublayer_output"])
def test_music_adapter_follows_the_spec_formulas(layout, position, mert_checkpoints):
    profile = "reference" if position == "after_residual" else "corrected"
    model = _music("music_adapter", layout, mert_checkpoints, profile).eval()
    _randomise_adapters(model)
    anat = anatomy.anatomy_of(model.backbone)
    seen = {}

    def record(module, args, kwargs, out):
        seen.update(x=args[0] if args else kwargs["hidden_states"], out=out)

    layer = anatomy.layers(model.backbone)[0]
    layer.register_forward_hook(record, with_kwargs=True)
    x, _ = example_input("mert")
    with torch.no_grad():
        model(x)
        out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
        want = _manual_layer(layer, anat, seen["x"], position)
    assert torch.allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("preset", ["music_adapter", "music_lora"])
@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_presets_keep_the_method_contract(preset, profile, layout, mert_checkpoints, tmp_path):
    model = _music(preset, layout, mert_checkpoints, profile).eval()
    folder = str(mert_checkpoints[layout])
    plain = pk.build_model("mert", folder, num_classes=5, seed=1, profile=profile).eval()
    x, mask = example_input("mert")
    with torch.no_grad():  # identity at init (W_up = 0 / B = 0)
        assert torch.allclose(model(x, mask), plain(x, mask), atol=1e-5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = contract.steps(model, "mert", 3)
    for name, p in model.named_parameters():
        if p.requires_grad and not name.endswith(contract.INERT):
            assert grads[name] and not torch.equal(p, before[name]), name
        elif not p.requires_grad:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    model.eval()
    pk.save_trained(model, tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.allclose(model(x, mask), again(x, mask), atol=1e-6)


# ----------------------------------------------------------------------------- every method
@pytest.fixture(scope="module")
def as_family(mert_checkpoints):
    return {layout: {"mert": folder} for layout, folder in mert_checkpoints.items()}


CASES = [(m, layout) for m in pk.list_methods() for layout in LAYOUTS]


@pytest.mark.parametrize("method,layout", CASES)
def test_every_method_on_mert(method, layout, as_family, tmp_path):
    """The registry contract (tests/methods/conftest.py) on both MERT layouts."""
    ckpts = as_family[layout]
    contract.check_identity_at_init(method, "mert", ckpts)
    contract.check_training_touches_only_trainable(method, "mert", ckpts)
    contract.check_every_trainable_tensor_changes_output(method, "mert", ckpts)
    contract.check_save_load_round_trip(method, "mert", ckpts, tmp_path)
    if pk.get_method(method).merges:
        contract.check_merge_equals_unmerged(method, "mert", ckpts)


def test_music_probe_trains_the_head_only_even_with_a_final_norm():
    from petl_kit.backbones import mert

    with torch.device("meta"):  # 330M layout: pre-LN, so it has a final LayerNorm
        model = pk.build_model(
            "mert", backbone_config=mert.MERT_V1_330M, num_classes=50, head="mlp",
            encoder_depth=6, **method_preset("music_probe"),
        )  # fmt: skip
    counts = pk.count_parameters(model)
    assert counts["trainable"] == counts["groups"]["head"] == 1024 * 1024 + 1024 + 1024 * 50 + 50


@pytest.mark.parametrize("position", ["after_residual", "sublayer_output"])
def test_music_adapter_on_the_conformer_respects_the_half_steps(position):
    """MusicFM block (§11): adapters at ffn1, attention and ffn2 (the FFN outputs enter the
    stream scaled by 0.5), none on the conv module."""
    profile = "reference" if position == "after_residual" else "corrected"
    model = pk.build_model(
        "musicfm", backbone_config="tiny", num_classes=3, seed=0, profile=profile,
        options={"eval_attention_dropout": False},  # M7 would make the block stochastic
        **method_preset("music_adapter", profile),
    ).eval()  # fmt: skip
    _randomise_adapters(model)
    layer = anatomy.layers(model.backbone)[0]
    assert not hasattr(layer.conv_module, "petl_adapter")
    seen = {}

    def record(module, args, kwargs, out):
        seen.update(x=args[0] if args else kwargs["hidden_states"], kw=kwargs, out=out)

    layer.register_forward_hook(record, with_kwargs=True)
    with torch.no_grad():
        model(torch.randn(1, 24000))
        x, kw = seen["x"], seen["kw"]
        out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]

        def ln(module):
            return lambda t: nn.functional.layer_norm(
                t, (t.shape[-1],), module.weight, module.bias, module.eps
            )

        f1, fa, f2 = layer.ffn1.petl_adapter, layer.self_attn.petl_adapter, layer.ffn2.petl_adapter
        if position == "after_residual":
            h = x + 0.5 * layer.ffn1.inner(ln(layer.ffn1_layer_norm)(x))
            h = h + f1(h)
        else:
            y = layer.ffn1.inner(ln(layer.ffn1_layer_norm)(x))
            h = x + 0.5 * (y + f1(y))
        a = layer.self_attn.inner(
            hidden_states=ln(layer.self_attn_layer_norm)(h),
            attention_mask=kw.get("attention_mask"),
            relative_position_embeddings=kw.get("relative_position_embeddings"),
        )[0]
        h = _adapt(position, h, a, fa)
        h = h + layer.conv_module(h)
        y = layer.ffn2.inner(ln(layer.ffn2_layer_norm)(h))
        if position == "after_residual":
            h = (h + 0.5 * y) + f2(h + 0.5 * y)
        else:
            h = h + 0.5 * (y + f2(y))
        want = ln(layer.final_layer_norm)(h)
    assert torch.allclose(out, want, atol=1e-5)


def test_music_lora_reference_merges_on_eval(mert_checkpoints):
    """M5: merged into W at every switch to eval, subtracted at every switch to train; a snapshot
    of the factors loads exactly into a merged model (best-epoch selection)."""
    model = _music("music_lora", "post_ln", mert_checkpoints, "reference")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    contract.steps(model, "mert", 2)
    snapshot = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    x, mask = example_input("mert")
    with torch.no_grad():
        model.eval()
        wrapped = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
        assert all(m.merged for m in wrapped)
        at_snapshot = model(x, mask)
    contract.steps(model, "mert", 2)  # train() unmerged, the factors moved on
    assert not any(m.merged for m in wrapped)
    with torch.no_grad():
        model.eval()
        assert not torch.allclose(model(x, mask), at_snapshot, atol=1e-5)
        model.load_state_dict(snapshot, strict=False)
        assert torch.allclose(model(x, mask), at_snapshot, atol=1e-5)
    model.train()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.allclose(p, frozen[name], atol=1e-6), name
    corrected = _music("music_lora", "post_ln", mert_checkpoints, "corrected").eval()
    assert not any(m.merged for m in corrected.modules() if isinstance(m, LoRALinear))
