"""Built-in generated music: key, tempo and tagging tasks with exact labels; 24 kHz mono, numpy.

* ``key`` (task ``"key"``, 24 classes ``music_tasks.KEY_CLASSES``: index = pitch_class + 12 *
  mode, C = 0, major 0-11, minor 12-23, as GiantSteps in the music reference): a chord
  progression that starts and ends on the tonic triad, a bass on the chord roots and, in most
  clips, a scale run or a diatonic melody from the tonic, all from the key's scale (natural
  minor, so relative keys share their notes and only the tonal centre tells them apart). Timbre
  (partials, spectral tilt, envelope) and register vary.
* ``tempo`` (task ``"tempo"``: integer BPM labels over the 300 one-BPM bins of the reference's
  tempo head, ``music_tasks.TEMPO_CLASSES``): drum
  patterns with an onset on every beat (four-on-the-floor kick, or kick/snare backbeat), hi-hats
  on eighths or sixteenths, a random phase and a little pitched accompaniment. Beat times are in
  ``meta['beats']``; their spacing is exactly 60 / BPM.
* ``tags`` (multi-label, :data:`TAG_CLASSES`): one to three synthetic instruments (drums, bass,
  piano, strings, organ, flute, guitar, voice) play in one key; the label is the set present.
* ``chords`` (24 classes: root x major/minor triad, any inversion and register): the SOURCE task
  the built-in ``tiny-mert`` is pre-trained on. It teaches pitch-class features without the key
  task's labels (which need a progression's tonal centre).

Every clip draws from its own ``np.random.default_rng([seed, task, class, index])``, so audio is
bit-identical for equal arguments and clip i of a class does not depend on ``n_per_class``.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..base import Clip, DatasetSplits, stratified_split
from .labels import KEY_CLASSES, PITCH_CLASSES, TEMPO_BINS, TEMPO_CLASSES

__all__ = [
    "make_synthetic_music",
    "music_loaders",
    "MUSIC_TASKS",
    "KEY_CLASSES",
    "TAG_CLASSES",
    "key_scale",
]

CHORD_CLASSES = [f"{p}:maj" for p in PITCH_CLASSES] + [f"{p}:min" for p in PITCH_CLASSES]
TAG_CLASSES = ["drums", "bass", "piano", "strings", "organ", "flute", "guitar", "voice"]
SCALES = {0: (0, 2, 4, 5, 7, 9, 11), 1: (0, 2, 3, 5, 7, 8, 10)}  # major, natural minor
MUSIC_TASKS = ("key", "tempo", "tags", "chords")
_TASK_CODE = {"key": 11, "tempo": 12, "tags": 13, "chords": 14}
SAMPLE_RATE = 24000


def key_scale(label: int) -> list[int]:
    """Pitch classes of key ``label`` (pitch_class + 12 * mode), tonic first."""
    tonic, mode = label % 12, label // 12
    return [(tonic + s) % 12 for s in SCALES[mode]]


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


class _Synth:
    """Note and drum builders on one rng; ``sr`` Hz. A timbre is a dict drawn once per part."""

    def __init__(self, rng: np.random.Generator, sr: int):
        self.rng, self.sr = rng, sr

    def timbre(self, kind: str | None = None) -> dict:
        r = self.rng
        kind = kind or str(r.choice(["organ", "pluck", "pad", "keys"]))
        # tilt >= 1 keeps upper partials weak, so the chroma follows the played notes
        return {"kind": kind, "partials": int(r.integers(1, 9)), "tilt": r.uniform(1.0, 2.2),
                "decay": r.uniform(0.15, 0.8), "vibrato": r.uniform(0, 0.004)}  # fmt: skip

    def envelope(self, kind: str, m: int, decay: float) -> np.ndarray:
        t = np.arange(m) / self.sr
        attack = {"pad": 0.08, "organ": 0.01, "pluck": 0.003, "keys": 0.005}.get(kind, 0.01)
        env = np.minimum(1.0, t / attack)
        if kind in ("pluck", "keys"):
            env = env * np.exp(-t / decay) * (1.0 if kind == "pluck" else 0.7) + (
                0.0 if kind == "pluck" else 0.3 * np.minimum(1.0, t / attack)
            )
        release = min(m // 4, int(0.02 * self.sr))  # no click at the note's end
        if release > 1:
            env[-release:] *= np.linspace(1.0, 0.0, release)
        return env

    def note(
        self, midi: float, m: int, tb: dict, partials: list[float] | None = None
    ) -> np.ndarray:
        """One note of ``m`` samples: harmonic partials ``k^-tilt`` under the timbre's envelope."""
        t = np.arange(m) / self.sr
        f0 = _hz(midi)
        # one phase track for the fundamental; partial k runs at k times it (shared vibrato)
        phase = 2 * np.pi * f0 * np.cumsum(1 + tb["vibrato"] * np.sin(2 * np.pi * 5.5 * t))
        phase /= self.sr
        out = np.zeros(m)
        weights = partials or [k ** -tb["tilt"] for k in range(1, tb["partials"] + 1)]
        for k, w in enumerate(weights, start=1):
            if k * f0 >= 0.45 * self.sr or w == 0:
                continue
            part = w * np.sin(k * phase + self.rng.uniform(0, 2 * np.pi))
            if tb["kind"] in ("pluck", "keys"):  # higher partials die faster, as on a string
                part *= np.exp(-t * (k - 1) / (2 * tb["decay"]))
            out += part
        return out * self.envelope(tb["kind"], m, tb["decay"])

    def noise(self, m: int, lo: float, hi: float) -> np.ndarray:
        spec = np.fft.rfft(self.rng.standard_normal(m))
        f = np.fft.rfftfreq(m, 1 / self.sr)
        spec[(f < lo) | (f > hi)] = 0
        x = np.fft.irfft(spec, m)
        return x / (np.sqrt(np.mean(x**2)) + 1e-12)

    def drum(self, kind: str) -> np.ndarray:
        """A kick (pitch-dropping sine), snare (tone + white noise) or hi-hat (differenced noise,
        i.e. high-passed) with an exponential decay; 0.3 s (hat 0.08 s) long."""
        r = self.rng
        m = int((0.08 if kind == "hat" else 0.3) * self.sr)
        t = np.arange(m) / self.sr
        if kind == "kick":
            f = 45 + 90 * np.exp(-t / 0.03)
            return np.sin(2 * np.pi * np.cumsum(f) / self.sr) * np.exp(-t / r.uniform(0.04, 0.08))
        if kind == "snare":
            body = 0.5 * np.sin(2 * np.pi * r.uniform(160, 220) * t)
            return (body + r.standard_normal(m)) * np.exp(-t / r.uniform(0.03, 0.06))
        return 0.3 * np.diff(r.standard_normal(m + 1)) * np.exp(-t / r.uniform(0.008, 0.015))


