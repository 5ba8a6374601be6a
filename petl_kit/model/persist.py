"""Trainable-only persistence: a run stores the weights that trained (a few MB) and the
arguments that rebuild the rest from the backbone checkpoint.

>>> save_trained(model, "runs/x/weights")        # trainable.safetensors + build_args.json
>>> model = load_trained("runs/x/weights")        # rebuilt with build_model, weights loaded
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from .build import build_model


def save_trained(model, folder: str | Path) -> Path:
    """Write the trainable weights only (``trainable.safetensors``) and ``build_args.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in model.trainable_state_dict().items()}
    save_file(state, str(folder / "trainable.safetensors"))
    (folder / "build_args.json").write_text(json.dumps(model.build_args, indent=2, default=str))
    return folder


def load_trained(folder: str | Path, checkpoint: str | None = None):
    """Rebuild a model saved by :func:`save_trained` onto its backbone and load its weights.

    ``checkpoint`` replaces the recorded backbone checkpoint (e.g. a local copy elsewhere).
    """
    folder = Path(folder)
    args_file, weights = folder / "build_args.json", folder / "trainable.safetensors"
    for f in (args_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; expected a folder written by save_trained")
    args = json.loads(args_file.read_text())
    if checkpoint is not None:
        args["checkpoint"] = checkpoint
    # R2's model option `init` was never read and is gone (the methods' init switches say it):
    # dropping it from folders written before rebuilds exactly the model they hold
    (args.get("options") or {}).pop("init", None)
    model = build_model(**args)
    state = load_file(str(weights))
    expected = set(model.trainable_state_dict())
    if set(state) != expected:
        raise ValueError(
            f"{weights} does not match the rebuilt model: missing "
            f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}"
        )
    model.load_state_dict(state, strict=False)
    return model
