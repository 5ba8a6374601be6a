"""Synthetic music sets: exact labels (chroma follows the key, beats follow the BPM, tags follow the
instruments), determinism, sizes, and the ``load_dataset`` names."""

from collections import Counter

import numpy as np
import pytest

import petl_kit as pk
from petl_kit.data.music.synthetic import (
    KEY_CLASSES,
    TAG_CLASSES,
    TEMPO_BINS,
    _instrument,
    _Synth,
    key_scale,
    make_synthetic_music,
)

SR = 24000
# Krumhansl-Kessler key profiles (C major / C minor), the classic template key finder
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def clips(ds):
    return ds.train + ds.val + ds.test


def chroma(x: np.ndarray) -> np.ndarray:
    """Energy per pitch class (C = 0) of the whole clip's spectrum, 30 Hz - 5 kHz."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    ok = (f > 30) & (f < 5000)
    pc = np.round(12 * np.log2(f[ok] / 440) + 69).astype(int) % 12
    return np.bincount(pc, weights=spec[ok], minlength=12)


@pytest.fixture(scope="module")
def keys():
    return make_synthetic_music("key", n_per_class=2, seed=3)


def test_key_labels_follow_the_giantsteps_index(keys):
    assert keys.classes == list(KEY_CLASSES) and len(KEY_CLASSES) == 24 and keys.task == "key"
    assert KEY_CLASSES[0] == "C major" and KEY_CLASSES[12 + 9] == "A minor"
    assert key_scale(0) == [0, 2, 4, 5, 7, 9, 11] and key_scale(12 + 9) == [9, 11, 0, 2, 4, 5, 7]
    for c in clips(keys):
        assert c.label == c.meta["tonic"] + 12 * c.meta["mode"]
        assert {m % 12 for m in c.meta["notes"]} <= set(key_scale(c.label))  # only scale notes


def test_key_chroma_peaks_on_the_scale_and_a_key_finder_recovers_it(keys):
    found = 0
    for c in clips(keys):
        ch = chroma(c.source)
        scale = key_scale(c.label)
        assert ch[scale].sum() / ch.sum() > 0.9, c.meta["id"]  # energy sits on the key's scale
        assert int(np.argmax(ch)) in scale
        scores = [np.corrcoef(ch, np.roll(p, t))[0, 1] for p in (KK_MAJOR, KK_MINOR)
                  for t in range(12)]  # fmt: skip
        found += int(np.argmax(scores)) == c.label
    # relative keys share every note: only the tonal centre (tonic chords, bass) tells them apart
    assert found / len(clips(keys)) >= 0.85


def test_tempo_beats_are_exactly_60_over_bpm_and_audible():
    ds = make_synthetic_music("tempo", n_per_class=1, seed=1, bpm_range=(60, 180), bpm_step=20)
    assert ds.classes[120] == "120" and len(ds.classes) == TEMPO_BINS and ds.task == "tempo"
    assert sorted(c.label for c in clips(ds)) == list(range(60, 181, 20))
    w = int(0.02 * SR)
    for c in clips(ds):
        beats = np.array(c.meta["beats"])
        assert c.meta["bpm"] == c.label and len(beats) >= 3
        np.testing.assert_allclose(np.diff(beats), 60.0 / c.label, rtol=0, atol=1e-9)
        x = c.source.astype(np.float64)
        for b in beats:  # an onset on every beat: much louder just after it than just before
            i = int(round(b * SR))
            if w <= i <= len(x) - w:
                assert np.mean(x[i : i + w] ** 2) > 4 * np.mean(x[i - w : i] ** 2)
        # the onset envelope repeats with the beat period
        env = np.maximum(np.diff(np.abs(x).reshape(-1, 240).mean(1)), 0)  # 100 frames/s
        ac = np.correlate(env, env, "full")[len(env) - 1 :]
        lag = 6000 / c.label  # frames per beat
        lo, hi = int(0.7 * lag), int(1.3 * lag) + 1
        assert abs(lo + int(np.argmax(ac[lo:hi])) - lag) <= 1.5


def test_tags_are_multilabel_and_each_instrument_sounds_like_itself():
    ds = make_synthetic_music("tags", n_per_class=3, seed=0)
    assert ds.task == "multilabel" and ds.classes == TAG_CLASSES
    for c in clips(ds):
        assert c.label == c.meta["tags"] == sorted(set(c.label)) and 1 <= len(c.label) <= 3
    # every tag is present (as primary tag n_per_class times, more as a companion)
    counts = Counter(t for c in clips(ds) for t in c.label)
    assert all(counts[t] >= 3 for t in range(len(TAG_CLASSES)))
    assert any(len(c.label) > 1 for c in clips(ds))


def test_instruments_differ_in_register():
    """Bass plays low, flute high: spectral centroids of solo parts, several draws each."""

    def centroid(tag, i):
        x = _instrument(_Synth(np.random.default_rng(i), SR), tag, SR, key_scale(0))
        spec, f = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(SR, 1 / SR)
        return float((spec * f).sum() / spec.sum())

    for i in range(3):
        assert centroid("bass", i) < 400 < 500 < centroid("flute", i)


def test_deterministic_and_independent_of_size():
    a = make_synthetic_music("key", n_per_class=2, seed=5)
    b = make_synthetic_music("key", n_per_class=2, seed=5)
    for x, y in zip(clips(a), clips(b), strict=True):
        assert x.source.dtype == np.float32 and np.array_equal(x.source, y.source)
        assert x.meta == y.meta and len(x.source) == 2 * SR
    big = {
        c.meta["id"]: c.source for c in clips(make_synthetic_music("key", n_per_class=3, seed=5))
    }
    assert all(np.array_equal(big[c.meta["id"]], c.source) for c in clips(a))
    other = make_synthetic_music("key", n_per_class=2, seed=6)
    assert not np.array_equal(a.train[0].source, other.train[0].source)
    assert max(np.abs(c.source).max() for c in clips(a)) <= 0.99


def test_sizes_splits_and_registered_names():
    ds = pk.load_dataset("synthetic_key", n_per_class=5, seed=0)
    assert ds.sizes() == {"train": 72, "val": 24, "test": 24} and ds.sample_rate == SR
    assert ds.info["loader"] == "synthetic_music"
    tempo = pk.load_dataset("synthetic_tempo", n_per_class=1, bpm_range=(100, 120), bpm_step=10)
    assert len(clips(tempo)) == 3 and len(tempo.train[0].source) == 4 * SR
    chords = make_synthetic_music("chords", n_per_class=1)
    assert chords.num_classes == 24 and chords.classes[13] == "Db:min"
    assert {"synthetic_key", "synthetic_tempo", "synthetic_tags"} <= set(pk.data.list_datasets())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "chord"}, "valid: \\['key', 'tempo', 'tags', 'chords'\\]"),
        ({"n_per_class": 0}, "n_per_class must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"bpm_range": (20, 400)}, "bpm_range"),
        ({"clip_seconds": 0.1}, "shorter than 0.5 s"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_music(**kwargs)
    with pytest.raises(TypeError, match="valid options"):
        pk.load_dataset("synthetic_key", n_clips=3)
    with pytest.raises(ValueError, match="takes no data_path"):
        pk.load_dataset("synthetic_tags", "somewhere")
