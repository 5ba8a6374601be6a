"""ESC-50: 2,000 five-second environmental clips, 50 classes, 5 folds (Piczak, ACM MM 2015).

Layout under ``data_path`` (spec ``datasets_and_protocols.md`` §2)::

    ESC-50/meta/esc50.csv     filename,fold,target,category,esc10,src_file,take (header skipped)
    ESC-50/audio/<filename>   44.1 kHz mono WAV, 5 s

``data_path`` may also be the ``ESC-50`` folder itself. Clips are resampled to the extractor's
16 kHz on load (AST: 80,000 samples → 498 frames, padded to L = 500; SpecAugment F24/T80 on train).
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .base import Clip, DatasetError, DatasetSplits
from .protocols import (
    carve_val,
    check_audio,
    esc50_folds,
    find_root,
    label_of,
    protocol,
    protocol_info,
    read_rows,
    require_file,
)

__all__ = ["ESC50_CLASSES", "load_esc50"]

# Official target order (= the reference's category → index map).
# fmt: off
ESC50_CLASSES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain",
    "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
]
# fmt: on
LAYOUT = "ESC-50/meta/esc50.csv and ESC-50/audio/<filename>"
RECIPE = {
    "max_length": 500,
    "freq_mask": 24,
    "time_mask": 80,
    "native_rate": "44.1 kHz",
    "resample": "to 16 kHz",
}


def read_esc50(root: Path) -> list[Clip]:
    """Every row of ``meta/esc50.csv`` as a Clip (CSV order), audio files checked."""
    meta = require_file(root / "meta" / "esc50.csv", "esc50", "metadata file")
    index = {c: i for i, c in enumerate(ESC50_CLASSES)}
    clips = []
    for n, cols in read_rows(meta)[1:]:
        where = f"{meta} line {n}"
        if len(cols) < 4:
            raise DatasetError(f"esc50: {where} has {len(cols)} columns, expected 7: {cols}")
        filename, fold, target, category = (c.strip() for c in cols[:4])
        label = label_of(category, index, "esc50", where)
        if target.isdigit() and int(target) != label:
            raise DatasetError(
                f"esc50: {where}: target {target} disagrees with category {category!r} "
                f"(index {label} in the official order)"
            )
        if not fold.isdigit() or not 1 <= int(fold) <= 5:
            raise DatasetError(f"esc50: {where} has fold {fold!r}; ESC-50 folds are 1..5")
        path = check_audio(root / "audio" / filename, "esc50", where)
        meta_d = {"filename": filename, "fold": int(fold), "category": category, "line": n}
        clips.append(Clip(path, label, None, meta_d))
    if not clips:
        raise DatasetError(f"esc50: {meta} has no data rows")
    return clips


def load_esc50(
    data_path: str | Path,
    *,
    fold: int = 0,
    profile: str = "corrected",
    esc50_protocol: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    cache: bool = False,
) -> DatasetSplits:
    """ESC-50 run ``fold`` (0-4) under the profile's protocol.

    ``esc50_protocol`` (None: the profile's): ``"3-1-1"`` (reference, R20) trains on 3 folds and
    validates on 1; ``"4-1"`` (corrected) trains on 4 folds, no val split unless
    ``val_fraction`` carves a stratified one (``seed``) out of the training folds.
    Clip order within a split is CSV order. ``cache``: loaders read the feature cache.
    """
    cfg = protocol(profile, esc50_protocol=esc50_protocol)
    if val_fraction and cfg.esc50_protocol == "3-1-1":
        raise ConfigError(
            "esc50: val_fraction applies to esc50_protocol='4-1'; '3-1-1' has a val fold"
        )
    train_f, val_f, test_f = esc50_folds(fold, cfg.esc50_protocol)
    root = find_root(Path(data_path), "ESC-50", "meta/esc50.csv", "esc50", LAYOUT)
    clips = read_esc50(root)
    train = [c for c in clips if c.meta["fold"] in train_f]
    val = [c for c in clips if c.meta["fold"] in val_f]
    if cfg.esc50_protocol == "4-1":
        train, val = carve_val(train, val_fraction, seed)
    test = [c for c in clips if c.meta["fold"] == test_f]
    info = {
        "loader": "esc50",
        "root": str(root),
        "fold": int(fold),
        "num_folds": 5,
        **protocol_info(cfg, "esc50_protocol"),
        "train_folds": train_f,
        "val_folds": val_f,
        "test_fold": test_f,
        "val_fraction": val_fraction,
        "seed": seed,
        "recipe": RECIPE,
    }
    return DatasetSplits(
        "esc50", list(ESC50_CLASSES), "multiclass", train, val, test, info=info, cache=cache
    )
