"""build_model: reference trainable counts, groups, pooling, train-mode policy, errors."""

import pytest
import torch

import petl_kit as pk
from tests.conftest import example_input

FSC = dict(backbone="ast", backbone_config={"max_length": 400}, num_classes=31)


@pytest.mark.parametrize(
    "method,profile,trainable,groups",
    [
        ("linear", "reference", 25_375, {"head": 23_839, "final_norm": 1_536}),
        ("linear", "corrected", 25_375, {"head": 23_839, "final_norm": 1_536}),
        ("BitFit", "reference", 125_983, {"final_norm": 768, "norms": 18_432, "backbone": 82_944}),
        ("bitfit", "corrected", 125_983, {"final_norm": 768, "norms": 18_432, "backbone": 82_944}),
        ("full-FT", "reference", 85_615_872 + 23_839, {"head": 23_839}),
    ],
)
def test_reference_counts_ast_fsc(method, profile, trainable, groups):
    counts = pk.count_parameters(pk.build_model(method=method, profile=profile, **FSC))
    assert counts["trainable"] == trainable
    for group, n in groups.items():
        assert counts["groups"][group] == n


def test_pure_linear_probe_and_all_biases_options():
    pure = pk.build_model(method="linear", method_config={"probe_final_ln": False}, **FSC)
    assert pk.count_parameters(pure)["trainable"] == 768 * 31 + 31
    allb = pk.build_model(method="bitfit", method_config={"bitfit_scope": "all_biases"}, **FSC)
    assert pk.count_parameters(allb)["trainable"] == 125_983 + 768  # + patch-embedding conv bias


def test_wav2vec2_reference_and_corrected_full_ft():
    ref = pk.build_model("wav2vec2", num_classes=31, method="full_ft", profile="reference")
    assert pk.count_parameters(ref)["trainable"] == 21_287_455  # last 3 layers + head (R25)
    cor = pk.build_model("wav2vec2", num_classes=31, method="full_ft")
    frozen = sum(p.numel() for p in cor.backbone.feature_extractor.parameters()) + 768
    assert pk.count_parameters(cor)["frozen"] == frozen  # CNN encoder + masked_spec_embed (R24)
    lin = pk.build_model("wav2vec2", num_classes=4, method="linear", profile="reference")
    assert pk.count_parameters(lin)["trainable"] == 3_076


@pytest.mark.parametrize("profile,dropout_active", [("reference", True), ("corrected", False)])
def test_frozen_parts_follow_the_profile_in_train_mode(profile, dropout_active, tiny_checkpoints):
    model = pk.build_model(
        "wav2vec2",
        str(tiny_checkpoints["wav2vec2"]),
        num_classes=3,
        method="linear",
        profile=profile,
    ).train()
    dropouts = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.training == dropout_active for m in dropouts)
    assert model.head.training


def test_masked_pooling_ignores_padding():
    # base checkpoints GroupNorm over time in their conv encoder, so padding leaks there by
    # design (HF advises no mask for them); layer-norm encoders are padding-invariant
    cfg = pk.tiny_config("hubert", feat_extract_norm="layer", do_stable_layer_norm=True)
    model = pk.build_model("hubert", backbone_config=cfg, num_classes=3, seed=0).eval()
    x, mask = example_input("hubert")
    with torch.no_grad():
        padded = model(x, mask)[-1]
        alone = model(x[-1:, :3000], mask[-1:, :3000])[0]
    assert torch.allclose(padded, alone, atol=1e-4)


@pytest.mark.parametrize("pooling", ["ALL", "CLS", "cls_dist", "SPEECH"])
def test_poolings_pick_the_right_tokens(pooling, tiny_checkpoints):
    model = pk.build_model("ast", str(tiny_checkpoints["ast"]), num_classes=3, pooling=pooling)
    hidden = torch.arange(2 * 110 * 1, dtype=torch.float).reshape(2, 110, 1)
    pooled = model.pool(hidden)
    rows = {
        "ALL": slice(0, 110),
        "CLS": slice(0, 1),
        "CLS_DIST": slice(0, 2),
        "SPEECH": slice(2, 110),
    }
    assert torch.equal(pooled, hidden[:, rows[model.pooling]].mean(1))


def test_bad_arguments_are_named():
    with pytest.raises(pk.ConfigError, match="unknown pooling 'MAX'"):
        pk.build_model("ast", backbone_config="tiny", pooling="MAX")
    with pytest.raises(pk.ConfigError, match="CLS/DIST"):
        pk.build_model("hubert", backbone_config="tiny", pooling="CLS")
    with pytest.raises(pk.ConfigError, match="unknown task 'regression'"):
        pk.build_model("ast", backbone_config="tiny", task="regression")
    with pytest.raises(pk.ConfigError, match="unknown profile 'paper'"):
        pk.build_model("ast", backbone_config="tiny", profile="paper")
    with pytest.raises(pk.ConfigError, match="pos_embed = 'random'"):
        pk.build_model("ast", backbone_config="tiny", options={"pos_embed": "random"})
