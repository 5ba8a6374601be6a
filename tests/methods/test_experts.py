"""Grouped experts (``petl_kit/methods/experts.py``) equal E separate ``blocks.*`` instances."""

import pytest
import torch

from petl_kit.methods import blocks, experts

D, R, E = 16, 4, 3
KINDS = [
    ("bottleneck", {}),
    ("bottleneck", {"act": "relu"}),
    ("convpass", {"convpass_conv": "used"}),
    ("convpass", {"convpass_conv": "unused"}),
    ("conformer", {"conformer_ln": "applied", "kernel_size": 3}),
    ("conformer", {"conformer_ln": "dead", "kernel_size": 4}),  # even kernel: asymmetric 'same'
]


def _parts(kind, opts, n=E, seed=0):
    """n separate blocks with random (non-zero) weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    act = opts.get("act", "gelu")
    rest = {k: v for k, v in opts.items() if k != "act"}
    parts = []
    for _ in range(n):
        block = blocks.make_block(kind, D, R, act=act, **rest)
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0, 0.3)
            if kind == "conformer":
                block.bn.running_mean.uniform_(-1, 1)
                block.bn.running_var.uniform_(0.5, 2)
        parts.append(block)
    return parts


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kind,opts", KINDS)
@pytest.mark.parametrize("train", [False, True])
def test_grouped_equals_separate_blocks(kind, opts, train):
    parts = _parts(kind, opts)
    grouped = experts.group_blocks(parts)
    for m in [*parts, grouped]:
        m.train(train)
        if isinstance(m, (blocks.Convpass, experts.GroupedConvpass)):
            m.p = 0.0  # dropout masks differ; everything else must match in train mode too
    x_each, x, gate = _x(2, E, 5, D), _x(2, 7, D, seed=2), torch.softmax(_x(2, 7, E, seed=3), -1)
    # per-expert inputs (Soft-MoA slots): out[:, i] = A_i(x[:, i])
    expected = torch.stack([b(x_each[:, i]) for i, b in enumerate(parts)], 1)
    assert torch.allclose(grouped(x_each), expected, atol=1e-5)
    # one shared input mixed by per-token gates (Dense-MoA): Σ_i gate_i A_i(x)
    expected = sum(gate[..., i : i + 1] * b(x) for i, b in enumerate(parts))
    assert torch.allclose(grouped.mix(x, gate), expected, atol=1e-5)
    if kind == "conformer":  # each BN channel saw the same batches: same running statistics
        for name in ("running_mean", "running_var"):
            stacked = torch.cat([getattr(b.bn, name) for b in parts])
            assert torch.allclose(getattr(grouped.bn, name), stacked, atol=1e-5)


@pytest.mark.parametrize("kind,opts", KINDS[:1] + KINDS[2:3] + KINDS[4:5])
def test_gradients_equal_separate_blocks(kind, opts):
    parts = _parts(kind, opts)
    grouped = experts.group_blocks(parts)
    for m in [*parts, grouped]:
        m.eval()
    x, gate = _x(2, 7, D), torch.softmax(_x(2, 7, E, seed=3), -1)
    sum(gate[..., i : i + 1] * b(x) for i, b in enumerate(parts)).pow(2).sum().backward()
    grouped.mix(x, gate).pow(2).sum().backward()
    separate = parts[0].up.weight if hasattr(parts[0], "up") else None
    assert grouped.up_weight.grad is not None
    if separate is not None:
        up = torch.stack([b.up.weight.grad for b in parts])
        assert torch.allclose(grouped.up_weight.grad, up, atol=1e-4)
    if hasattr(parts[0], "down"):
        down = torch.stack([b.down.weight.grad for b in parts])
        assert torch.allclose(grouped.down_weight.grad, down, atol=1e-4)


@pytest.mark.parametrize("kind", blocks.BLOCKS)
@pytest.mark.parametrize("init", ["reference_effective", "zero_up"])
def test_make_experts_counts_and_init(kind, init):
    torch.manual_seed(0)
    grouped = experts.make_experts(kind, 5, 768, 6, init=init, kernel_size=31)
    n = sum(p.numel() for p in grouped.parameters())
    assert (
        n
        == experts.num_params(kind, 5, 768, 6, 31)
        == 5 * blocks.num_params(kind, 768, 6, 3 if kind == "convpass" else 31)
    )
    zero = torch.count_nonzero(grouped.up_weight) == 0
    assert zero == blocks.zero_at_init(kind, init)
    if kind == "bottleneck" or init == "reference_effective" and kind == "convpass":
        assert abs(grouped.down_weight.std().item() - 0.02) < 1e-3  # trunc-normal(0, 0.02) (R2)
        assert torch.count_nonzero(grouped.down_bias) == 0


def test_no_loop_over_experts():
    """The number of torch calls of a forward does not grow with the number of experts."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    calls = {}
    for kind in blocks.BLOCKS:
        for n in (2, 7):
            grouped = experts.group_blocks(_parts(kind, {}, n=n)).eval()
            x, gate = _x(2, 5, D), torch.softmax(_x(2, 5, n), -1)
            with Count() as c:
                grouped.mix(x, gate)
                grouped(_x(2, n, 3, D))
            calls[kind, n] = c.n
        assert calls[kind, 2] == calls[kind, 7], calls


def test_mixed_kinds_are_refused():
    with pytest.raises(ValueError, match="one block kind"):
        experts.group_blocks(
            [blocks.make_block("bottleneck", D, R), blocks.make_block("convpass", D, R)]
        )
