"""MusicFM: the front end, the conformer outputs, strict loading of the published key layout,
the full model's counts (meta device), and every registered method on a tiny MusicFM."""

import pytest
import torch
import torchaudio

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.backbones.musicfm import (
    MSD_MEL_MEAN,
    MSD_MEL_STD,
    MusicFMConfig,
    MusicFMModel,
    load_musicfm,
)
from petl_kit.backbones.registry import CheckpointError, load_backbone, tiny_config
from petl_kit.methods import adapter
from tests.conftest import train_steps

SR = 24000
# q·(k + b) shifts every key's score for a query by the same amount and softmax ignores shifts
# (the key bias, and SSF's shift of the keys: its effect is rounding, which may or may not pass a
# tolerance); the positional conv exists in MusicFM but its encoder never applies it (spec §7)
NO_EFFECT = ("linear_k.bias", "linear_k.petl_ssf.shift", "pos_conv_embed.")


def wave_batch(seconds: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = int(SR * seconds)
    wave = torch.randn(2, n, generator=g) * 0.1
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, 2 * n // 3 :] = 0  # a padded example
    wave[1, 2 * n // 3 :] = 0
    return wave, mask


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = load_backbone("musicfm", None, tiny_config("musicfm"))
    folder = tmp_path_factory.mktemp("musicfm") / "tiny"
    model.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- the backbone
def test_tokens_at_25_hz_and_hidden_state_convention():
    torch.manual_seed(0)
    model = MusicFMModel(MusicFMConfig(**tiny_config("musicfm"))).eval()
    wave, _ = wave_batch(1.0)
    with torch.no_grad():
        out = model(wave, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 25, 32)
    states = out.hidden_states
    assert len(states) == model.config.num_hidden_layers + 1
    # the last state is the encoder's final LN output; the ones before are raw layer outputs
    assert torch.equal(states[-1], out.last_hidden_state)
    with torch.no_grad():
        model.conformer.layer_norm.weight.mul_(3.0)
        again = model(wave, output_hidden_states=True).hidden_states
    assert torch.equal(again[1], states[1]) and torch.allclose(again[-1], 3.0 * states[-1])
    # 30 s -> 750 tokens; lengths that are not multiples of the hop round as the convolutions do
    for n in (720000, 24000, 24239, 23999, 4800):
        lengths = model._get_feat_extract_output_lengths(torch.tensor([n]))
        with torch.no_grad():
            t = model.conv(model.mel(torch.zeros(1, n))).shape[1]
        assert int(lengths) == t
    assert int(model._get_feat_extract_output_lengths(torch.tensor([720000]))) == 750


def test_mel_front_end_matches_torchaudio_and_is_not_differentiated():
    cfg = MusicFMConfig(**tiny_config("musicfm"))
    model = MusicFMModel(cfg)
    wave = torch.randn(2, SR, requires_grad=True)
    mel = model.mel(wave)
    ref = torchaudio.transforms.AmplitudeToDB()(
        torchaudio.transforms.MelSpectrogram(SR, n_fft=2048, hop_length=240, n_mels=cfg.n_mels)(
            wave.detach()
        )
    )[..., :-1]  # the last frame is dropped: 100 frames per second
    assert mel.shape == (2, cfg.n_mels, 100)
    assert torch.allclose(mel, (ref - MSD_MEL_MEAN) / MSD_MEL_STD, atol=1e-5)
    assert not mel.requires_grad and mel.dtype == torch.float32
    assert model.half().mel(wave.detach().half()).dtype == torch.float32


def test_attention_dropout_at_evaluation_is_quirk_m7_only():
    wave, _ = wave_batch(1.0)
    torch.manual_seed(0)
    plain = MusicFMModel(MusicFMConfig(**tiny_config("musicfm"))).eval()
    quirk = MusicFMModel(
        MusicFMConfig(**tiny_config("musicfm"), eval_attention_dropout=True, attention_dropout=0.5)
    ).eval()
    quirk.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(wave).last_hidden_state, plain(wave).last_hidden_state)
        a, b = quirk(wave).last_hidden_state, quirk(wave).last_hidden_state
    assert not torch.allclose(a, b)  # stochastic at evaluation, as the music reference
    assert all(not m.training for m in quirk.modules())  # and the flags are restored


def test_save_pretrained_round_trip(tiny_folder):
    wave, mask = wave_batch(1.0)
    torch.manual_seed(0)
    source = load_backbone("musicfm", None, tiny_config("musicfm")).eval()
    again = load_backbone("musicfm", str(tiny_folder)).eval()
    with torch.no_grad():
        assert torch.allclose(
            source(wave, mask).last_hidden_state, again(wave, mask).last_hidden_state
        )
    assert again.petl_family == "musicfm"


@pytest.mark.parametrize("train_mode", [True, False])
def test_frozen_batchnorm_statistics_follow_quirk_m6(train_mode, tiny_folder):
    """M6: with frozen modules in train mode, BatchNorm statistics of the frozen front end and
    conv modules move (the music reference); the corrected default keeps them."""
    model = build("linear", tiny_folder, options={"frozen_modules_train_mode": train_mode})
    stats = model.backbone.conv.conv[0].bn1.running_mean.clone()
    model.train()(*wave_batch(1.0))
    assert torch.equal(model.backbone.conv.conv[0].bn1.running_mean, stats) != train_mode
    extractor = model.feature_extractor()  # raw 24 kHz waveform: MusicFM normalises its mel
    assert extractor.sample_rate == SR and not extractor.normalize


@pytest.mark.parametrize("key,value", [("n_mels", 30), ("hop_length", 0),
                                       ("eval_attention_dropout", "yes")])  # fmt: skip
def test_bad_front_end_config_is_named(key, value):
    with pytest.raises(pk.ConfigError, match=f"{key}={value!r}"):
        pk.build_model(backbone="musicfm", backbone_config=tiny_config("musicfm", **{key: value}))


# --------------------------------------------------------------------------- published layout
def layer0_keys() -> list[str]:
    """The layer-0 keys of spec §7.1 (layers 1-11 repeat them)."""
    names = [
        f"{ln}.{w}"
        for ln in ("ffn1_layer_norm", "self_attn_layer_norm", "ffn2_layer_norm", "final_layer_norm")
        for w in ("weight", "bias")
    ]
    names += [
        f"ffn{i}.{d}.{w}"
        for i in (1, 2)
        for d in ("intermediate_dense", "output_dense")
        for w in ("weight", "bias")
    ]
    names += [f"self_attn.linear_{p}.{w}" for p in "qkv" for w in ("weight", "bias")]
    names += ["self_attn.linear_out.weight", "self_attn.linear_out.bias"]
    names += [f"conv_module.{n}" for n in (
        "layer_norm.weight", "layer_norm.bias", "pointwise_conv1.weight", "depthwise_conv.weight",
        "batch_norm.weight", "batch_norm.bias", "batch_norm.running_mean",
        "batch_norm.running_var", "batch_norm.num_batches_tracked", "pointwise_conv2.weight",
    )]  # fmt: skip
    return [f"conformer.layers.0.{n}" for n in names]


def front_end_keys() -> list[str]:
    """The non-layer keys of spec §7.1 (transfer ones)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = [
        f"conv.conv.{b}.{c}.{w}" for b in (0, 1) for c in ("conv1", "conv2", "conv3")
        for w in ("weight", "bias")
    ]  # fmt: skip
    keys += [f"conv.conv.{b}.bn{i}.{w}" for b in (0, 1) for i in (1, 2, 3) for w in bn]
    keys += ["conv.linear.weight", "conv.linear.bias", "conformer.embed_positions.inv_freq"]
    keys += ["conformer.pos_conv_embed.conv.bias", "conformer.layer_norm.weight"]
    keys += ["conformer.layer_norm.bias"]
    return keys


def published_file(model: MusicFMModel, path, legacy_weight_norm: bool = True):
    """Write ``model`` as the published MusicFM file: ``{"state_dict": {"model.<key>": ...}}``
    with the pre-training parts (codebook linear, CLS, quantizer, mel buffers) and, optionally,
    the old ``weight_g`` / ``weight_v`` names of the positional conv."""
    d = model.config.hidden_size
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("mel.")}
    if legacy_weight_norm:
        base = "conformer.pos_conv_embed.conv."
        state[base + "weight_g"] = state.pop(base + "parametrizations.weight.original0")
        state[base + "weight_v"] = state.pop(base + "parametrizations.weight.original1")
    state["cls_token"] = torch.randn(d)
    state["linear.weight"], state["linear.bias"] = torch.randn(4096, d), torch.randn(4096)
    state["quantizer_melspec_2048_0.random_projection"] = torch.randn(512, 16)
    state["quantizer_melspec_2048_0.codebook"] = torch.randn(4096, 16)
    state["preprocessor_melspec_2048.mel_stft.spectrogram.window"] = torch.hann_window(2048)
    state["preprocessor_melspec_2048.mel_stft.mel_scale.fb"] = torch.rand(1025, 128)
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    return state


def test_model_keys_are_the_published_layout():
    with torch.device("meta"):
        model = MusicFMModel(MusicFMConfig(num_hidden_layers=1))
    keys = {k for k in model.state_dict() if not k.startswith("mel.")}
    base = "conformer.pos_conv_embed.conv.parametrizations.weight."
    expected = set(layer0_keys() + front_end_keys()) | {base + "original0", base + "original1"}
    assert keys == expected
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv.linear.weight"] == (1024, 16384)
    assert shapes["conv.conv.0.conv3.weight"] == (512, 1, 3, 3)
    assert shapes[base + "original1"] == (1024, 64, 128)
    assert shapes["conformer.embed_positions.inv_freq"] == (32,)
    assert shapes["conformer.layers.0.conv_module.pointwise_conv1.weight"] == (2048, 1024, 1)
    assert shapes["conformer.layers.0.conv_module.depthwise_conv.weight"] == (1024, 1, 31)


def test_published_checkpoint_loads_strictly_then_slices(tmp_path):
    torch.manual_seed(0)
    source = MusicFMModel(MusicFMConfig(**tiny_config("musicfm", num_hidden_layers=4))).eval()
    path = tmp_path / "pretrained_msd.pt"
    published_file(source, path)
    wave, _ = wave_batch(1.0)
    whole = load_musicfm(path, **tiny_config("musicfm", num_hidden_layers=4)).eval()
    with torch.no_grad():
        assert torch.equal(whole(wave).last_hidden_state, source(wave).last_hidden_state)
        two = load_backbone("musicfm", str(path), tiny_config("musicfm")).eval()  # 2 of 4 (M9)
        ref = source(wave, output_hidden_states=True).hidden_states[2]
        assert len(two.conformer.layers) == 2 and two.config.num_hidden_layers == 2
        assert torch.allclose(
            two(wave).last_hidden_state, source.conformer.layer_norm(ref), atol=1e-6
        )
    # build_model: the whole checkpoint loads, then encoder_depth slices it
    model = pk.build_model(
        backbone="musicfm",
        checkpoint=str(path),
        backbone_config=tiny_config("musicfm", num_hidden_layers=4),
        encoder_depth=2,
        num_classes=3,
    )
    assert anatomy.layers(model.backbone).__len__() == 2


def test_safetensors_plain_state_dict_loads(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = MusicFMModel(MusicFMConfig(**tiny_config("musicfm"))).eval()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("mel.")}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    again = load_musicfm(tmp_path / "m.safetensors", **tiny_config("musicfm")).eval()
    wave, _ = wave_batch(0.5)
    with torch.no_grad():
        assert torch.equal(again(wave).last_hidden_state, source(wave).last_hidden_state)


def test_missing_unexpected_and_bad_files_are_named(tmp_path):
    source = MusicFMModel(MusicFMConfig(**tiny_config("musicfm")))
    path = tmp_path / "m.pt"
    state = published_file(source, path)
    gone = "conformer.layers.1.conv_module.depthwise_conv.weight"
    wrapped = {f"model.{k}": v for k, v in state.items() if k != gone}
    torch.save({"state_dict": wrapped}, path)
    with pytest.raises(CheckpointError, match=gone.replace(".", r"\.")):
        load_musicfm(path, **tiny_config("musicfm"))
    extra = {**state, "conformer.layers.0.adapter.weight": torch.zeros(1)}
    torch.save(extra, path)  # a plain state dict, no wrapper, no prefix
    with pytest.raises(CheckpointError, match=r"unexpected keys \['conformer\.layers\.0\.adapter"):
        load_musicfm(path, **tiny_config("musicfm"))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="hidden_size|size mismatch"):
        load_musicfm(path, **tiny_config("musicfm", hidden_size=48, num_attention_heads=2))
    (tmp_path / "m.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        load_musicfm(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone("musicfm", str(tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="num_hidden_layers=5"):
        load_musicfm(path, **tiny_config("musicfm", num_hidden_layers=5))


# --------------------------------------------------------------------------- counts (meta)
def meta_model(backbone="musicfm", **kw):
    with torch.device("meta"):
        return pk.build_model(backbone=backbone, **kw)


def test_full_model_counts():
    with torch.device("meta"):
        full = MusicFMModel(MusicFMConfig())
    n = sum(p.numel() for p in full.parameters())
    assert n + 1024 + (4096 * 1024 + 4096) == 328_932_480  # + CLS token + codebook linear
    # with buffers, as spec §7.1 lists the file: + mel window and filterbank + quantizer
    values = sum(v.numel() for k, v in full.state_dict().items() if not k.startswith("mel."))
    pretraining = 1024 + 4096 * 1024 + 4096 + 2048 + 1025 * 128 + 512 * 16 + 4096 * 16
    assert values + pretraining == 329_170_226
    pos_conv = sum(p.numel() for p in full.conformer.pos_conv_embed.parameters())
    assert pos_conv == 8_389_760
    ft = meta_model(
        num_classes=50,
        method="full_ft",
        method_config={"freeze_feature_encoder": False},
        encoder_depth=6,
    )
    counts = pk.count_parameters(ft)
    assert counts["trainable"] - counts["groups"]["head"] == 179_679_360


@pytest.mark.parametrize("task,n_out,count", [("tagging", 50, 1_100_850), ("key", 24, 1_074_200),
                                              ("tempo", 300, 1_357_100)])  # fmt: skip
def test_music_probing_heads(task, n_out, count):
    model = meta_model(
        num_classes=n_out,
        method="linear",
        method_config={"probe_final_ln": False},
        head="mlp",
        encoder_depth=6,
    )
    assert pk.count_parameters(model)["trainable"] == count


@pytest.mark.parametrize("backbone,conv,count", [("musicfm", False, 110_592),
                                                  ("musicfm", True, 110_592 + 6 * 1024),
                                                  ("mert", False, 50_688)])  # fmt: skip
def test_music_bitfit_counts(backbone, conv, count):
    """Spec §3.2: per-block sub-layer Linear biases and LayerNorm biases (+ conv BN bias)."""
    model = meta_model(
        backbone=backbone,
        num_classes=50,
        method="bitfit",
        method_config={"bitfit_scope": "music", "bitfit_conv": conv},
        encoder_depth=6,
    )
    counts = pk.count_parameters(model)
    assert counts["trainable"] - counts["groups"]["head"] == count


@pytest.mark.parametrize("profile", ["reference", "corrected"])
@pytest.mark.parametrize("preset,count,norms", [("music_adapter", 657_696, 49_152),
                                                ("music_lora", 405_504, 0),
                                                ("music_prefix", 9_649_152, 0)])  # fmt: skip
def test_music_preset_counts(preset, count, norms, profile):
    """Spec §11 (3 adapters of b = 16 per layer + 4 LayerNorms), §4.3 (rank 2 on q, k, v, out,
    both FFNs and the conv module's pointwise convs) and §5.2 (32 + 32 reparameterised prefix
    tokens per layer), 6 layers, without the head."""
    model = meta_model(
        num_classes=50, encoder_depth=6, profile=profile, **pk.method_preset(preset, profile)
    )
    counts = pk.count_parameters(model)
    assert counts["trainable"] - counts["groups"]["head"] == count
    assert counts["groups"]["norms"] == norms


@pytest.mark.parametrize("profile", ["reference", "corrected"])
@pytest.mark.parametrize("preset", ["music_adapter", "music_lora"])
def test_music_presets_train_on_the_conformer(preset, profile, tiny_folder):
    """Identity at init (W_up = 0, B = 0); every trainable tensor gets a gradient."""
    wave, mask = wave_batch(1.0)
    kw = dict(backbone="musicfm", checkpoint=str(tiny_folder), num_classes=5, seed=1)
    kw["options"] = {"eval_attention_dropout": False}  # M7 would make eval outputs stochastic
    model = pk.build_model(profile=profile, **kw, **pk.method_preset(preset, profile)).eval()
    probe = pk.build_model(profile=profile, method="linear", **kw).eval()
    with torch.no_grad():
        assert torch.allclose(model(wave, mask), probe(wave, mask), atol=1e-5)
    grads = steps(model, 3)
    assert all(grads.values()), [n for n, g in grads.items() if not g]


# --------------------------------------------------------------------------- every method
def build(method, folder, **kw):
    spec = pk.get_method(method)
    return pk.build_model(
        backbone="musicfm",
        checkpoint=str(folder),
        num_classes=5,
        method=method,
        method_config=kw.pop("method_config", spec.test_config),
        seed=1,
        **kw,
    )


def steps(model, n):
    wave, mask = wave_batch(1.0)
    return train_steps(model, wave, mask, torch.tensor([0, 3]), n)


@pytest.mark.parametrize("method", pk.list_methods())
def test_method_contract(method, tiny_folder, tmp_path):
    """Identity at init where the registry says so; training moves every trainable tensor and
    nothing frozen; every trainable tensor reaches the output; save → load round trip."""
    spec = pk.get_method(method)
    wave, mask = wave_batch(1.0)
    model = build(method, tiny_folder).eval()
    probe = build("linear", tiny_folder).eval()
    with torch.no_grad():
        same = torch.allclose(model(wave, mask), probe(wave, mask), atol=1e-5)
    assert same == spec.identity_at_init(model.method_config)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = steps(model, max(spec.needs_grad_steps, 1) + 1)
    for name, p in model.named_parameters():
        if p.requires_grad and not any(s in name for s in NO_EFFECT):
            assert grads[name], f"{name} never received a non-zero gradient"
            assert not torch.equal(p, before[name]), f"{name} did not change"
        elif not p.requires_grad:
            assert torch.equal(p, before[name]), f"frozen {name} changed"

    model.eval()
    with torch.no_grad():
        ref = model(wave, mask)
        for name, p in model.named_parameters():
            if not p.requires_grad or any(s in name for s in NO_EFFECT):
                continue
            saved = p.detach().clone()
            p.add_(torch.randn_like(p) * 0.5 + 0.5)
            changed = not torch.allclose(model(wave, mask), ref, rtol=0.0, atol=1e-7)
            p.copy_(saved)
            assert changed, f"{name} has no effect on the output"

    pk.save_trained(model, tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    # the BatchNorm running statistics that training moved travel with the trainable weights
    with torch.no_grad():
        assert torch.allclose(model(wave, mask), again(wave, mask), atol=1e-6)
    if spec.merges:
        with torch.no_grad():
            model.merge()
            assert torch.allclose(model(wave, mask), ref, atol=1e-5)
            model.unmerge()
            assert torch.allclose(model(wave, mask), ref, atol=1e-5)


# --------------------------------------------------------------------------- conformer sites
VARIANTS = [
    ("prompt_tuning", {"num_prompts": 3, "deep": False}),
    ("lora", {"rank": 2, "targets": "q,k,v,o"}),
    ("prefix_tuning", {"num_tokens": 4, "prefix_hidden": 8}),
    ("bitfit", {"bitfit_scope": "all_biases"}),
    *[("adapter", {"reduction_rate": 8, "placement": p}) for p in adapter.PLACEMENTS],
    *[
        ("adapter", {"reduction_rate": 8, "adapter_type": t, "seq_or_par": m, "adapter_block": b,
                     "kernel_size": 3})
        for t, m, b in [("Pfeiffer", "parallel", "bottleneck"), ("Pfeiffer", "sequential",
                        "conformer"), ("Houlsby", "sequential", "bottleneck"),
                        ("Houlsby", "parallel", "convpass")]
    ],
    *[
        (moa, {"reduction_rate": 8, "num_adapters": 2, "location": loc, "expert": e,
               "kernel_size": 3})
        for moa in ("dense_moa", "soft_moa")
        for loc, e in [("MHSA", "bottleneck"), ("FFN", "conformer"), ("FFN", "convpass")]
    ],
]  # fmt: skip


@pytest.mark.parametrize("method,config", VARIANTS)
def test_method_variants_train_on_the_conformer(method, config, tiny_folder):
    """Every placement and block reaches the conformer through the anatomy and trains."""
    model = build(method, tiny_folder, method_config=config)
    grads = steps(model, 2)
    dead = [n for n, g in grads.items() if not g and not any(s in n for s in NO_EFFECT)]
    assert not dead and pk.count_parameters(model)["trainable"] > model.head.weight.numel()


def test_ffn_site_is_the_second_macaron_half_step(tiny_folder):
    """Anatomy: 'ffn' is ffn2, whose output enters the stream times 0.5 (residual_scales)."""
    backbone = load_backbone("musicfm", str(tiny_folder)).eval()
    anat = anatomy.anatomy_of(backbone)
    layer = anatomy.layers(backbone)[0]
    assert anatomy.sublayer(layer, anatomy.FFN, anat) is layer.ffn2
    assert anatomy.sublayer(layer, anatomy.FFN1, anat) is layer.ffn1
    assert anatomy.layer_norm(layer, anatomy.CONV, anat) is layer.conv_module.layer_norm
    seen = []
    layer.final_layer_norm.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    wave, _ = wave_batch(0.5)
    with torch.no_grad():
        backbone(wave)

        class Shift(anatomy.SublayerWrapper):
            def combine(self, x, y):
                return y + 1.0

        anatomy.wrap_sublayer(layer, anatomy.FFN, anat, Shift)
        backbone(wave)
    scale = anat.residual_scales[anatomy.FFN]
    assert scale == 0.5 and torch.allclose(seen[1] - seen[0], torch.full_like(seen[0], scale))
    with pytest.raises(ValueError, match="'ffn1', 'conv'"):
        anatomy.sublayer(layer, "mlp", anat)


def test_prefix_keys_and_values_skip_the_rotary_embedding(tiny_folder):
    """Spec §5.2 (kit decision): queries and frame keys are rotated, the prefix keys are not."""
    model = build("prefix_tuning", tiny_folder).eval()
    attn = anatomy.sublayer(anatomy.layers(model.backbone)[0], anatomy.ATTENTION,
                            anatomy.anatomy_of(model.backbone))  # fmt: skip
    x = torch.randn(1, 7, 32)
    rel = model.backbone.conformer.embed_positions(x)
    h, d = attn.num_heads, attn.head_size
    with torch.no_grad():
        out, _ = attn(x, relative_position_embeddings=rel)
        rotated = attn._apply_rotary_embedding(x, rel)

        def heads(t):  # [1, T, H·d] -> [1, H, T, d]
            return t.reshape(1, -1, h, d).transpose(1, 2)

        q, k, v = (
            heads(attn.linear_q(rotated)),
            heads(attn.linear_k(rotated)),
            heads(attn.linear_v(x)),
        )
        keys = torch.cat([heads(attn.petl_prefix_k), k], dim=2)
        values = torch.cat([heads(attn.petl_prefix_v), v], dim=2)
        weights = torch.softmax(q @ keys.transpose(-1, -2) * d**-0.5, dim=-1)
        ref = attn.linear_out((weights @ values).transpose(1, 2).reshape(1, 7, h * d))
    assert torch.allclose(out, ref, atol=1e-5)
