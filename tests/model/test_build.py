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


# ------------------------------------------------------------------ music probing (heads.py)
@pytest.mark.parametrize(
    "hidden,n_out,count",
    [
        (768, 50, 629_042),  # MERT tagging
        (768, 24, 609_048),  # key
        (768, 300, 821_292),  # tempo
        (768, 95, 663_647),  # genre
        (768, 41, 622_121),  # instrument
        (768, 59, 635_963),  # mood/theme
        (1024, 50, 1_100_850),  # D = 1024 (MusicFM's width): tagging, key, tempo
        (1024, 24, 1_074_200),
        (1024, 300, 1_357_100),
    ],
)
def test_mlp_probe_head_counts(hidden, n_out, count):
    cfg = {} if hidden == 768 else {"hidden_size": 1024, "intermediate_size": 4096,
                                    "num_attention_heads": 16}  # fmt: skip
    with torch.device("meta"):
        model = pk.build_model(
            "mert", backbone_config=cfg, num_classes=n_out, head="mlp", encoder_depth=6
        )
    counts = pk.count_parameters(model)
    assert counts["trainable"] == counts["groups"]["head"] == count
    layers = [type(m).__name__ for m in model.head]
    assert layers == ["Linear", "Dropout", "ReLU", "Linear"]  # dropout before ReLU (§1.3)
    assert model.head[1].p == 0.5


@pytest.mark.parametrize("aggregation,extra", [("weighted_sum", 13), ("conv1d", 14)])
def test_layer_aggregation_counts_on_full_mert(aggregation, extra):
    with torch.device("meta"):
        model = pk.build_model("mert", num_classes=50, layer_aggregation=aggregation)
    assert pk.count_parameters(model)["groups"]["head"] == 768 * 50 + 50 + extra  # 13 states


def _states(model, x):
    with torch.no_grad():
        states, _ = model.encode_layers(x)
    return torch.stack([s.mean(1) for s in states], 1)  # [B, S, D]


def test_weighted_sum_starts_as_the_layer_average_and_learns_weights(tiny_checkpoints):
    model = pk.build_model(
        "hubert", str(tiny_checkpoints["hubert"]), num_classes=3, seed=0,
        layer_aggregation="weighted_sum",
    ).eval()  # fmt: skip
    x, _ = example_input("hubert")
    pooled = _states(model, x)
    assert pooled.shape[1] == 3  # 2 blocks + their input
    with torch.no_grad():
        assert torch.allclose(model(x), model.head.classifier(pooled.mean(1)), atol=1e-6)
        model.head.layer_logits.copy_(torch.tensor([0.0, 5.0, -1.0]))
        w = model.head.layer_logits.softmax(0)
        want = model.head.classifier(torch.einsum("s,bsd->bd", w, pooled))
        assert torch.allclose(model(x), want, atol=1e-6)
        assert torch.allclose(model.head.layer_weights().sum(), torch.tensor(1.0))


def test_conv1d_aggregator_is_the_model_card_recipe(tiny_checkpoints):
    model = pk.build_model(
        "mert", backbone_config="tiny", num_classes=3, seed=0, layer_aggregation="conv1d",
        head="mlp",
    ).eval()  # fmt: skip
    x = torch.randn(2, 8000)
    pooled = _states(model, x)
    conv = model.head.aggregator
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 1, (1,))
    with torch.no_grad():
        agg = torch.einsum("s,bsd->bd", conv.weight.view(-1), pooled) + conv.bias
        assert torch.allclose(model(x), model.head.classifier(agg), atol=1e-5)
    with pytest.raises(ValueError, match=r"expects per-state pooled features \[B, 3, D\]"):
        model.head(pooled[:, -1])  # a last-layer cache cannot feed it


@pytest.mark.parametrize("aggregation", ["last", "weighted_sum"])
def test_music_probe_trains_only_the_head_and_round_trips(aggregation, tmp_path):
    pk.load_backbone("mert", None, pk.tiny_config("mert")).save_pretrained(tmp_path / "mert")
    model = pk.build_model(
        "mert", str(tmp_path / "mert"), num_classes=4, seed=0, head="mlp", encoder_depth=1,
        layer_aggregation=aggregation,
    )  # fmt: skip
    assert all(n.startswith("head.") for n, p in model.named_parameters() if p.requires_grad)
    model.train()
    assert model.head.training and not model.backbone.training  # MLP dropout on, frozen off
    x = torch.randn(2, 6000)
    loss = model(x).logsumexp(-1).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())
    pk.save_trained(model.eval(), tmp_path / "run")
    again = pk.load_trained(tmp_path / "run").eval()
    assert again.build_args["encoder_depth"] == 1 and again.build_args["head"] == "mlp"
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-6)


def test_unknown_head_or_aggregation_is_named():
    with pytest.raises(pk.ConfigError, match="unknown head 'mlp2'; valid heads: linear, mlp"):
        pk.build_model("mert", backbone_config="tiny", head="mlp2")
    with pytest.raises(pk.ConfigError, match="unknown layer_aggregation 'mean'; valid: last, "):
        pk.build_model("mert", backbone_config="tiny", layer_aggregation="mean")


def test_layer_states_survive_layerdrop():
    # full fine-tuning trains with LayerDrop: a skipped block leaves the stream as it was
    cfg = pk.tiny_config("mert", layerdrop=1.0)
    model = pk.build_model(
        "mert", backbone_config=cfg, num_classes=3, method="full_ft", seed=0,
        layer_aggregation="weighted_sum",
    ).train()  # fmt: skip
    x = torch.randn(2, 6000)
    states, _ = model.encode_layers(x)
    assert len(states) == 3
    assert all(torch.equal(s, states[0]) for s in states)  # every block skipped
    assert model(x).shape == (2, 3)
    with torch.no_grad():  # eval: the same states as transformers' own hidden states
        states, _ = model.eval().encode_layers(x)
        ref = model.backbone(x, output_hidden_states=True).hidden_states
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(states, ref, strict=True))
