"""Adapter blocks (spec ``methods.md`` §7.1): shapes, exact sizes, maths, quirks, init, mode."""

import pytest
import torch
import torch.nn.functional as F

from petl_kit.methods import blocks
from petl_kit.methods.blocks import Bottleneck, Conformer, Convpass, init_block, make_block

D = 32


def _x(b=2, m=14, d=D, seed=0):
    return torch.randn(b, m, d, generator=torch.Generator().manual_seed(seed))


# spec §7.1 / §14 / reference_numbers §3.2 (d = 768); Convpass r = 6 from the Soft-MoA row 933,216
@pytest.mark.parametrize(
    "kind,r,k,expected",
    [
        ("bottleneck", 12, 31, 19_212),
        ("bottleneck", 6, 31, 9_990),
        ("conformer", 8, 31, 21_024),
        ("conformer", 8, 8, 20_840),
        ("conformer", 12, 31, 30_384),
        ("conformer", 6, 31, 16_344),
        ("convpass", 6, 3, 10_104),
    ],
)
def test_block_sizes_match_the_spec(kind, r, k, expected):
    block = make_block(kind, 768, r, kernel_size=k)
    assert sum(p.numel() for p in block.parameters()) == expected
    assert blocks.num_params(kind, 768, r, k) == expected


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kind", blocks.BLOCKS)
@pytest.mark.parametrize("r,k", [(4, 3), (5, 8), (1, 1)])
def test_shapes_and_generic_count(kind, r, k):
    block = make_block(kind, D, r, kernel_size=k)
    assert block(_x()).shape == (2, 14, D)
    assert sum(p.numel() for p in block.parameters()) == blocks.num_params(kind, D, r, k)


def test_kernel_31_vs_1_differs_by_30r():  # reference_numbers §3.2: 8·30·12 = 2,880 over 12 layers
    diff = blocks.num_params("conformer", 768, 8, 31) - blocks.num_params("conformer", 768, 8, 1)
    assert 12 * diff == 2_880


def test_bottleneck_maths_and_activation():
    torch.manual_seed(0)
    x = _x()
    for act, fn in (("gelu", lambda t: F.gelu(t, approximate="none")), ("relu", F.relu)):
        block = init_block(Bottleneck(D, 4, act=act), "reference_effective")
        expected = fn(x @ block.down.weight.T + block.down.bias) @ block.up.weight.T + block.up.bias
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_conformer_maths_step_by_step():
    torch.manual_seed(0)
    block = Conformer(D, 4, kernel_size=3).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
    x = _x()
    h = F.layer_norm(x, (D,), block.norm.weight, block.norm.bias).transpose(1, 2)
    h = F.conv1d(h, block.pointwise_in.weight, block.pointwise_in.bias)
    h = h[:, :4] * torch.sigmoid(h[:, 4:])  # GLU: first half gated by the second
    h = F.conv1d(h, block.depthwise.weight, block.depthwise.bias, padding=1, groups=4)
    h = (h - block.bn.running_mean[:, None]) / torch.sqrt(block.bn.running_var[:, None] + 1e-5)
    h = h * block.bn.weight[:, None] + block.bn.bias[:, None]
    h = h * torch.sigmoid(h)
    h = F.conv1d(h, block.pointwise_out.weight, block.pointwise_out.bias).transpose(1, 2)
    assert torch.allclose(block(x), h, atol=1e-5)


def test_conformer_dead_ln_has_no_effect_and_no_gradient():
    x = _x()
    for ln, matters in (("dead", False), ("applied", True)):
        torch.manual_seed(0)
        block = Conformer(D, 4, kernel_size=3, ln=ln).eval()
        ref = block(x)
        ref.sum().backward()
        assert (block.norm.weight.grad is not None) == matters
        with torch.no_grad():
            block.norm.weight.add_(1.0)
            block.norm.bias.add_(0.5)
            assert torch.equal(block(x), ref) != matters


