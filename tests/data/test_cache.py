"""Feature cache (memory-mapped fbanks / resampled waveforms) and the backbone-output cache."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from petl_kit.data import (
    AudioDataset,
    AudioError,
    Clip,
    DatasetSplits,
    FbankExtractor,
    FeatureStore,
    SpecAugment,
    WaveformExtractor,
    make_synthetic,
)
from petl_kit.training.probe_cache import cached_probe


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def files(tmp_path):
    """Six clips on disk: 44.1/22.05/16 kHz, mono and stereo, 16/24-bit, 0.05 to 0.6 s."""
    specs = [
        (44100, 1, "PCM_16", 0.3), (22050, 2, "PCM_24", 0.6), (16000, 1, "PCM_16", 0.05),
        (44100, 2, "PCM_16", 0.2), (16000, 1, "PCM_24", 0.4), (22050, 1, "PCM_16", 0.1),
    ]  # fmt: skip
    clips, rng = [], np.random.default_rng(0)
    for i, (sr, ch, subtype, sec) in enumerate(specs):
        data = 0.3 * rng.standard_normal((int(sr * sec), ch)).astype(np.float32)
        path = tmp_path / "audio" / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, data, sr, subtype=subtype)
        clips.append(Clip(path, i % 2))
    return clips


def _ds(clips, ex, **kw):
    return AudioDataset(clips, ex, num_classes=2, task="multiclass", **kw)


def test_cached_fbanks_equal_on_the_fly_ones_and_are_memory_mapped(files, cache_root):
    ex = FbankExtractor(max_length=40)
    plain, cached = _ds(files, ex), _ds(files, ex, cache=True, cache_name="mini")
    for i in range(len(files)):
        assert torch.equal(plain[i]["input_values"], cached[i]["input_values"])
        assert plain[i]["label"] == cached[i]["label"]
    data, _ = next(iter(cached.cache._arrays.values()))
    assert isinstance(data, np.memmap) and data.shape == (6, 40, 128)
    (folder,) = (cache_root / "features").iterdir()
    assert folder.name.startswith("mini-") and (folder / "store.json").is_file()
    assert (
        len(list(folder.glob("shard-*.npy"))) == 1 and len(list(folder.glob("shard-*.json"))) == 1
    )


def test_reused_across_datasets_and_subsets_without_recomputing(files, monkeypatch):
    ex = FbankExtractor(max_length=40)
    _ds(files[:4], ex, cache=True)
    monkeypatch.setattr(FeatureStore, "_build", lambda *a: pytest.fail("recomputed"))
    again = _ds(files[1:3], ex, cache=True)  # another split / fold of the same data
    assert torch.equal(again[0]["input_values"], _ds(files, ex)[1]["input_values"])
    with pytest.raises(BaseException, match="recomputed"):
        _ds(files, ex, cache=True)  # clips 4 and 5 are new: only they would be built


def test_only_new_clips_are_computed(files):
    ex = FbankExtractor(max_length=40)
    store = FeatureStore("mini", ex)
    store.locate(files[:4], progress=False)
    locs = store.locate(files, progress=False)
    assert len({stem for stem, _ in locs[:4]}) == 1 and locs[4][0] == locs[5][0] != locs[0][0]
    assert [row for _, row in locs[4:]] == [0, 1]


def test_any_feature_parameter_or_file_change_invalidates(files, cache_root):
    base = FbankExtractor(max_length=40)
    store = FeatureStore("mini", base)
    store.locate(files, progress=False)
    changed = [dict(max_length=41), dict(num_mel_bins=64), dict(mean=0.0), dict(sample_rate=8000)]
    for kw in changed:
        other = FbankExtractor(**{"max_length": 40, **kw})
        assert FeatureStore("mini", other).folder != store.folder
    assert FeatureStore("mini", base, channel=0).folder != store.folder
    assert FeatureStore("other", base).folder != store.folder
    assert FeatureStore("mini", base).folder == store.folder

    sf.write(files[2].source, np.full(1600, 0.5, np.float32), 16000)  # edit one file
    os.utime(files[2].source, ns=(1, 10**9))  # a different mtime, whatever the clock
    fresh = _ds(files, base, cache=True, cache_name="mini")
    assert torch.equal(fresh[2]["input_values"], _ds(files, base)[2]["input_values"])
    assert len(list(store.folder.glob("shard-*.npy"))) == 2  # one new shard, for one clip


def test_waveform_store_caches_the_resampled_wave_and_extracts_on_read(files):
    ex = WaveformExtractor(max_samples=4000)
    plain, cached = _ds(files, ex), _ds(files, ex, cache=True)
    for i in range(len(files)):
        for key in ("input_values", "attention_mask"):
            assert torch.equal(plain[i][key], cached[i][key])
    store = cached.cache
    assert store.read(cached._locations[1]).shape == (int(0.6 * 16000),)  # 22.05 kHz -> 16 kHz
    other = FeatureStore("dataset", WaveformExtractor(max_samples=100, normalize=False))
    assert other.folder == store.folder  # crop / normalise run on read: same store
    assert FeatureStore("dataset", WaveformExtractor(sample_rate=24000)).folder != store.folder


def test_specaugment_stays_on_the_fly(files):
    torch.manual_seed(0)
    ds = _ds(files, FbankExtractor(max_length=64), cache=True, augment=SpecAugment(20, 30))
    a, b = ds[1]["input_values"], ds[1]["input_values"]
    assert not torch.equal(a, b) and (a == 0).any()


def test_splits_loaders_read_the_cache_and_match_uncached_batches(files):
    s = DatasetSplits("mini", ["a", "b"], "multiclass", files[:4], files[4:], [], cache=True)
    ex = FbankExtractor(max_length=32)
    cached, plain = (
        s.loaders(ex, batch_size=3, seed=1),
        s.loaders(ex, batch_size=3, seed=1, cache=False),
    )
    assert cached["train"].dataset.cache is not None and plain["train"].dataset.cache is None
    for b1, b2 in zip(cached["train"], plain["train"], strict=True):
        assert torch.equal(b1["input_values"], b2["input_values"])
        assert torch.equal(b1["index"], b2["index"])


def test_corrupt_or_empty_file_fails_the_build_naming_it(files, tmp_path):
    files[3].source.write_bytes(b"RIFF garbage")
    with pytest.raises(AudioError, match="clip3.wav"):
        _ds(files, FbankExtractor(max_length=8), cache=True)
    sf.write(files[3].source, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="clip3.wav is empty"):
        _ds(files, FbankExtractor(max_length=8), cache=True)
    missing = Clip(tmp_path / "gone.wav", 0)
    with pytest.raises(AudioError, match="gone.wav"):
        _ds([missing], FbankExtractor(max_length=8), cache=True)


# ------------------------------------------------------------------ backbone-output cache
def _probe_setup(**model_kw):
    from petl_kit.backbones.registry import tiny_config
    from petl_kit.model.build import build_model

    s = make_synthetic(n_per_class=3, seed=0, clip_seconds=0.2, val_fraction=0.2, test_fraction=0.2)
    kw = dict(backbone="ast", backbone_config=tiny_config("ast", max_length=48),
              num_classes=s.num_classes, method="linear", seed=3)  # fmt: skip
    model = build_model(**{**kw, **model_kw})
    loaders = s.loaders(model.feature_extractor(), batch_size=4, seed=5)
    return s, model, loaders


def test_cached_linear_probe_trains_exactly_like_the_full_model():
    from petl_kit.config import build
    from petl_kit.training.train import TrainConfig, fit

    cfg = build(TrainConfig, {"epochs": 2, "progress": False, "device": "cpu"})
    _, full, loaders = _probe_setup()
    ref = fit(full, loaders, cfg)
    _, model, loaders = _probe_setup()
    probe, cached = cached_probe(model, loaders, device="cpu", progress=False)
    assert cached["train"].dataset[0]["input_values"].shape == (32,)  # tiny AST: D = 32
    got = fit(probe, cached, cfg)
    for name, p in full.trainable_state_dict().items():  # head + final LN, trained in place
        assert torch.allclose(p, model.trainable_state_dict()[name], atol=1e-5), name
    assert got.test["accuracy"] == ref.test["accuracy"]
    assert got.history[-1]["train_loss"] == pytest.approx(ref.history[-1]["train_loss"], abs=1e-5)
    assert got.best_epoch == ref.best_epoch


def test_backbone_outputs_are_stored_and_reused(cache_root, monkeypatch):
    _, model, loaders = _probe_setup()
    cached_probe(model, loaders, device="cpu", progress=False)
    files = list((cache_root / "backbone_outputs").glob("*.npy"))
    assert len(files) == 3  # train, val, test
    monkeypatch.setattr(model, "encode", lambda *a: pytest.fail("backbone ran again"))
    cached_probe(model, loaders, device="cpu", progress=False)
    with torch.no_grad():  # another backbone: another key
        model.backbone.embeddings.cls_token.add_(1.0)
    with pytest.raises(BaseException, match="backbone ran again"):
        cached_probe(model, loaders, device="cpu", progress=False)


def test_cached_probe_refuses_when_caching_would_change_training():
    s, model, _ = _probe_setup()
    aug = s.loaders(model.feature_extractor(), batch_size=4, spec_augment=SpecAugment(4, 4))
    with pytest.raises(ValueError, match="SpecAugment"):
        cached_probe(model, aug, device="cpu", progress=False)
    _, bitfit, loaders = _probe_setup(method="bitfit")
    with pytest.raises(ValueError, match="only the head and final norm"):
        cached_probe(bitfit, loaders, device="cpu", progress=False)
    cfg = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 64, "max_length": 48, "hidden_dropout_prob": 0.1}  # fmt: skip
    _, noisy, loaders = _probe_setup(backbone_config=cfg, profile="reference")
    with pytest.raises(ValueError, match="stochastic"):
        cached_probe(noisy, loaders, device="cpu", progress=False)
    _, layered, loaders = _probe_setup(layer_aggregation="weighted_sum")
    with pytest.raises(ValueError, match="reads every layer"):
        cached_probe(layered, loaders, device="cpu", progress=False)
    _, model, _ = _probe_setup()
    segmented = s.loaders(model.feature_extractor(), batch_size=4, train_crop=1600)
    with pytest.raises(ValueError, match="crops or segments"):
        cached_probe(model, segmented, device="cpu", progress=False)
