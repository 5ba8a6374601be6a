"""Label layouts of the music tasks (spec ``datasets_and_protocols.md`` §7.3, §7.4).

Key (GiantSteps): 24 classes, index = pitch_class + 12·mode, pitch classes C=0 … B=11, mode 0 =
major (0–11), 1 = minor (12–23). Tempo: 300 BPM bins 0..299; a clip's label is its integer BPM.
The read-outs and scores of these tasks are in ``petl_kit.training.music_tasks``.
"""

from __future__ import annotations

__all__ = ["KEY_CLASSES", "MODES", "PITCH_CLASSES", "TEMPO_BINS", "TEMPO_CLASSES", "key_index"]

PITCH_CLASSES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
# "C major" … "B major", "C minor" … "B minor": mir_eval's key spelling, index = pc + 12·mode
KEY_CLASSES = tuple(f"{pc} {mode}" for mode in MODES for pc in PITCH_CLASSES)
TEMPO_BINS = 300
TEMPO_CLASSES = tuple(str(bpm) for bpm in range(TEMPO_BINS))


def key_index(pitch_class: int, mode: str | int) -> int:
    """Class index of a key: ``pitch_class`` 0–11 (C=0), ``mode`` 'major'/'minor' or 0/1."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"key mode {mode!r} is not valid; valid: {list(MODES)} or 0/1")
        mode = MODES.index(mode)
    if mode not in (0, 1) or not 0 <= int(pitch_class) < 12:
        raise ValueError(f"key ({pitch_class!r}, {mode!r}): pitch class must be 0–11, mode 0/1")
    return int(pitch_class) + 12 * int(mode)