def test_convpass_unused_conv_is_dead_and_quick_gelu_twice():
    x = _x()
    for conv, matters in (("unused", False), ("used", True)):
        torch.manual_seed(0)
        block = init_block(Convpass(D, 4, conv=conv), "reference_effective").eval()
        ref = block(x)
        ref.sum().backward()
        assert (block.conv.weight.grad is not None) == matters
        with torch.no_grad():
            block.conv.weight.add_(1.0)
            assert torch.equal(block(x), ref) != matters
    q = blocks.quick_gelu
    block = init_block(Convpass(D, 4, conv="unused"), "reference_effective").eval()
    assert torch.allclose(block(x), block.up(q(q(block.down(x)))), atol=1e-6)
    block.use_conv = True
    h = block.conv(q(block.down(x)).transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(block(x), block.up(q(h)), atol=1e-6)


def test_convpass_dropout_follows_the_block_mode():
    block = init_block(Convpass(D, 4), "reference_effective")
    x = _x()
    block.train()
    assert not torch.equal(block(x), block(x))  # p = 0.1 active
    block.eval()
    assert torch.equal(block(x), block(x))


def test_conformer_batchnorm_batch_stats_in_train_running_stats_in_eval():
    torch.manual_seed(0)
    block = Conformer(D, 4, kernel_size=3)
    x = _x(b=4)
    block.train()
    before = block.bn.running_mean.clone()
    train_out = block(x)
    assert not torch.equal(block.bn.running_mean, before)  # statistics updated
    assert not torch.allclose(block(x[:1]), train_out[:1], atol=1e-5)  # depends on the batch
    block.eval()
    stats = block.bn.running_mean.clone()
    assert torch.allclose(block(x[:1]), block(x)[:1], atol=1e-6)  # per-example in eval
    assert torch.equal(block.bn.running_mean, stats)


def test_conformer_time_per_band_stays_in_its_band():
    f, t = 3, 4
    x = _x(m=2 + f * t)
    torch.manual_seed(0)
    seq = Conformer(D, 4, kernel_size=3).eval()
    band = Conformer(D, 4, kernel_size=3, axis="time_per_band", grid=(f, t)).eval()
    band.load_state_dict(seq.state_dict())
    y = x.clone()
    y[:, 2 + t - 1] += torch.randn(D)  # last time step of frequency band 0 (not a shift: LN)
    first_of_band_1 = 2 + t
    # the sequence axis crosses the band boundary (R7); time_per_band does not
    assert not torch.allclose(seq(x)[:, first_of_band_1], seq(y)[:, first_of_band_1])
    out_x, out_y = band(x), band(y)
    changed = (out_x - out_y).abs().sum(-1).amax(0) > 0
    assert changed.nonzero().flatten().tolist() == [2 + t - 2, 2 + t - 1]
    # special tokens bypass the depthwise conv: their output is a per-token function
    solo = band(torch.cat([x[:, :2], torch.zeros(2, f * t, D)], dim=1))
    assert torch.allclose(out_x[:, :2], solo[:, :2], atol=1e-6)
    # band-wise conv == a 1-D conv over each band's time row
    rows = [
        seq(torch.cat([x[:, :2], x[:, 2 + i * t : 2 + (i + 1) * t]], 1))[:, 2:] for i in range(f)
    ]
    # (in the sequence block CLS/DIST leak into each row's first step: compare the rest)
    for i, row in enumerate(rows):
        assert torch.allclose(out_x[:, 2 + i * t + 1 : 2 + (i + 1) * t], row[:, 1:], atol=1e-5)


def test_time_per_band_needs_a_grid():
    with pytest.raises(ValueError, match="grid"):
        Conformer(D, 4, axis="time_per_band")


# ------------------------------------------------------------------ initialisation (R2 / R3)
def test_reference_effective_init_is_trunc_normal_002():
    torch.manual_seed(0)
    block = init_block(Bottleneck(768, 96), "reference_effective")
    for lin in (block.down, block.up):
        assert abs(lin.weight.std().item() - 0.02) < 0.001
        assert abs(lin.weight.mean().item()) < 0.001
        assert torch.count_nonzero(lin.bias) == 0
    cp = init_block(Convpass(768, 96), "reference_effective")
    assert abs(cp.up.weight.std().item() - 0.02) < 0.001
    bound = (6 / (96 * 3 + 96 * 3)) ** 0.5  # the AST initialiser leaves Conv1d alone: Xavier
    assert (
        cp.conv.weight.abs().max() <= bound and abs(cp.conv.weight.std() - bound / 3**0.5) < 0.003
    )


def test_reference_effective_init_on_frame_models_reinitialises_conv1d():
    torch.manual_seed(0)
    block = init_block(Conformer(768, 96, kernel_size=31), "reference_effective", family="wav2vec2")
    w = block.depthwise.weight  # Kaiming-normal, fan_in = (in / groups) · k = 31
    assert abs(w.std().item() - (2 / 31) ** 0.5) < 0.02
    bound = (96 / (96 * 31)) ** 0.5
    assert block.depthwise.bias.abs().max() <= bound
    assert torch.equal(block.bn.weight, torch.ones(96))  # BatchNorm untouched
    torch.manual_seed(0)
    ast = Conformer(768, 96, kernel_size=31)
    torch.manual_seed(0)
    same = init_block(Conformer(768, 96, kernel_size=31), "reference_effective", family="ast")
    for (name, a), b in zip(ast.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # AST: PyTorch defaults kept


def test_zero_up_is_zero_at_init_with_live_down_projection():
    torch.manual_seed(0)
    block = init_block(Bottleneck(768, 96), "zero_up")
    assert torch.count_nonzero(block.up.weight) == 0 and torch.count_nonzero(block.up.bias) == 0
    assert abs(block.down.weight.std().item() - 0.02) < 0.001
    assert torch.count_nonzero(block(_x(d=768))) == 0
    assert blocks.zero_at_init("bottleneck", "zero_up")
    cp = init_block(Convpass(D, 4), "zero_up")
    assert torch.count_nonzero(cp.eval()(_x())) == 0
    assert not blocks.zero_at_init("conformer", "zero_up")
    assert torch.count_nonzero(init_block(Conformer(D, 4, kernel_size=3), "zero_up")(_x())) > 0


def test_written_zero_warns_and_is_degenerate():
    with pytest.warns(UserWarning, match="diagnostic"):
        block = init_block(Bottleneck(D, 4), "written_zero")
    assert all(torch.count_nonzero(p) == 0 for p in block.parameters())
    block(_x()).sum().backward()
    assert torch.count_nonzero(block.down.weight.grad) == 0  # R3: only b_up gets gradient
    assert torch.count_nonzero(block.up.weight.grad) == 0
    assert torch.count_nonzero(block.up.bias.grad) > 0


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid: bottleneck, conformer, convpass"):
        make_block("lstm", D, 4)
    with pytest.raises(ValueError, match="valid: reference_effective, zero_up, written_zero"):
        init_block(Bottleneck(D, 4), "xavier")
    with pytest.raises(ValueError, match="r=0"):
        make_block("bottleneck", D, 0)
