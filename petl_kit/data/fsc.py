"""Fluent Speech Commands: 30,043 spoken commands, 31 intents (Lugosch et al., Interspeech 2019).

Layout under ``data_path`` (spec ``datasets_and_protocols.md`` §1)::

    fluent_speech_commands_dataset/data/{train,valid,test}_data.csv
    fluent_speech_commands_dataset/<path from column 1>        16 kHz WAV

``data_path`` may also be the ``fluent_speech_commands_dataset`` folder. CSV: header skipped,
each line split on commas; column 1 = WAV path relative to the dataset folder; the **last three**
columns = action, object, location (robust to commas inside the transcription). Label =
action + object + location concatenated, mapped by the reference table below. AST: L = 400, no
SpecAugment; the official split is the only "fold".
"""

from __future__ import annotations

from pathlib import Path

from .base import Clip, DatasetError, DatasetSplits
from .protocols import check_audio, check_fold, find_root, protocol, protocol_info, read_rows

__all__ = ["FSC_INTENTS", "FSC_CLASSES", "load_fsc"]

# (action, object, location) in reference id order.
# fmt: off
FSC_INTENTS = [
    ("change language", "none", "none"), ("activate", "music", "none"),           # 0, 1
    ("activate", "lights", "none"), ("deactivate", "lights", "none"),             # 2, 3
    ("increase", "volume", "none"), ("decrease", "volume", "none"),               # 4, 5
    ("increase", "heat", "none"), ("decrease", "heat", "none"),                   # 6, 7
    ("deactivate", "music", "none"), ("activate", "lamp", "none"),                # 8, 9
    ("deactivate", "lamp", "none"), ("activate", "lights", "kitchen"),            # 10, 11
    ("activate", "lights", "bedroom"), ("activate", "lights", "washroom"),        # 12, 13
    ("deactivate", "lights", "kitchen"), ("deactivate", "lights", "bedroom"),     # 14, 15
    ("deactivate", "lights", "washroom"), ("increase", "heat", "kitchen"),        # 16, 17
    ("increase", "heat", "bedroom"), ("increase", "heat", "washroom"),            # 18, 19
    ("decrease", "heat", "kitchen"), ("decrease", "heat", "bedroom"),             # 20, 21
    ("decrease", "heat", "washroom"), ("bring", "newspaper", "none"),             # 22, 23
    ("bring", "juice", "none"), ("bring", "socks", "none"),                       # 24, 25
    ("change language", "Chinese", "none"), ("change language", "Korean", "none"),  # 26, 27
    ("change language", "English", "none"), ("change language", "German", "none"),  # 28, 29
    ("bring", "shoes", "none"),                                                   # 30
]
# fmt: on
FSC_CLASSES = ["".join(t) for t in FSC_INTENTS]  # the reference's label strings
LAYOUT = "fluent_speech_commands_dataset/data/{train,valid,test}_data.csv and the WAVs they list"
RECIPE = {
    "max_length": 400,
    "freq_mask": 0,
    "time_mask": 0,
    "native_rate": "16 kHz",
    "resample": "none (16 kHz as stored)",
    "wav2vec2_max_samples": None,
}
SPLIT_FILES = {"train": "train_data.csv", "val": "valid_data.csv", "test": "test_data.csv"}


def _read_split(root: Path, filename: str) -> list[Clip]:
    path = root / "data" / filename
    if not path.is_file():
        raise FileNotFoundError(f"fsc: metadata file {path} not found; expected {LAYOUT}")
    index = {c: i for i, c in enumerate(FSC_CLASSES)}
    clips = []
    for n, cols in read_rows(path)[1:]:
        where = f"{path} line {n}"
        if len(cols) < 5:
            raise DatasetError(f"fsc: {where} has {len(cols)} columns, expected >= 5: {cols}")
        action, obj, location = cols[-3:]
        intent = action + obj + location
        if intent not in index:
            raise DatasetError(
                f"fsc: {where} has unknown label {intent!r} (action {action!r}, object {obj!r}, "
                f"location {location!r}); valid: the 31 intents of FSC_INTENTS"
            )
        wav = check_audio(root / cols[1], "fsc", where)
        meta = {"path": cols[1], "action": action, "object": obj, "location": location, "line": n}
        clips.append(Clip(wav, index[intent], None, meta))
    return clips


def load_fsc(
    data_path: str | Path,
    *,
    fold: int = 0,
    profile: str = "corrected",
    cache: bool = False,
) -> DatasetSplits:
    """FSC, 31 intents, the official train / valid / test CSVs (one fold: ``fold=0``).

    Reference and corrected protocols agree; ``profile`` is recorded (few-shot sampler).
    """
    fold = check_fold("fsc", fold, 1)
    root = find_root(Path(data_path), "fluent_speech_commands_dataset", "data", "fsc", LAYOUT)
    parts = {split: _read_split(root, f) for split, f in SPLIT_FILES.items()}
    info = {
        "loader": "fsc",
        "root": str(root),
        "fold": fold,
        "num_folds": 1,
        **protocol_info(protocol(profile)),
        "recipe": RECIPE,
    }
    return DatasetSplits("fsc", list(FSC_CLASSES), "multiclass", **parts, info=info, cache=cache)
