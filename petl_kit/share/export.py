"""``export_run(run_dir, out, format)``: one entry point for the three export formats.

==========  ===============================================================  =====================
format      what ``out`` holds                                               methods
==========  ===============================================================  =====================
``hf``      a ``transformers`` folder: stock ``*ForSequenceClassification``  linear, full_ft,
            config with ``id2label``, the feature-extractor config, weights   bitfit, lora (merged)
            with the method merged in (``pipeline("audio-classification")``)  on frame models
``peft``    ``adapter_config.json`` + ``adapter_model.safetensors`` on the    lora
            stock backbone in ``base/``, the kit's head in ``head/``
``kit``     the run's trainable weights, params, labels (``load_run(out)``)   every method
==========  ===============================================================  =====================

Every format writes the model card ``README.md`` (:mod:`.card`). What a format cannot express
is refused with an :class:`~petl_kit.errors.ExportError` that says why and names the format that
can (``kit`` always can).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ExportError

FORMATS = ("hf", "peft", "kit")


def _exporter(fmt: str):
    if fmt == "hf":
        from .export_hf import export_hf

        return export_hf
    if fmt == "peft":
        from .export_peft import export_peft

        return export_peft
    if fmt == "kit":
        from .export_kit import export_kit

        return export_kit
    raise ExportError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def export_run(run_dir, out, format: str = "kit", *, overwrite: bool = False) -> Path:
    """Export the run (or ``kit`` export) in ``run_dir`` to the folder ``out``; returns ``out``.

    ``out`` must not exist or be empty, unless ``overwrite`` (its contents are then replaced).
    A refused export leaves no folder behind.

    Raises:
        ExportError: the format cannot express this run (the message says why and what can).
    """
    from .run import load_run

    exporter = _exporter(format)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"export folder {out} exists and is not empty; choose a new folder "
                              "or pass overwrite=True (--overwrite)")  # fmt: skip
        if out.resolve() == Path(run_dir).resolve():
            raise ExportError(f"export folder {out} is the run folder itself; choose another")
        shutil.rmtree(out)
    run = load_run(run_dir)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        exporter(run, out)
    except BaseException:
        if made or overwrite:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out
