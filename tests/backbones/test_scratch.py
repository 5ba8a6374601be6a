"""The from-scratch CNN baseline: shapes, counts, gradients, frame masks, persistence, and the
clear error for every method but full fine-tuning."""

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones.scratch import TINY_SCRATCH, ScratchConfig, ScratchModel
from petl_kit.config import ConfigError


def expected_count(cfg: ScratchConfig, num_classes: int) -> int:
    """Σ convs 9·c_in·c_out (no bias) + GroupNorm 2·c_out, projection, temporal blocks
    5·D² + 2D (no conv bias, GroupNorm), head D·C + C."""
    total, c_in = 0, 1
    for c in cfg.channels:
        total += 9 * c_in * c + 2 * c
        c_in = c
    d, mel = cfg.hidden_size, cfg.n_mels // 2 ** len(cfg.channels)
    total += c_in * mel * d + d
    total += cfg.temporal_layers * (5 * d * d + 2 * d)
    return total + d * num_classes + num_classes


@pytest.fixture(scope="module")
def model():
    return pk.build_model(backbone="scratch", backbone_config="tiny", num_classes=24,
                          method="full_ft", seed=0)  # fmt: skip


def test_counts_match_the_formula_and_everything_trains(model):
    counts = pk.count_parameters(model)
    cfg = ScratchConfig(**TINY_SCRATCH)
    assert counts["trainable"] == counts["total"] == expected_count(cfg, 24)
    assert counts["groups"]["head"] == 32 * 24 + 24
    default = pk.build_model(backbone="scratch", num_classes=24, method="full_ft")
    assert pk.count_parameters(default)["trainable"] == expected_count(ScratchConfig(), 24)
    assert 200_000 < expected_count(ScratchConfig(), 24) < 400_000  # "small": ~0.3 M


def test_forward_shapes_frame_rate_and_backward(model):
    wave = torch.randn(2, 24000)  # 1 s at 24 kHz -> 101 mel frames -> 25 frames
    out = model.backbone(wave, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 25, 32)
    assert len(out.hidden_states) == 1 + TINY_SCRATCH["temporal_layers"]
    assert model.backbone.frames_for(24000) == 25 and model.backbone.frames_for(120000) == 125
    logits = model(wave)
    assert logits.shape == (2, 24) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_attention_mask_gives_the_valid_frames_to_pooling():
    """1 s of audio + 1 s of padding: 25 valid frames of 50, and the masked mean differs from the
    plain one (GroupNorm and the temporal convolutions still see the padded frames, so the two
    are not expected to equal the unpadded clip exactly)."""
    torch.manual_seed(0)
    model = pk.build_model(backbone="scratch", backbone_config="tiny", num_classes=3,
                           method="full_ft", seed=0).eval()  # fmt: skip
    wave = torch.randn(1, 24000)
    padded = torch.cat([wave, torch.zeros(1, 24000)], 1)
    mask = torch.cat([torch.ones(1, 24000), torch.zeros(1, 24000)], 1).long()
    frames = model.backbone._get_feature_vector_attention_mask(50, mask)
    assert frames.sum().item() == 25 and frames[0, :25].all()
    full = model(padded)
    masked = model(padded, attention_mask=mask)
    assert not torch.allclose(full, masked)  # the padded frames are out of the mean


def test_learns_a_separable_task_quickly():
    """A few full-FT steps on two very different chords drive the loss down."""
    from petl_kit.data.music.synthetic import make_synthetic_music

    ds = make_synthetic_music("chords", n_per_class=4, clip_seconds=1.0, seed=0)
    x = torch.stack([torch.from_numpy(c.source) for c in ds.train if c.label in (0, 18)])
    y = torch.tensor([int(c.label == 18) for c in ds.train if c.label in (0, 18)])
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    torch.manual_seed(0)
    model = pk.build_model(backbone="scratch", backbone_config="tiny", num_classes=2,
                           method="full_ft", seed=0)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_save_and_load_trained_round_trip(model, tmp_path):
    pk.save_trained(model, tmp_path / "w")
    again = pk.load_trained(tmp_path / "w")
    wave = torch.randn(2, 12000)
    model.eval(), again.eval()
    torch.testing.assert_close(again(wave), model(wave))
    model.train()
    folder = tmp_path / "hf"
    model.backbone.save_pretrained(folder)
    loaded = pk.load_backbone("scratch", folder)
    assert isinstance(loaded, ScratchModel) and loaded.config.channels == TINY_SCRATCH["channels"]


@pytest.mark.parametrize("method", [m for m in pk.list_methods() if m != "full_ft"])
def test_other_methods_are_a_clear_error(method):
    small = {"lora": {"rank": 2}, "adapter": {"bottleneck": 4}, "dense_moa": {"bottleneck": 4},
             "soft_moa": {"bottleneck": 4}}.get(method)  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=f"method '{method}' does not apply to backbone 'scratch'; valid methods: full_ft",
    ):
        pk.build_model(backbone="scratch", backbone_config="tiny", num_classes=3,
                       method=method, method_config=small)  # fmt: skip


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="n_mels=100 must be divisible by"):
        ScratchConfig(n_mels=100)
    with pytest.raises(ConfigError, match="channels"):
        ScratchConfig(channels=[8, 0])
