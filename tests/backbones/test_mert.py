"""MERT: published-layout loading (strict keys), config mapping, counts, 24 kHz, truncation."""

import json

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones import anatomy, mert
from petl_kit.backbones.mert import MertCheckpointError
from petl_kit.backbones.registry import frames_for, load_backbone


@pytest.fixture(scope="module")
def tiny_mert():
    torch.manual_seed(0)
    return load_backbone("mert", None, pk.tiny_config("mert")).eval()


@pytest.fixture(scope="module")
def published(tiny_mert, tmp_path_factory):
    """A folder in MERT-v1's published layout: remote-code config, pytorch_model.bin, old keys."""
    return mert.save_mert_checkpoint(tiny_mert, tmp_path_factory.mktemp("mert") / "MERT-v1")


def _wave(n=24000, batch=2):
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(1))


def test_published_folder_has_the_real_layout(published):
    config = json.loads((published / "config.json").read_text())
    assert config["model_type"] == "mert_model" and config["architectures"] == ["MERTModel"]
    assert config["feature_extractor_cqt"] is False and config["sample_rate"] == 24000
    state = torch.load(published / "pytorch_model.bin", weights_only=True)
    assert "encoder.pos_conv_embed.conv.weight_g" in state
    assert "encoder.pos_conv_embed.conv.weight_v" in state
    assert "masked_spec_embed" in state
    assert not any("parametrizations" in k for k in state)


@pytest.mark.parametrize("weights", ["bin", "safetensors", "save_pretrained"])
def test_loads_every_layout_exactly(weights, tiny_mert, tmp_path):
    if weights == "save_pretrained":
        tiny_mert.save_pretrained(tmp_path)
    else:
        mert.save_mert_checkpoint(tiny_mert, tmp_path, weights=weights)
    loaded = load_backbone("mert", str(tmp_path)).eval()
    x = _wave()
    with torch.no_grad():
        assert torch.equal(loaded(x).last_hidden_state, tiny_mert(x).last_hidden_state)
    for name, p in tiny_mert.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name


def test_config_maps_to_hubert(published):
    loaded = load_backbone("mert", str(published))
    cfg = loaded.config
    assert (cfg.feat_extract_norm, cfg.conv_bias, cfg.feat_proj_layer_norm) == (
        "group",
        False,
        True,
    )
    assert cfg.layer_norm_eps == 1e-5 and not cfg.do_stable_layer_norm
    assert loaded.petl_family == "mert"


def _rewrite(folder, tmp_path, edit_state=None, edit_config=None):
    out = tmp_path / "edited"
    out.mkdir()
    config = json.loads((folder / "config.json").read_text())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    if edit_state:
        edit_state(state)
    if edit_config:
        edit_config(config)
    (out / "config.json").write_text(json.dumps(config))
    torch.save(state, out / "pytorch_model.bin")
    return out


def test_missing_key_is_named(published, tmp_path):
    key = "encoder.layers.1.attention.k_proj.bias"
    folder = _rewrite(published, tmp_path, edit_state=lambda s: s.pop(key))
    with pytest.raises(MertCheckpointError, match=r"missing keys \['encoder\.layers\.1\.attention"):
        load_backbone("mert", str(folder))


def test_unexpected_key_is_named(published, tmp_path):
    def add(state):
        state["encoder.layers.0.attention.extra_proj.weight"] = torch.zeros(2)

    folder = _rewrite(published, tmp_path, edit_state=add)
    with pytest.raises(
        MertCheckpointError, match=r"unexpected keys \['encoder\.layers\.0\..*extra"
    ):
        load_backbone("mert", str(folder))


def test_mask_embedding_is_the_one_documented_exception(published, tmp_path):
    # the music reference builds without masking (M10): the checkpoint's embedding is unused
    no_mask = load_backbone("mert", str(published), {"mask_time_prob": 0.0})
    assert getattr(no_mask, "masked_spec_embed", None) is None
    # with masking on, a file without it is incomplete
    folder = _rewrite(published, tmp_path, edit_state=lambda s: s.pop("masked_spec_embed"))
    with pytest.raises(MertCheckpointError, match=r"missing keys \['masked_spec_embed'\]"):
        load_backbone("mert", str(folder))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("feature_extractor_cqt", True, "feature_extractor_cqt=True needs MERT's own"),
        ("deepnorm", True, "deepnorm=True needs MERT's own"),
        ("sample_rate", 16000, "sample_rate=16000; MERT-v1 runs at 24000 Hz"),
        ("cqt_scale", 2, "unknown field 'cqt_scale'"),
    ],
)
def test_config_fields_the_hubert_path_cannot_honour(published, tmp_path, field, value, match):
    folder = _rewrite(published, tmp_path, edit_config=lambda c: c.__setitem__(field, value))
    with pytest.raises(pk.ConfigError, match=match):
        load_backbone("mert", str(folder))


