"""UrbanSound8K: 8,732 urban sound slices (≤ 4 s), 10 classes, 10 folds (Salamon et al., 2014).

Layout under ``data_path`` (spec ``datasets_and_protocols.md`` §3)::

    UrbanSound8K/metadata/UrbanSound8K.csv
        columns slice_file_name,fsID,start,end,salience,fold,classID,class (header skipped)
    UrbanSound8K/audio/fold<k>/<slice_file_name>

``data_path`` may also be the ``UrbanSound8K`` folder. Files come at many rates, 16/24-bit, mono
or stereo: channel 0 is taken (the reference's handling) and the clip is resampled to 16 kHz.
AST: ≤ 398 frames, padded to L = 400; SpecAugment F24/T80 on train.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .base import Clip, DatasetError, DatasetSplits
from .protocols import (
    carve_val,
    check_audio,
    find_root,
    label_of,
    protocol,
    protocol_info,
    read_rows,
    require_file,
    us8k_folds,
)

__all__ = ["US8K_CLASSES", "load_us8k"]

US8K_CLASSES = [
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
]
LAYOUT = "UrbanSound8K/metadata/UrbanSound8K.csv and UrbanSound8K/audio/fold<k>/<file>"
RECIPE = {
    "max_length": 400,
    "freq_mask": 24,
    "time_mask": 80,
    "native_rate": "various",
    "resample": "to 16 kHz",
    "channel": 0,
}


def read_us8k(root: Path) -> list[Clip]:
    """Every row of the metadata CSV as a Clip (CSV order), audio files checked.

    Reference parse: column 0 → file, third-from-last → fold, last → class name (classID, the
    second-from-last, must agree with the official order)."""
    meta = require_file(root / "metadata" / "UrbanSound8K.csv", "us8k", "metadata file")
    index = {c: i for i, c in enumerate(US8K_CLASSES)}
    clips = []
    for n, row in read_rows(meta)[1:]:
        cols = [c.strip() for c in row]
        where = f"{meta} line {n}"
        if len(cols) < 4:
            raise DatasetError(f"us8k: {where} has {len(cols)} columns, expected 8: {cols}")
        name, fold, class_id, category = cols[0], cols[-3], cols[-2], cols[-1]
        label = label_of(category, index, "us8k", where)
        if class_id.isdigit() and int(class_id) != label:
            raise DatasetError(
                f"us8k: {where}: classID {class_id} disagrees with class {category!r} "
                f"(index {label} in the official order)"
            )
        if not fold.isdigit() or not 1 <= int(fold) <= 10:
            raise DatasetError(f"us8k: {where} has fold {fold!r}; UrbanSound8K folds are 1..10")
        path = check_audio(root / "audio" / f"fold{int(fold)}" / name, "us8k", where)
        clips.append(
            Clip(
                path,
                label,
                None,
                {"filename": name, "fold": int(fold), "class": category, "line": n},
            )
        )
    if not clips:
        raise DatasetError(f"us8k: {meta} has no data rows")
    return clips


def load_us8k(
    data_path: str | Path,
    *,
    fold: int = 0,
    profile: str = "corrected",
    us8k_protocol: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    channel: str | int = 0,
    cache: bool = False,
) -> DatasetSplits:
    """UrbanSound8K run ``fold`` (0-9): nine training folds, one test fold.

    ``us8k_protocol`` (None: the profile's): ``"test_as_val"`` (reference, R21) tests on fold
    [10, 1, ..., 9][fold] and uses that same fold as the validation split; ``"no_test_selection"``
    (corrected) tests on fold ``fold + 1`` and has no val split unless ``val_fraction`` carves a
    stratified one (``seed``) from the nine training folds. ``channel``: 0 (reference) or "mean".
    """
    cfg = protocol(profile, us8k_protocol=us8k_protocol)
    if val_fraction and cfg.us8k_protocol == "test_as_val":
        raise ConfigError("us8k: val_fraction applies to us8k_protocol='no_test_selection'")
    train_f, test_f = us8k_folds(fold, cfg.us8k_protocol)
    root = find_root(Path(data_path), "UrbanSound8K", "metadata/UrbanSound8K.csv", "us8k", LAYOUT)
    clips = read_us8k(root)
    train = [c for c in clips if c.meta["fold"] in train_f]
    test = [c for c in clips if c.meta["fold"] == test_f]
    if cfg.us8k_protocol == "test_as_val":
        val = list(test)  # R21: the per-epoch "validation" is the test fold
    else:
        train, val = carve_val(train, val_fraction, seed)
    info = {
        "loader": "us8k",
        "root": str(root),
        "fold": int(fold),
        "num_folds": 10,
        **protocol_info(cfg, "us8k_protocol"),
        "train_folds": train_f,
        "test_fold": test_f,
        "val_is_test": cfg.us8k_protocol == "test_as_val",
        "val_fraction": val_fraction,
        "seed": seed,
        "recipe": {**RECIPE, "channel": channel},
    }
    return DatasetSplits(
        "us8k",
        list(US8K_CLASSES),
        "multiclass",
        train,
        val,
        test,
        info=info,
        channel=channel,
        cache=cache,
    )
