"""IEMOCAP: dyadic sessions of 10 actors, 4-class speech emotion (Busso et al., 2008).

Layout under ``data_path`` (spec ``datasets_and_protocols.md`` §5)::

    IEMOCAP_full_release/Session{1..5}/dialog/EmoEvaluation/*.txt     label files
    IEMOCAP_full_release/Session{s}/sentences/wav/<dialog>/<turn>.wav 16 kHz

``data_path`` may also be the ``IEMOCAP_full_release`` folder. Label files: only lines starting
with ``[``, split on tabs; field 1 = turn id (``Ses01F_impro01_F000``), field 2 = label. Dialog =
the first 2 (3-part id) or 3 (4-part id) ``_``-parts; speaker = first letter of the last part.
Classes neutral (neu), happy (hap + exc), sad, angry; other labels are dropped. Label files are
read sorted by name, lines in file order. AST: L = 800; wav2vec2: 128,000 samples; no SpecAugment.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..config import ConfigError
from .base import Clip, DatasetError, DatasetSplits
from .protocols import (
    carve_val,
    check_audio,
    find_root,
    iemocap_folds,
    protocol,
    protocol_info,
    read_rows,
)

__all__ = ["IEMOCAP_CLASSES", "IEMOCAP_LABELS", "load_iemocap"]

IEMOCAP_CLASSES = ["neutral", "happy", "sad", "angry"]
IEMOCAP_LABELS = {"neu": 0, "hap": 1, "exc": 1, "sad": 2, "ang": 3}  # exc merged into happy
LAYOUT = (
    "IEMOCAP_full_release/Session{1..5}/dialog/EmoEvaluation/*.txt and "
    "IEMOCAP_full_release/Session{s}/sentences/wav/<dialog>/<turn>.wav"
)
RECIPE = {
    "max_length": 800,
    "freq_mask": 0,
    "time_mask": 0,
    "native_rate": "16 kHz",
    "resample": "none (16 kHz as stored)",
    "wav2vec2_max_samples": 128000,
}


def dialog_and_speaker(turn: str, where: str) -> tuple[str, str]:
    """(dialog folder, speaker F|M) of a turn id such as ``Ses01F_script01_1_F003``."""
    parts = turn.split("_")
    if len(parts) not in (3, 4) or parts[-1][:1] not in ("F", "M"):
        raise DatasetError(
            f"iemocap: {where}: turn id {turn!r} is not <Session>_<dialog>[_<n>]_<F|M><nnn>"
        )
    return "_".join(parts[:-1]), parts[-1][0]


def read_iemocap(root: Path) -> list[Clip]:
    """Every kept utterance of sessions 1-5 (session order, files sorted, lines in order)."""
    clips = []
    for session in range(1, 6):
        folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        if not folder.is_dir():
            raise FileNotFoundError(f"iemocap: label folder {folder} not found; expected {LAYOUT}")
        files = sorted(p for p in folder.glob("*.txt") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"iemocap: no label files (*.txt) in {folder}")
        for txt in files:
            # tab-separated, quotes are text: "[start - end]\tturn\tlabel\t[V, A, D]"
            for n, fields in read_rows(txt, delimiter="\t", quoting=csv.QUOTE_NONE):
                if not fields[0].startswith("["):
                    continue
                where = f"{txt} line {n}"
                if len(fields) < 3:
                    raise DatasetError(
                        f"iemocap: {where} has {len(fields)} tab-separated fields, expected 4"
                    )
                turn, label = fields[1].strip(), fields[2].strip()
                if label not in IEMOCAP_LABELS:
                    continue  # fru, sur, fea, dis, oth, xxx: not part of the 4-class task
                dialog, speaker = dialog_and_speaker(turn, where)
                wav = root / f"Session{session}" / "sentences" / "wav" / dialog / f"{turn}.wav"
                check_audio(wav, "iemocap", where)
                meta = {
                    "turn": turn,
                    "session": session,
                    "speaker": speaker,
                    "dialog": dialog,
                    "emotion": label,
                }
                clips.append(Clip(wav, IEMOCAP_LABELS[label], None, meta))
    return clips


def load_iemocap(
    data_path: str | Path,
    *,
    fold: int = 0,
    profile: str = "corrected",
    iemocap_protocol: str = "speaker",
    val_fraction: float | None = None,
    seed: int = 0,
    cache: bool = False,
) -> DatasetSplits:
    """IEMOCAP run ``fold``.

    ``iemocap_protocol="speaker"`` (reference and default, 10 runs): train on four sessions
    (both speakers); the held-out session's one speaker validates and the other tests
    (:func:`~petl_kit.data.protocols.iemocap_folds`). ``"session"`` (5 runs): leave one session
    out; no val split unless ``val_fraction`` carves a stratified one from the training sessions.
    Report accuracy (WA) and balanced accuracy (UA).
    """
    if val_fraction and iemocap_protocol == "speaker":
        raise ConfigError("iemocap: val_fraction applies to iemocap_protocol='session'")
    plan = iemocap_folds(fold, iemocap_protocol)
    root = find_root(Path(data_path), "IEMOCAP_full_release", "Session1", "iemocap", LAYOUT)
    clips = read_iemocap(root)
    train = [c for c in clips if c.meta["session"] in plan["train_sessions"]]
    held = [c for c in clips if c.meta["session"] == plan["session"]]
    if iemocap_protocol == "speaker":
        val = [c for c in held if c.meta["speaker"] == plan["val_speaker"]]
        test = [c for c in held if c.meta["speaker"] == plan["test_speaker"]]
    else:
        (train, val), test = carve_val(train, val_fraction, seed), held
    info = {
        "loader": "iemocap",
        "root": str(root),
        "fold": int(fold),
        "num_folds": 10 if iemocap_protocol == "speaker" else 5,
        **protocol_info(protocol(profile)),
        "iemocap_protocol": iemocap_protocol,
        **plan,
        "val_fraction": val_fraction,
        "seed": seed,
        "recipe": RECIPE,
        "metrics": ["accuracy (WA)", "balanced_accuracy (UA)"],
    }
    return DatasetSplits(
        "iemocap", list(IEMOCAP_CLASSES), "multiclass", train, val, test, info=info, cache=cache
    )
