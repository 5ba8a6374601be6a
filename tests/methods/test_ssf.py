"""SSF (spec methods.md §12, quirks M5, M20, M22): the forward, the merge, the preset counts."""

import pytest
import torch
from torch import nn

import petl_kit as pk
from petl_kit.methods.registry import method_preset
from petl_kit.methods.ssf import SSFConv1d, SSFLinear
from tests.conftest import example_input


def test_forward_is_scale_and_shift_of_the_frozen_output():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    w, b = base.weight.detach().clone(), base.bias.detach().clone()
    ssf = SSFLinear(base, std=0.02)
    x = torch.randn(3, 6)
    expected = (x @ w.T + b) * ssf.petl_ssf.scale + ssf.petl_ssf.shift
    assert torch.allclose(ssf(x), expected, atol=1e-6)
    assert not torch.allclose(ssf(x), x @ w.T + b, atol=1e-4)  # γ ~ N(1, 0.02): not identity
    ssf.merge()
    assert torch.allclose(ssf(x), expected, atol=1e-5)
    ssf.unmerge()
    assert torch.allclose(ssf.weight, w, atol=1e-6) and torch.allclose(ssf.bias, b, atol=1e-6)


def test_bias_free_conv_gets_the_scale_only():
    conv = nn.Conv1d(4, 8, 1, bias=False)
    ssf = SSFConv1d(conv, std=0.02)
    assert ssf.petl_ssf.shift is None
    x = torch.randn(2, 4, 5)
    expected = conv(x) * ssf.petl_ssf.scale[:, None]
    assert torch.allclose(ssf(x), expected, atol=1e-6)
    ssf.merge()
    assert torch.allclose(ssf(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "backbone,profile,count",
    [
        ("mert", "reference", 82_944),
        ("mert", "corrected", 82_944),
        ("musicfm", "reference", 190_464),  # pointwise-conv scales (M20)
        ("musicfm", "corrected", 172_032),
    ],
)
def test_music_ssf_counts_six_layers(backbone, profile, count):
    with torch.device("meta"):
        model = pk.build_model(
            backbone, num_classes=50, encoder_depth=6, profile=profile,
            **method_preset("music_ssf", profile),
        )  # fmt: skip
    counts = pk.count_parameters(model)
    assert counts["trainable"] - counts["groups"]["head"] == count
    assert counts["groups"]["method"] == count and counts["groups"]["norms"] == 0


def test_mert_per_layer_count_and_width_from_the_backbone():
    with torch.device("meta"):
        model = pk.build_model("mert", num_classes=2, encoder_depth=1, **method_preset("music_ssf"))
    counts = pk.count_parameters(model)
    assert counts["groups"]["method"] == 13_824  # 768-wide (M22), not the reference's 1,024
    scales = [m.petl_ssf.scale.shape[0] for m in model.modules() if isinstance(m, SSFLinear)]
    assert sorted(set(scales)) == [768, 3072]


def test_flags_are_honoured_only_in_the_corrected_profile():
    cfg = pk.make_config("ssf", {"targets": ["Wq"]}, "corrected")
    assert cfg.active_targets() == ("q",)
    ref = pk.make_config("ssf", {"targets": ["Wq"]}, "reference")
    assert "conv" in ref.active_targets() and "ffn_out" in ref.active_targets()
    with pytest.raises(pk.ConfigError, match="unknown target 'gate'.*valid targets: q, k"):
        pk.make_config("ssf", {"targets": ["gate"]})


def test_reference_merges_on_eval_and_unmerges_on_train():
    model = pk.build_model(
        "mert", backbone_config="tiny", num_classes=3, seed=0, profile="reference",
        **method_preset("music_ssf", "reference"),
    )  # fmt: skip
    wrappers = [m for m in model.modules() if isinstance(m, SSFLinear)]
    assert wrappers and not any(m.merged for m in wrappers)
    x, mask = example_input("mert")
    model.train(False)
    assert all(m.merged for m in wrappers)
    with torch.no_grad():
        merged = model(x, mask)
    model.train()
    assert not any(m.merged for m in wrappers)
    model.eval()
    model.merge()  # idempotent
    with torch.no_grad():
        assert torch.allclose(model(x, mask), merged, atol=1e-6)
    corrected = pk.build_model(
        "mert", backbone_config="tiny", num_classes=3, seed=0, **method_preset("music_ssf")
    ).eval()
    assert not any(m.merged for m in corrected.modules() if isinstance(m, SSFLinear))
