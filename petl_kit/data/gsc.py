"""Google Speech Commands v2: 105,829 one-second utterances of 35 words (Warden, 2018).

Layout under ``data_path`` (spec ``datasets_and_protocols.md`` §4)::

    speech_commands_v0.02/<word>/<file>.wav           16 kHz, ≤ 1 s
    speech_commands_v0.02/validation_list.txt         lines "<word>/<file>.wav"
    speech_commands_v0.02/testing_list.txt

``data_path`` may also be the ``speech_commands_v0.02`` folder. Splits are the official lists;
train = every file of the 35 word folders in neither list (``_background_noise_`` unused).
Loader order: words in label order, files sorted by name (the reference used directory order,
which depends on the filesystem). AST: 98 frames, padded to L = 100; no SpecAugment.
"""

from __future__ import annotations

from pathlib import Path

from .base import Clip, DatasetError, DatasetSplits
from .protocols import check_audio, check_fold, find_root, protocol, protocol_info, read_lines

__all__ = ["GSC_CLASSES", "load_gsc"]

# fmt: off
GSC_CLASSES = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
    "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
    "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
]
# fmt: on
LAYOUT = (
    "speech_commands_v0.02/<word>/<file>.wav with speech_commands_v0.02/validation_list.txt "
    "and testing_list.txt"
)
RECIPE = {
    "max_length": 100,
    "freq_mask": 0,
    "time_mask": 0,
    "native_rate": "16 kHz",
    "resample": "none (16 kHz as stored)",
    "wav2vec2_max_samples": 16000,
}


def _read_list(root: Path, name: str) -> dict[str, int]:
    """``{"word/file.wav": line}`` of an official list; entries must exist with a known word."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"gsc: split list {path} not found; expected {LAYOUT}")
    out = {}
    for n, line in enumerate(read_lines(path), start=1):
        entry = line.strip()
        if not entry:
            continue
        where = f"{path} line {n}"
        word = entry.split("/", 1)[0]
        if "/" not in entry or word not in GSC_CLASSES:
            raise DatasetError(
                f"gsc: {where} has unknown label {word!r} ({entry!r}); valid: {GSC_CLASSES}"
            )
        check_audio(root / entry, "gsc", where)
        out[entry] = n
    return out


def load_gsc(
    data_path: str | Path,
    *,
    fold: int = 0,
    profile: str = "corrected",
    cache: bool = False,
) -> DatasetSplits:
    """GSC v2, 35 classes, the official train / validation / test split (one fold: ``fold=0``).

    The reference and corrected protocols agree; ``profile`` is recorded (it selects the
    few-shot sampler). Missing word folders or list entries are errors naming them.
    """
    fold = check_fold("gsc", fold, 1)
    root = find_root(Path(data_path), "speech_commands_v0.02", "testing_list.txt", "gsc", LAYOUT)
    val_list, test_list = (
        _read_list(root, "validation_list.txt"),
        _read_list(root, "testing_list.txt"),
    )
    both = sorted(set(val_list) & set(test_list))
    if both:
        raise DatasetError(
            f"gsc: {len(both)} file(s) are in both validation and testing lists, e.g. {both[0]}"
        )
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for label, word in enumerate(GSC_CLASSES):
        folder = root / word
        if not folder.is_dir():
            raise FileNotFoundError(
                f"gsc: word folder {folder} not found; GSC v2 has 35: {GSC_CLASSES}"
            )
        for path in sorted(p for p in folder.glob("*.wav") if not p.name.startswith(".")):
            rel = f"{word}/{path.name}"
            split = "val" if rel in val_list else "test" if rel in test_list else "train"
            parts[split].append(Clip(path, label, None, {"path": rel, "word": word}))
    info = {
        "loader": "gsc",
        "root": str(root),
        "fold": fold,
        "num_folds": 1,
        **protocol_info(protocol(profile)),
        "recipe": RECIPE,
    }
    return DatasetSplits("gsc", list(GSC_CLASSES), "multiclass", **parts, info=info, cache=cache)
