"""Built-in generated audio: two small sound-event tasks, deterministic from a seed, pure numpy.

* ``target`` (12 classes) differ in spectro-temporal *structure* - steady tone, up/down chirp,
  harmonic complex, AM tone, FM vibrato, click train, low/high noise band, two-tone alternation,
  decaying pluck, rising noise sweep - under strong nuisances: pitch / centre frequency drawn from
  overlapping ranges, onset, duration, level, coloured background noise at -5..15 dB SNR and, in a
  quarter of the clips, a weak distracting tone. Up- and down-chirps share one frequency
  distribution, so time-averaged spectra cannot tell them apart: a linear probe on pooled features
  leaves headroom for fine-tuning.
* ``source`` (16 classes) = which of 8 log-spaced bands carries the event x steady vs pulsed
  (carrier: tone or narrow-band noise). Used to pre-train a tiny AST so the quickstart is real
  transfer: it teaches frequency localisation and temporal modulation, not the target labels.

Every clip draws from its own ``np.random.default_rng([seed, task, class, index])``, so audio is
bit-identical for equal arguments and clip i of a class does not depend on ``n_per_class``.
"""

from __future__ import annotations

import numpy as np

from .base import Clip, DatasetSplits, stratified_split
from .folders import write_audiofolder

__all__ = [
    "make_synthetic",
    "write_audiofolder",
    "SYNTHETIC_TASKS",
    "TARGET_CLASSES",
    "SOURCE_CLASSES",
]

TARGET_CLASSES = [
    "tone",
    "up_chirp",
    "down_chirp",
    "harmonic",
    "am_tone",
    "vibrato",
    "clicks",
    "low_noise",
    "high_noise",
    "two_tone",
    "pluck",
    "noise_sweep",
]
N_BANDS = 8
SOURCE_CLASSES = [f"band{b}_{kind}" for b in range(N_BANDS) for kind in ("steady", "pulsed")]
SYNTHETIC_TASKS = {"target": TARGET_CLASSES, "source": SOURCE_CLASSES}
_TASK_CODE = {"target": 1, "source": 2}