def test_hub_ids_need_a_local_copy():
    with pytest.raises(pk.CheckpointError, match="hf download m-a-p/MERT-v1-95M --local-dir"):
        load_backbone("mert", "m-a-p/MERT-v1-95M")


def test_full_size_counts_on_meta():
    with torch.device("meta"):
        full = load_backbone("mert")
        probe = pk.build_model("mert", num_classes=50, encoder_depth=6, method="full_ft",
                               method_config={"freeze_feature_encoder": False})  # fmt: skip
        big = load_backbone("mert", None, mert.MERT_V1_330M)
        linear = pk.build_model("mert", num_classes=2)
    n = sum(p.numel() for p in full.parameters())
    assert n == 94_370_944 + 768  # + masked_spec_embed (the published config masks)
    assert len(full.encoder.layers) == 12 and not full.config.do_stable_layer_norm
    counts = pk.count_parameters(probe)
    assert counts["total"] - counts["groups"]["head"] == 51_843_712 + 768
    assert counts["trainable"] == 51_843_712 + 768 * 50 + 50  # masked_spec_embed frozen (R24)
    assert len(big.encoder.layers) == 24 and big.config.do_stable_layer_norm
    assert pk.count_parameters(linear)["frozen"] == n


def test_tiny_forward_at_24khz(tiny_mert):
    model = pk.build_model("mert", backbone_config="tiny", num_classes=4, seed=0).eval()
    extractor = model.feature_extractor(max_samples=24000)
    assert extractor.sample_rate == 24000
    values, mask = extractor(torch.randn(30000))
    with torch.no_grad():
        hidden, _ = model.encode(values[None])
        logits = model(values[None], mask[None])
    assert hidden.shape == (1, frames_for(model.backbone, 24000), 32) == (1, 74, 32)
    assert logits.shape == (1, 4) and torch.isfinite(logits).all()
    assert frames_for(model.backbone, 120_000) == 374  # 75 Hz (spec §6.1)
    with pytest.raises(pk.ConfigError, match="'mert' takes 24000 Hz audio; sample_rate=16000"):
        model.feature_extractor(sample_rate=16000)


@pytest.mark.parametrize("family", ["ast", "hubert", "mert"])
def test_encoder_depth_keeps_the_first_blocks(family):
    full = pk.build_model(family, backbone_config="tiny", num_classes=3, seed=0)
    cut = pk.build_model(family, backbone_config="tiny", num_classes=3, seed=0, encoder_depth=1)
    assert len(cut.backbone.config.to_dict()) and cut.backbone.config.num_hidden_layers == 1
    first = anatomy.layers(full.backbone)[0]
    kept = anatomy.layers(cut.backbone)
    assert len(kept) == 1 and torch.equal(
        next(iter(first.parameters())), next(iter(kept[0].parameters()))
    )
    x = torch.randn(2, 100, 128) if family == "ast" else _wave(4000)
    with torch.no_grad():
        states, _ = cut.eval().encode_layers(x)
        assert len(states) == 2
        assert torch.equal(states[-1], cut.encode(x)[0])
    with pytest.raises(pk.ConfigError, match="encoder_depth=3; .* has 2 blocks: choose an int"):
        pk.build_model(family, backbone_config="tiny", encoder_depth=3)


def test_truncated_published_checkpoint_is_sliced_after_loading(published):
    full = load_backbone("mert", str(published)).eval()
    cut = pk.build_model("mert", str(published), num_classes=2, encoder_depth=1).eval()
    x = _wave(4000)
    with torch.no_grad():
        want = full(x, output_hidden_states=True).hidden_states[1]
        assert torch.allclose(cut.encode(x)[0], want, atol=1e-6)


def test_fewer_layers_by_config_points_to_encoder_depth(published):
    with pytest.raises(MertCheckpointError, match="unexpected keys.*build_model.encoder_depth"):
        load_backbone("mert", str(published), {"num_hidden_layers": 1})
