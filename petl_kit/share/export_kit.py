"""The kit's own export format: every method (adapters, mixtures, prompts, music heads).

``out`` is laid out as a run folder, so :func:`~.run.load_run` reads it as it reads the run:
``params.yaml``, ``labels.json``, ``metrics.json``, ``versions.json``, ``ledger.json``,
``weights/`` (``build_args.json`` + ``trainable.safetensors``, read with safetensors: no pickle),
and the model card ``README.md`` (the loader note). The frozen backbone is rebuilt from the
recorded checkpoint; a local-folder or hub checkpoint is also saved in ``backbone/`` (where the
family loads with ``from_pretrained``) and used from there, so the export travels on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .card import model_card

COPIED = ("params.yaml", "metrics.json", "versions.json", "ledger.json", "history.csv")

USAGE = """```python
import petl_kit as pk

run = pk.load_run("{out}")          # model, params, labels, feature pipeline
run.predict(["clip.wav", "folder/"])  # one row per clip: label, probability per class
```

or `python -m petl_kit predict {out} clip.wav folder/ --out predictions.csv`."""


def portable_backbone(run) -> bool:
    """The checkpoint is a local folder or a hub id (not ``builtin:``, which the kit rebuilds
    anywhere, nor None) and its family reads a ``save_pretrained`` folder back
    (``Family.portable``)."""
    from ..backbones.registry import get_family

    ckpt = run.model.build_args.get("checkpoint")
    family = get_family(run.model.family)
    return bool(ckpt) and not str(ckpt).startswith("builtin:") and family.portable


def save_base_backbone(run, folder: Path) -> Path:
    """The frozen backbone as the run's checkpoint gives it (before the method), saved with
    ``save_pretrained``: the same config overrides, position-embedding rule and depth."""
    from ..backbones.registry import load_backbone
    from ..model.build import truncate_encoder

    args = run.model.build_args
    base = load_backbone(args["backbone"], args["checkpoint"], args["backbone_config"],
                         pos_embed=args["options"]["pos_embed"])  # fmt: skip
    if args.get("encoder_depth") is not None:
        truncate_encoder(base, args["encoder_depth"])
    base.save_pretrained(folder)
    return folder


def export_kit(run, out: Path) -> Path:
    from ..model import save_trained

    for name in COPIED:
        if (run.folder / name).is_file():
            shutil.copy2(run.folder / name, out / name)
    (out / "labels.json").write_text(json.dumps(run.labels, indent=2))
    save_trained(run.model, out / "weights")
    notes = []
    if portable_backbone(run):
        save_base_backbone(run, out / "backbone")
        notes.append("`backbone/` holds the frozen backbone (`save_pretrained`); `load_run` "
                     "uses it instead of the recorded checkpoint")  # fmt: skip
    else:
        notes.append(f"the frozen backbone is rebuilt from checkpoint "
                     f"`{run.model.build_args.get('checkpoint')}` when loaded")  # fmt: skip
    usage = USAGE.format(out=out)
    (out / "README.md").write_text(model_card(run, "kit", usage, notes))
    return out