class _Gen:
    """Signal builders sharing one rng and sample rate; every event comes out with unit RMS."""

    def __init__(self, rng: np.random.Generator, sr: int):
        self.rng, self.sr = rng, sr
        self.f_hi = min(4000.0, 0.45 * sr)  # tonal ceiling; stays below Nyquist at low rates

    def logu(self, lo: float, hi: float) -> float:
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(max(hi, lo * 1.01)))))

    def sweep(self, freq: np.ndarray) -> np.ndarray:
        """Sinusoid following the instantaneous frequency ``freq`` [m] (Hz), continuous phase."""
        phase = 2 * np.pi * np.cumsum(freq) / self.sr + self.rng.uniform(0, 2 * np.pi)
        return np.sin(phase)

    def harmonics(self, f0: float, m: int, decay: np.ndarray | None = None) -> np.ndarray:
        t = np.arange(m) / self.sr
        k_max = max(2, min(int(self.rng.integers(3, 10)), int(self.f_hi / f0)))
        tilt = self.rng.uniform(0.5, 1.5)
        out = np.zeros(m)
        for k in range(1, k_max + 1):
            part = k**-tilt * np.sin(2 * np.pi * k * f0 * t + self.rng.uniform(0, 2 * np.pi))
            if decay is not None:  # higher partials die faster, as on a plucked string
                part *= np.exp(-t / (decay / np.sqrt(k)))
            out += part
        return out

    def band_noise(self, m: int, centre: float, octaves: float) -> np.ndarray:
        """White noise shaped by a Gaussian bump in log-frequency (``octaves`` ~ 2 sigma)."""
        spec = np.fft.rfft(self.rng.standard_normal(m))
        f = np.maximum(np.fft.rfftfreq(m, 1 / self.sr), 1.0)
        spec *= np.exp(-0.5 * (np.log2(f / centre) / (octaves / 2)) ** 2)
        return np.fft.irfft(spec, m)

    def coloured_noise(self, n: int) -> np.ndarray:
        """Background: power ~ 1/f^alpha, alpha in [0, 2] (white .. brown)."""
        spec = np.fft.rfft(self.rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / self.sr), 20.0)
        spec *= f ** (-self.rng.uniform(0.0, 2.0) / 2)
        return np.fft.irfft(spec, n)

    def noise_sweep(self, m: int, c0: float, ratio: float, octaves: float) -> np.ndarray:
        # Many random-phase partials scattered around a rising centre sound like swept band noise.
        centre = c0 * ratio ** (np.arange(m) / m)
        out = np.zeros(m)
        for off in self.rng.normal(0.0, octaves / 2, size=40):
            out += self.sweep(np.minimum(centre * 2.0**off, 0.45 * self.sr))
        return out

    def fade(self, x: np.ndarray, ms: float) -> np.ndarray:
        k = min(int(ms * self.sr / 1000), len(x) // 2)
        if k > 1:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
            x[:k] *= ramp
            x[-k:] *= ramp[::-1]
        return x


def _target_event(g: _Gen, cls: str, m: int) -> np.ndarray:
    rng, sr, t = g.rng, g.sr, np.arange(m) / g.sr
    if cls == "tone":
        return g.sweep(np.full(m, g.logu(150, g.f_hi)))
    if cls in ("up_chirp", "down_chirp"):
        ratio = rng.uniform(1.4, 3.0)
        track = g.logu(150, g.f_hi / ratio) * ratio ** (np.arange(m) / m)
        return g.sweep(track if cls == "up_chirp" else track[::-1])
    if cls == "harmonic":
        return g.harmonics(g.logu(100, 500), m)
    if cls == "am_tone":
        env = 1 - rng.uniform(0.6, 1.0) * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(4, 14) * t))
        return env * g.sweep(np.full(m, g.logu(150, g.f_hi)))
    if cls == "vibrato":
        f0 = g.logu(200, g.f_hi / 1.1)
        depth, rate = rng.uniform(0.02, 0.06), rng.uniform(4, 9)
        return g.sweep(f0 * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))))
    if cls == "clicks":
        out, period = np.zeros(m), sr / rng.uniform(6, 30)
        click = np.exp(-np.arange(int(0.006 * sr)) / (rng.uniform(0.001, 0.004) * sr))
        pos = rng.uniform(0, period)
        while pos < m:
            i = int(pos)
            seg = min(len(click), m - i)
            out[i : i + seg] += rng.standard_normal(seg) * click[:seg]
            pos += period * rng.uniform(0.9, 1.1)
        return out
    if cls == "low_noise":
        return g.band_noise(m, g.logu(150, 1200), rng.uniform(0.5, 1.5))
    if cls == "high_noise":
        return g.band_noise(m, g.logu(1500, min(6000, 0.4 * sr)), rng.uniform(0.5, 1.5))
    if cls == "two_tone":
        ratio = rng.uniform(1.15, 1.8)
        f1, seg = g.logu(150, g.f_hi / ratio), int(rng.uniform(0.06, 0.2) * sr)
        which = (np.arange(m) // seg) % 2
        return g.sweep(np.where(which == 0, f1, f1 * ratio))
    if cls == "pluck":
        return g.harmonics(g.logu(100, 800), m, decay=rng.uniform(0.04, 0.2))
    if cls == "noise_sweep":
        return g.noise_sweep(m, g.logu(200, 1500), rng.uniform(2.0, 4.0), rng.uniform(0.3, 0.6))
    raise AssertionError(cls)


def _source_event(g: _Gen, label: int, m: int) -> np.ndarray:
    band, pulsed = divmod(label, 2)
    edges = np.geomspace(100, min(7000, 0.45 * g.sr), N_BANDS + 1)
    lo, hi = edges[band], edges[band + 1]
    width = np.log2(hi / lo)
    # Keep the carrier well inside its band so the band label is unambiguous.
    centre = g.logu(lo * 2 ** (0.25 * width), hi / 2 ** (0.25 * width))
    if g.rng.random() < 0.5:
        x = g.sweep(np.full(m, centre))
    else:
        x = g.band_noise(m, centre, g.rng.uniform(0.2, 0.5) * width)
    if pulsed:
        period = g.sr / g.rng.uniform(3, 10)
        on = (np.arange(m) % period) < g.rng.uniform(0.3, 0.6) * period
        k = max(1, int(0.005 * g.sr))  # 5 ms smoothing: gating without broadband clicks
        x = x * np.convolve(on.astype(float), np.ones(k) / k, mode="same")
    return x


def _clip(task: str, label: int, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    g = _Gen(rng, sr)
    lo_dur = 0.5 if task == "source" else 0.35
    m = max(int(rng.uniform(lo_dur, 0.9) * n), 8)
    if task == "target":
        event = _target_event(g, TARGET_CLASSES[label], m)
        if TARGET_CLASSES[label] not in ("clicks", "pluck"):  # those keep their sharp attacks
            event = g.fade(event, rng.uniform(5, 30))
    else:
        event = g.fade(_source_event(g, label, m), 10)
    event /= np.sqrt(np.mean(event**2)) + 1e-12

    onset = int(rng.integers(0, n - m + 1))
    out = np.zeros(n)
    out[onset : onset + m] = event
    bg = g.coloured_noise(n)
    snr_db = rng.uniform(-5, 15) if task == "target" else rng.uniform(0, 20)
    out += bg / np.sqrt(np.mean(bg**2)) * 10 ** (-snr_db / 20)
    if task == "target" and rng.random() < 0.25:
        dm = int(rng.uniform(0.2, 0.8) * n)
        start = int(rng.integers(0, n - dm + 1))
        distractor = g.fade(g.sweep(np.full(dm, g.logu(150, g.f_hi))), 10)
        out[start : start + dm] += distractor * np.sqrt(2) * 10 ** (-rng.uniform(6, 15) / 20)

    out *= 10 ** (rng.uniform(-30, -12) / 20)
    peak = np.max(np.abs(out))
    if peak > 0.99:  # rare; keeps every clip writable as PCM without clipping
        out *= 0.99 / peak
    return out.astype(np.float32)


def make_synthetic(
    task: str = "target",
    *,
    n_per_class: int = 40,
    seed: int = 0,
    clip_seconds: float = 1.0,
    sample_rate: int = 16000,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Generate a synthetic sound-event dataset in memory.

    Args (defaults):
        task: "target" (12 classes) or "source" (16 classes) ("target").
        n_per_class: clips per class before splitting (40).
        seed: non-negative int; same arguments give bit-identical audio (0).
        clip_seconds: clip length (1.0). sample_rate: Hz (16000).
        val_fraction, test_fraction: stratified per class, seeded by ``seed`` (0.2, 0.2).

    Returns:
        DatasetSplits, task "multiclass", clips are float32 ``[clip_seconds * sample_rate]`` arrays
        with ``meta = {"id", "index"}``.
    """
    if task not in SYNTHETIC_TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; valid: {sorted(SYNTHETIC_TASKS)}")
    for name, value in (("n_per_class", n_per_class), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"make_synthetic: {name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"make_synthetic: seed must be a non-negative integer, got {seed!r}")
    n = int(round(clip_seconds * sample_rate))
    if n < 400:
        raise ValueError(
            f"make_synthetic: clip_seconds={clip_seconds} gives {n} samples; need >= 400"
        )

    classes = SYNTHETIC_TASKS[task]
    clips, labels = [], []
    for label, name in enumerate(classes):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, _TASK_CODE[task], label, i])
            wave = _clip(task, label, rng, n, sample_rate)
            clips.append(Clip(wave, label, sample_rate, {"id": f"{name}_{i:04d}", "index": i}))
            labels.append(label)
    train, val, test = stratified_split(labels, val_fraction, test_fraction, seed)
    return DatasetSplits(
        name=f"synthetic-{task}",
        classes=list(classes),
        task="multiclass",
        train=[clips[i] for i in train],
        val=[clips[i] for i in val],
        test=[clips[i] for i in test],
        sample_rate=sample_rate,
        info={
            "loader": "synthetic",
            "task": task,
            "n_per_class": n_per_class,
            "seed": seed,
            "clip_seconds": clip_seconds,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        },
    )
