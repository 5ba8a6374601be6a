"""Quirks M6, M7, R27, M11 under both profiles and as switches of their own; R2 has one way."""

import warnings

import pytest
import torch
from torch import nn

import petl_kit as pk
from petl_kit.methods.music_adapter import DropoutBottleneck
from petl_kit.methods.registry import method_preset


def _dropouts_training(model) -> set[bool]:
    return {m.training for m in model.backbone.modules() if isinstance(m, nn.Dropout)}


# ----------------------------------------------------------------------------- M6
@pytest.mark.parametrize("preset", ["music_adapter", "music_lora", "music_probe", "music_ssf"])
def test_m6_music_reference_keeps_the_whole_model_in_train_mode(preset):
    def build(profile, **kw):
        return pk.build_model(
            "mert", backbone_config="tiny", num_classes=3, profile=profile,
            **method_preset(preset, profile), **kw,
        ).train()  # fmt: skip

    assert _dropouts_training(build("reference")) == {True}  # frozen blocks' dropout too
    assert False in _dropouts_training(build("corrected"))
    switched = build("reference", options={"frozen_modules_train_mode": False})
    assert False in _dropouts_training(switched)
    assert _dropouts_training(build("corrected", options={"frozen_modules_train_mode": True})) == {
        True
    }


def test_m6_is_a_music_quirk_petl_ast_wrappers_still_put_the_backbone_in_eval():
    model = pk.build_model(
        "wav2vec2", backbone_config="tiny", num_classes=3, method="lora", profile="reference",
        method_config={"rank": 2},
    ).train()  # fmt: skip
    assert False in _dropouts_training(model)


# ----------------------------------------------------------------------------- M7
def _musicfm(profile, **kw):
    kw.setdefault("backbone_config", "tiny")
    return pk.build_model("musicfm", num_classes=3, profile=profile, **kw)


def test_m7_attention_dropout_at_evaluation_follows_the_profile():
    assert _musicfm("reference").backbone.config.eval_attention_dropout is True
    assert _musicfm("corrected").backbone.config.eval_attention_dropout is False
    on = _musicfm("corrected", options={"eval_attention_dropout": True})
    assert on.backbone.config.eval_attention_dropout is True
    off = _musicfm("reference", options={"eval_attention_dropout": False})
    assert off.backbone.config.eval_attention_dropout is False
    # the backbone config's own field still works, unless the option contradicts it
    tiny = {**pk.tiny_config("musicfm"), "eval_attention_dropout": True}
    assert _musicfm("corrected", backbone_config=tiny).backbone.config.eval_attention_dropout
    with pytest.raises(pk.ConfigError, match="eval_attention_dropout=True contradicts options"):
        _musicfm("corrected", backbone_config=tiny, options={"eval_attention_dropout": False})


def test_m7_reference_predictions_are_stochastic_in_eval_mode():
    tiny = {**pk.tiny_config("musicfm"), "attention_dropout": 0.5}
    x = torch.randn(2, 9600, generator=torch.Generator().manual_seed(0))
    for profile, same in (("reference", False), ("corrected", True)):
        model = _musicfm(profile, backbone_config=tiny, seed=0).eval()
        with torch.no_grad():
            assert torch.equal(model(x), model(x)) is same, profile


# ----------------------------------------------------------------------------- R27
@pytest.mark.parametrize("profile,expected", [("reference", True), ("corrected", False)])
def test_r27_norm_over_padding_follows_the_profile_through_run_experiment(
    profile, expected, tiny_checkpoints, tmp_path
):
    params = dict(
        experiment="t", method="linear", dataset="synthetic", data_path=None, n_per_class=3,
        backbone="wav2vec2", checkpoint=str(tiny_checkpoints["wav2vec2"]), max_length=4000,
        epochs=1, batch_size=4, lr=None, seed=0, profile=profile, device="cpu", progress=False,
    )  # fmt: skip
    result = pk.run_experiment(params, tmp_path / profile)
    assert result.extractor.norm_over_padding is expected
    switched = pk.build_model(
        "wav2vec2", backbone_config="tiny", profile=profile,
        options={"norm_over_padding": not expected},
    )  # fmt: skip
    assert switched.feature_extractor().norm_over_padding is (not expected)
    wave = torch.randn(3000)
    values, _ = result.extractor(wave)
    assert (
        bool((values[3000:] != 0).any()) is expected
    )  # pads become non-zero over the padded vector


# ----------------------------------------------------------------------------- M11
def _adapter(profile, drop_rate):
    cfg = dict(method_preset("music_adapter", profile)["method_config"], drop_rate=drop_rate)
    return pk.build_model(
        "mert", backbone_config="tiny", num_classes=3, profile=profile, method="adapter",
        method_config=cfg,
    )  # fmt: skip


def test_m11_drop_rate_is_ignored_by_the_reference_and_applied_by_default():
    with pytest.warns(UserWarning, match="drop_rate=0.1 is ignored.*M11"):
        ref = _adapter("reference", 0.1)
    assert not any(isinstance(m, DropoutBottleneck) for m in ref.modules())
    cor = _adapter("corrected", 0.1)
    drops = [m for m in cor.modules() if isinstance(m, DropoutBottleneck)]
    assert drops and all(m.dropout.p == 0.1 for m in drops)
    assert pk.count_parameters(ref) == pk.count_parameters(cor)  # dropout adds no parameter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _adapter("reference", 0.0)  # the published configs' 0.0: nothing to say
    with pytest.raises(pk.ConfigError, match="drop_rate = 0.1 is the music layout's"):
        pk.make_config("adapter", {"drop_rate": 0.1})
    with pytest.raises(pk.ConfigError, match="drop_rate = 1.5"):
        pk.make_config("adapter", {"drop_rate": 1.5})


# ----------------------------------------------------------------------------- R2
def test_r2_has_one_way_the_methods_init_switches():
    with pytest.raises(pk.ConfigError, match="init"):
        pk.build_model("ast", backbone_config="tiny", options={"init": "method_default"})
    ref = pk.make_config("lora", {}, "reference")
    assert ref.lora_init == "reference_effective"
    assert pk.make_config("adapter", {}, "reference").adapter_init == "reference_effective"
