"""Soft-MoA (spec ``methods.md`` §9, quirks R13, R14; counts ``reference_numbers.md`` §3).

Placement, trainable set, identity at init and R13 are tested with Dense-MoA
(``test_dense_moa.py``, parametrised over both methods).
"""

import math

import pytest
import torch

import petl_kit as pk
from petl_kit.analysis.routing import RoutingRecorder
from petl_kit.methods import blocks
from petl_kit.methods.experts import group_blocks
from petl_kit.methods.soft_moa import SoftMoA
from tests.methods.conftest import HEAD_31
from tests.methods.conftest import meta_counts as _counts

# ------------------------------------------------------------------ exact counts
# §3.3: printed − head, RR 128 (r = 6), bottleneck experts, normalize off; MHSA = FFN
SOFT_ROWS = [
    (2, 278_160, 296_592, 554_784, 591_648),
    (7, 923_640, 988_152, 1_845_744, 1_974_768),
    (15, 1_956_408, 2_094_648, 3_911_280, 4_187_760),
]


@pytest.mark.parametrize("n,pf1,pf2,ho1,ho2", SOFT_ROWS)
@pytest.mark.parametrize("location", ["MHSA", "FFN"])
def test_soft_counts(n, pf1, pf2, ho1, ho2, location):
    for kind, slots, expected in (
        ("Pfeiffer", 1, pf1),
        ("Pfeiffer", 2, pf2),
        ("Houlsby", 1, ho1),
        ("Houlsby", 2, ho2),
    ):
        cfg = dict(num_adapters=n, num_slots=slots, adapter_type=kind, location=location)
        c = _counts("soft_moa", **cfg)
        assert c["trainable"] - HEAD_31 == expected
        sites = 2 if kind == "Houlsby" else 1
        assert c["groups"]["router"] == 12 * sites * 768 * n * slots  # Φ
        # normalize: + one scale per mixture (+12 Pfeiffer / +24 Houlsby)
        if n == 7:
            c = _counts("soft_moa", normalize=True, **cfg)
            assert c["trainable"] - HEAD_31 == expected + 12 * sites


def test_fsc_printed_and_convpass_counts():  # §3.1 and §3.3 (dead conv parameters counted)
    assert _counts("soft_moa")["trainable"] == 947_479
    assert _counts("soft_moa", expert="convpass")["trainable"] - HEAD_31 == 933_216
    assert _counts("soft_moa", expert="convpass", profile="corrected")["trainable"] == 933_216 + (
        HEAD_31
    )


ESC_SOFT = [  # §3.4: ESC-50, L = 500, C = 50, p = 1
    ("Pfeiffer", 2, 316_610, 86_004_674),
    ("Pfeiffer", 7, 962_090, 86_650_154),
    ("Pfeiffer", 15, 1_994_858, 87_682_922),
    ("Houlsby", 2, 593_234, 86_262_866),
    ("Houlsby", 7, 1_884_194, 87_553_826),
    ("Houlsby", 15, 3_949_730, 89_619_362),
]


@pytest.mark.parametrize("kind,n,printed,total", ESC_SOFT)
@pytest.mark.parametrize("location", ["MHSA", "FFN"])
def test_esc50_counts(kind, n, printed, total, location):
    c = _counts(
        "soft_moa",
        max_length=500,
        num_classes=50,
        adapter_type=kind,
        location=location,
        num_adapters=n,
    )
    assert (c["trainable"], c["total"]) == (printed, total)


# ------------------------------------------------------------------ the maths of §9
D = 16


def _soft(n=3, s=2, seed=0, kind="bottleneck", **kw):
    torch.manual_seed(seed)
    parts = [
        blocks.init_block(blocks.make_block(kind, D, 4, kernel_size=3), "reference_effective")
        for _ in range(n)
    ]
    with torch.no_grad():  # non-zero output biases, so a wrong combine cannot hide
        for p in parts:
            (p.up if hasattr(p, "up") else p.pointwise_out).bias.normal_()
    return SoftMoA(group_blocks(parts), dim=D, num_slots=s, **kw).eval(), parts


def _x(b=2, m=13, seed=1):
    return torch.randn(b, m, D, generator=torch.Generator().manual_seed(seed))