def _place(out: np.ndarray, x: np.ndarray, start: int, gain: float = 1.0) -> None:
    end = min(len(out), start + len(x))
    if end > start:
        out[start:end] += gain * x[: end - start]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _triad(scale: list[int], degree: int, base: int) -> list[int]:
    """MIDI notes of the diatonic triad on ``degree`` (0-6), its root at or above ``base``."""
    root = base + (scale[degree % 7] - base) % 12
    notes = [root]
    for step in (2, 4):
        pc = scale[(degree + step) % 7]
        notes.append(notes[-1] + (pc - notes[-1]) % 12)
    return notes


def _key_clip(s: _Synth, label: int, n: int) -> tuple[np.ndarray, dict]:
    r = s.rng
    scale, tonic, mode = key_scale(label), label % 12, label // 12
    middle = [3, 4, 5, 1] if mode == 0 else [3, 4, 5, 2, 6]  # IV V vi ii / iv v VI III VII
    degrees = [0, *r.choice(middle, size=2), 0]
    # the tonic triad opens and closes, held longest: the tonal centre that tells a key from its
    # relative (same notes) is audible, as in real cadences
    bounds, out, notes = (np.array([0, 0.3, 0.5, 0.7, 1.0]) * n).astype(int), np.zeros(n), []
    base = int(r.integers(48, 60))
    chord_tb, bass_tb, mel_tb = s.timbre(), s.timbre(), s.timbre()
    for i, d in enumerate(degrees):
        start, seg = bounds[i], bounds[i + 1] - bounds[i]
        chord = _triad(scale, int(d), base)
        for _ in range(int(r.integers(0, 3))):  # inversions: lowest note up an octave
            chord = [*chord[1:], chord[0] + 12]
        for midi in chord:
            _place(out, s.note(midi, seg, chord_tb), start, 0.5)
        notes += chord
        if d == 0 or r.random() < 0.7:
            root = _triad(scale, int(d), int(r.integers(36, 46)))[0]
            _place(out, s.note(root, seg, bass_tb), start, 0.6)
            notes.append(root)
    if r.random() < 0.75:  # a scale run or a diatonic walk from the tonic, ending on it
        k = int(r.choice([8, 12, 16]))
        top = int(r.integers(60, 72))
        steps = np.arange(k) if r.random() < 0.5 else np.cumsum(r.integers(-2, 3, size=k))
        steps = steps[::-1] if r.random() < 0.3 else steps
        steps[0] = steps[-1] = 0
        for i, st in enumerate(steps):
            octave, deg = divmod(int(st), 7)
            midi = top + (tonic - top) % 12 + SCALES[mode][deg] + 12 * octave
            _place(out, s.note(midi, n // k, mel_tb), i * (n // k), 0.4)
            notes.append(midi)
    return out, {"tonic": tonic, "mode": mode, "notes": notes, "degrees": [int(d) for d in degrees]}


def _tempo_clip(s: _Synth, bpm: int, n: int) -> tuple[np.ndarray, dict]:
    r, sr = s.rng, s.sr
    period = 60.0 / bpm
    phase = r.uniform(0, period)
    beats = [phase + k * period for k in range(int((n / sr - phase) / period) + 1)]
    beats = [b for b in beats if b * sr < n]
    out = np.zeros(n)
    four = r.random() < 0.5
    sub = int(r.choice([1, 2, 2, 4]))  # hats per beat (1 = none)
    for i, b in enumerate(beats):
        start = int(round(b * sr))
        kind = "kick" if four or i % 2 == 0 else "snare"
        _place(out, s.drum(kind), start, 1.0 if i % 4 == 0 else 0.8)
        if not four and i % 2 == 1 and r.random() < 0.5:
            _place(out, s.drum("kick"), start, 0.6)
        for j in range(1, sub):
            _place(out, s.drum("hat"), int(round((b + j * period / sub) * sr)), 0.3)
    if r.random() < 0.6:  # a sustained pad carries no beat: a nuisance, not a cue
        tb = s.timbre("pad")
        for midi in _triad(SCALES[0], 0, int(r.integers(50, 62))):
            out += 0.1 * s.note(midi, n, tb)
    return out, {"bpm": bpm, "beats": beats, "pattern": "four" if four else "backbeat",
                 "subdivision": sub}  # fmt: skip


def _instrument(s: _Synth, tag: str, n: int, scale: list[int]) -> np.ndarray:
    r, sr, out = s.rng, s.sr, np.zeros(n)
    if tag == "drums":
        return _tempo_clip(s, int(r.integers(80, 160)), n)[0]
    spec = {  # (notes per clip, register, timbre kind, partial weights or None)
        "bass": (4, (33, 45), "pluck", None),
        "piano": (8, (55, 79), "keys", None),
        "strings": (2, (55, 74), "pad", [1 / k for k in range(1, 12)]),
        "organ": (2, (48, 67), "organ", [1, 0.8, 0.5, 0.4, 0, 0.3, 0, 0.25]),
        "flute": (4, (72, 88), "pad", [1, 0.12, 0.04]),
        "guitar": (6, (52, 72), "pluck", None),
        "voice": (3, (57, 72), "pad", None),
    }[tag]
    count, (lo, hi), kind, weights = spec
    tb = s.timbre(kind)
    tb["vibrato"] = 0.006 if tag in ("strings", "flute", "voice") else 0.0
    if tag in ("bass", "guitar", "piano"):
        tb["partials"], tb["tilt"] = 8, 1.0 if tag != "piano" else 1.6
    seg = n // count
    for i in range(count):
        midi = lo + (scale[int(r.integers(0, 7))] - lo) % 12 + 12 * int(r.integers(0, 2))
        midi = min(midi, hi)
        if tag == "voice":  # vowel formants shape the harmonics
            f0, (f1, f2) = _hz(midi), [(700, 1200), (300, 2300), (500, 900)][int(r.integers(0, 3))]
            k = np.arange(1, int(0.45 * sr / f0))
            weights = list(
                np.exp(-(((k * f0 - f1) / 150) ** 2)) + np.exp(-(((k * f0 - f2) / 200) ** 2))
            )
        x = s.note(midi, seg, tb, weights)
        if tag == "flute":
            x += 0.05 * s.noise(seg, 2000, 8000) * s.envelope("pad", seg, 1.0)
        _place(out, x, i * seg)
    return out


def _clip(task: str, label: int, rng: np.random.Generator, n: int, sr: int):
    s = _Synth(rng, sr)
    if task == "key":
        out, meta = _key_clip(s, label, n)
    elif task == "tempo":
        out, meta = _tempo_clip(s, label, n)
    elif task == "chords":
        root, minor = label % 12, label // 12
        chord = _triad(key_scale(12 * minor + root), 0, int(rng.integers(45, 66)))
        for _ in range(int(rng.integers(0, 3))):
            chord = [*chord[1:], chord[0] + 12]
        tb = s.timbre()
        out = sum(s.note(m, n, tb) for m in chord)
        meta = {"notes": chord}
    else:  # tags: label is the primary tag; up to two more join it
        others = [t for t in range(len(TAG_CLASSES)) if t != label]
        extra = rng.choice(others, size=int(rng.choice([0, 1, 1, 2])), replace=False)
        tags = sorted([label, *map(int, extra)])
        scale = key_scale(int(rng.integers(0, 24)))
        out = sum(_unit(_instrument(s, TAG_CLASSES[t], n, scale)) * rng.uniform(0.5, 1.0)
                  for t in tags)  # fmt: skip
        meta = {"tags": tags}
    out = _unit(out) + s.noise(n, 20, 0.45 * sr) * 10 ** (-rng.uniform(25, 45) / 20)
    out *= 10 ** (rng.uniform(-24, -12) / 20)
    peak = np.max(np.abs(out))
    if peak > 0.99:  # keeps every clip writable as PCM without clipping
        out *= 0.99 / peak
    return out.astype(np.float32), meta


def make_synthetic_music(
    task: str = "key",
    *,
    n_per_class: int = 4,
    seed: int = 0,
    clip_seconds: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    bpm_range: tuple[int, int] = (70, 170),
    bpm_step: int = 5,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Generate a synthetic music dataset in memory (module docstring).

    Args (defaults):
        task: "key" | "tempo" | "tags" | "chords" ("key").
        n_per_class: clips per key / per tempo value / per primary tag / per chord (4).
        seed: non-negative int; same arguments give bit-identical audio (0).
        clip_seconds: clip length; None = 4.0 for tempo (at least three beats at 60 BPM), else 2.0.
        sample_rate: Hz (24000, MERT's and MusicFM's rate).
        bpm_range, bpm_step: tempo only: BPM values ``range(lo, hi + 1, step)`` ((70, 170), 5).
        val_fraction, test_fraction: stratified per class (primary tag), seeded by ``seed``.

    Returns:
        DatasetSplits at ``sample_rate``; clips are float32 ``[clip_seconds * sample_rate]`` with
        ``meta = {"id", "index", ...}`` (key: tonic, mode, notes; tempo: bpm, beats; tags: tags).
        Task "key", "tempo" (labels are the BPM itself over 300 one-BPM classes), "multilabel"
        (tags) or "multiclass" (chords), so the music metrics (MIREX key score, tempo Acc1/Acc2,
        mAP) apply.
    """
    if task not in MUSIC_TASKS:
        raise ValueError(f"unknown synthetic music task {task!r}; valid: {list(MUSIC_TASKS)}")
    for name, value in (("n_per_class", n_per_class), ("sample_rate", sample_rate),
                        ("bpm_step", bpm_step)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"make_synthetic_music: {name} must be a positive integer, got {value!r}"
            )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"make_synthetic_music: seed must be a non-negative integer, got {seed!r}")
    lo, hi = (int(b) for b in bpm_range)
    if not 30 <= lo <= hi < TEMPO_BINS:
        raise ValueError(
            f"make_synthetic_music: bpm_range={bpm_range!r}; need 30 <= lo <= hi < 300"
        )
    seconds = clip_seconds if clip_seconds is not None else (4.0 if task == "tempo" else 2.0)
    n = int(round(seconds * sample_rate))
    if n < sample_rate // 2:
        raise ValueError(f"make_synthetic_music: clip_seconds={seconds} is shorter than 0.5 s")

    if task == "tempo":
        classes, labels_used = TEMPO_CLASSES, list(range(lo, hi + 1, bpm_step))
    else:
        classes = {"key": KEY_CLASSES, "tags": TAG_CLASSES, "chords": CHORD_CLASSES}[task]
        labels_used = list(range(len(classes)))
    clips, strata = [], []
    for label in labels_used:
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, _TASK_CODE[task], label, i])
            wave, meta = _clip(task, label, rng, n, sample_rate)
            target = meta["tags"] if task == "tags" else label
            meta = {"id": f"{task}_{label:03d}_{i:04d}", "index": i, **meta}
            clips.append(Clip(wave, target, sample_rate, meta))
            strata.append(label)
    train, val, test = stratified_split(strata, val_fraction, test_fraction, seed)
    return DatasetSplits(
        name=f"synthetic_{task}",
        classes=list(classes),  # fresh lists: callers may extend their copy
        task={"tags": "multilabel", "chords": "multiclass"}.get(task, task),
        train=[clips[i] for i in train],
        val=[clips[i] for i in val],
        test=[clips[i] for i in test],
        sample_rate=sample_rate,
        info={"loader": "synthetic_music", "task": task, "n_per_class": n_per_class, "seed": seed,
              "clip_seconds": seconds, "bpm_range": [lo, hi], "bpm_step": bpm_step,
              "val_fraction": val_fraction, "test_fraction": test_fraction},
    )  # fmt: skip


def music_loaders() -> dict[str, partial]:
    """``{'synthetic_key': ..., 'synthetic_tempo': ..., 'synthetic_tags': ...}`` for
    ``load_dataset``: each is ``make_synthetic_music`` with its task fixed."""
    return {f"synthetic_{t}": partial(make_synthetic_music, t) for t in ("key", "tempo", "tags")}
