"""Token-mixing methods on padded frame batches: under the corrected profile a clip's output does
not depend on what it was batched with (padded frames never enter Soft-MoA's dispatch softmax,
and the conformer and Convpass convolutions read them as zeros)."""

import pytest
import torch

import petl_kit as pk
from petl_kit.methods import padding
from petl_kit.methods.soft_moa import SoftMoA

# feat_extract_norm 'layer': per-frame normalisation in the conv encoder ('group' normalises each
# channel over the whole padded time axis, which no method can undo)
TINY = {**pk.tiny_config("wav2vec2"), "feat_extract_norm": "layer", "conv_bias": True}


def _model(profile, method="soft_moa", config=None, **kw):
    config = config or {"reduction_rate": 8, "num_adapters": 2}
    return pk.build_model(
        "wav2vec2", backbone_config=TINY, num_classes=4, method=method, method_config=config,
        profile=profile, seed=0, **kw,
    ).eval()  # fmt: skip


def _alone_and_batched():
    g = torch.Generator().manual_seed(0)
    short, long = torch.randn(3000, generator=g), torch.randn(5200, generator=g)
    batch = torch.zeros(2, 5200)
    batch[0, :3000], batch[1] = short, long
    mask = torch.ones(2, 5200, dtype=torch.long)
    mask[0, 3000:] = 0
    return (short[None], torch.ones(1, 3000, dtype=torch.long)), (batch, mask)


CASES = {
    "soft_moa": ("soft_moa", None),
    "dense_moa": ("dense_moa", None),
    "soft_moa_conformer": ("soft_moa", {"reduction_rate": 8, "num_adapters": 2,
                                        "expert": "conformer"}),
    "dense_moa_conformer": ("dense_moa", {"reduction_rate": 8, "num_adapters": 2,
                                          "expert": "conformer"}),
    "dense_moa_convpass": ("dense_moa", {"reduction_rate": 8, "num_adapters": 2,
                                         "expert": "convpass"}),
    "adapter_conformer": ("adapter", {"reduction_rate": 8, "adapter_block": "conformer",
                                      "kernel_size": 7}),
    "adapter_convpass": ("adapter", {"reduction_rate": 8, "adapter_block": "convpass"}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_clip_alone_equals_the_clip_in_a_padded_batch(case):
    method, config = CASES[case]
    model = _model("corrected", method, config)
    (x1, m1), (xb, mb) = _alone_and_batched()
    with torch.no_grad():
        alone, batched = model(x1, m1)[0], model(xb, mb)[0]
    assert torch.allclose(alone, batched, atol=1e-5), (alone - batched).abs().max()


def test_padded_frames_get_no_dispatch_weight():
    model = _model("corrected")
    moa = next(m for m in model.modules() if isinstance(m, SoftMoA))
    seen = {}
    moa.recorder = type("R", (), {"record": lambda self, m, **k: seen.update(k)})()
    (_, _), (xb, mb) = _alone_and_batched()
    with torch.no_grad():
        model(xb, mb)
    frames = model._mask_frames(xb, mb)
    dispatch = seen["dispatch"]  # [b, n, e, s]
    assert torch.all(dispatch[0][~frames[0]] == 0)
    assert torch.allclose(dispatch[0].sum(0), torch.ones_like(dispatch[0].sum(0)))


def test_reference_profile_reads_padded_frames_as_the_reference():
    model = _model("reference")
    (x1, m1), (xb, mb) = _alone_and_batched()
    with torch.no_grad():
        alone, batched = model(x1, m1)[0], model(xb, mb)[0]
    assert not torch.allclose(alone, batched, atol=1e-5)


def test_the_mask_is_only_active_during_a_forward_and_checked():
    assert padding.current() is None
    with padding.valid_frames(torch.ones(2, 5, dtype=torch.bool)):
        assert padding.current().shape == (2, 5)
        with pytest.raises(ValueError, match="Soft-MoA.*\\(2, 5\\).*\\(2, 7\\)"):
            padding.token_mask(torch.zeros(2, 7, 3), "Soft-MoA")
    assert padding.current() is None