def test_dispatch_sums_to_one_over_tokens_and_combine_over_all_slots():
    moa, _ = _soft(n=4, s=3)
    moa.site = (0, "MHSA")
    with RoutingRecorder(moa) as rec:  # a bare mixture works as well as a model
        moa(_x())
    d, c = rec.get("dispatch", 0), rec.get("combine", 0)
    assert d.shape == c.shape == (2, 13, 4, 3)
    assert torch.allclose(d.sum(1), torch.ones(2, 4, 3), atol=1e-6)  # each slot: over tokens
    assert torch.allclose(c.sum((2, 3)), torch.ones(2, 13), atol=1e-6)  # each token: over slots
    assert (d > 0).all() and (c > 0).all()


def test_one_expert_one_slot():
    """n = p = 1: the one slot is the softmax(x·φ)-weighted mean of the tokens, every token's
    combine weight is 1, so every token gets A(slot)."""
    moa, (block,) = _soft(n=1, s=1)
    x = _x()
    with torch.no_grad():
        w = torch.softmax(x @ moa.router_phi[:, 0, 0], dim=1)  # [b, m] over tokens
        slot = (w[..., None] * x).sum(1)  # [b, d]
        expected = block(slot[:, None, :]).expand(-1, x.shape[1], -1)
        assert torch.allclose(moa(x), expected, atol=1e-6)


def _reference_loop(moa, parts, x, axis):
    """§9 step by step with one loop over experts and slots (the published code's layout)."""
    phi = moa.router_phi
    if moa.normalize:
        x = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        dim = {"d": 0, "n": 1}[axis]
        phi = moa.router_scale * phi / (phi.norm(dim=dim, keepdim=True) + 1e-6)
    logits = torch.einsum("bmd,dnp->bmnp", x, phi)
    dispatch = torch.softmax(logits, dim=1)
    b, m, n, p = logits.shape
    combine = torch.softmax(logits.reshape(b, m, n * p), dim=-1).reshape(b, m, n, p)
    y = torch.zeros_like(x)
    for i in range(n):
        slots = torch.einsum("bmp,bmd->bpd", dispatch[:, :, i], x)  # [b, p, d]
        out = parts[i](slots)
        y = y + torch.einsum("bmp,bpd->bmd", combine[:, :, i], out)
    return y


@pytest.mark.parametrize("kind", blocks.BLOCKS)
@pytest.mark.parametrize("normalize,axis", [(False, "d"), (True, "d"), (True, "n")])
def test_soft_moa_equals_the_step_by_step_maths(kind, normalize, axis):
    moa, parts = _soft(n=3, s=2, kind=kind, normalize=normalize, phi_norm_axis=axis)
    for p in parts:
        p.eval()
    if normalize:
        with torch.no_grad():
            moa.router_scale.fill_(3.0)
    x = _x()
    with torch.no_grad():
        assert torch.allclose(moa(x), _reference_loop(moa, parts, x, axis), atol=1e-5)


def test_normalisation_axis_matters_and_follows_the_profile():  # R14
    x = _x()
    outs = {}
    for axis in ("n", "d"):
        moa, _ = _soft(n=3, s=2, normalize=True, phi_norm_axis=axis)
        with torch.no_grad():
            outs[axis] = moa(x)
    assert not torch.allclose(outs["n"], outs["d"], atol=1e-4)
    assert pk.make_config("Soft-MoA", {}, "reference").soft_moa_phi_norm_axis == "n"
    assert pk.make_config("soft_moa", {}, "corrected").soft_moa_phi_norm_axis == "d"
    assert pk.make_config("soft_moa", {}, "reference").normalize is False  # the CLI default


def test_phi_xavier_normal_init():  # §9: std = √(2 / (n·p + d·p)), 0.0508 for n = 7, p = 1, d = 768
    torch.manual_seed(0)
    for n, p in ((7, 1), (15, 2)):
        moa = SoftMoA(
            group_blocks([blocks.make_block("bottleneck", 768, 2)] * n), dim=768, num_slots=p
        )
        expected = math.sqrt(2 / (n * p + 768 * p))
        assert abs(moa.router_phi.std().item() - expected) / expected < 0.05
    assert round(math.sqrt(2 / (7 + 768)), 4) == 0.0508


def test_config_errors():
    with pytest.raises(pk.ConfigError, match="num_slots = 0"):
        pk.make_config("soft_moa", {"num_slots": 0})
    with pytest.raises(pk.ConfigError, match="soft_moa_phi_norm_axis = 'e'"):
        pk.make_config("soft_moa", {"soft_moa_phi_norm_axis": "e"})
    with pytest.raises(pk.ConfigError, match="normalize = 'False'.*expected bool"):
        pk.make_config("soft_moa", {"normalize": "False"})  # R16 cannot happen here
