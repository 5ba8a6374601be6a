"""Use and share a trained run: predict on new audio, export to the formats others load.

- ``run``: :func:`load_run` (a run folder or a ``kit`` export → :class:`LoadedRun`, whose
  ``predict`` reads files or arrays of any length with the run's feature pipeline and segment
  protocol and returns a tidy table);
- ``export_hf``: a ``transformers`` folder (``pipeline("audio-classification", model=OUT)``),
  the method merged into the stock architecture where it computes the same thing;
- ``export_peft``: LoRA as a PEFT adapter on the exported stock backbone;
- ``export_kit``: the kit's own format for every method (trainable weights, params, labels);
- ``card``: the model card (``README.md``) every export writes;
- ``export``: :func:`export_run`, the one entry point of the three formats.

Sits beside ``experiments`` (it reads run folders) and may import every package below ``views``:
``config``, ``errors``, ``data``, ``backbones``, ``methods``, ``model``, ``training``,
``efficiency``, ``experiments``.
"""

from .export import FORMATS, export_run
from .run import LoadedRun, load_run

__all__ = ["FORMATS", "LoadedRun", "export_run", "load_run"]
