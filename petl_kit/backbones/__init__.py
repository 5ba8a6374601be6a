"""Backbone families: one record per family, the anatomy, loading, built-in tiny models.

A family (AST, wav2vec 2.0, HuBERT, MERT, MusicFM, the from-scratch baseline) is one
:class:`~petl_kit.backbones.registry.Family` record, built and registered by the family's own
file (``ast``, ``wav2vec2`` for wav2vec 2.0 and HuBERT, ``mert``, ``musicfm``, ``scratch``):
everything the rest of the kit needs to know about it (input kind, sample and frame/patch rate,
special tokens, position embeddings, LayerNorms, tiny test config, feature extractor, loader).
``registry`` holds the record type and what reads it (``load_backbone``, ``get_family``);
``anatomy`` is the one place that knows each family's block internals. ``pretrained`` holds the
built-in tiny checkpoints (``builtin:tiny-ast``, ...), which pre-train a model once and so reach
up into ``model`` and ``training``: the one genuine recursion of the package, imported inside the
function that needs it.

May import: ``config``, ``errors``, ``data`` (feature extractors).
"""

# registration side effect: each family file registers its record; this order is list_backbones()'s
from . import ast, wav2vec2, mert, musicfm, scratch  # noqa: F401, I001  # fmt: skip
from . import anatomy
from .extractors import feature_extractor, feature_extractor_for
from .registry import (
    FAMILIES,
    CheckpointError,
    Family,
    get_family,
    list_backbones,
    load_backbone,
    register_family,
    tiny_config,
    unregister_family,
)

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "Family",
    "anatomy",
    "feature_extractor",
    "feature_extractor_for",
    "get_family",
    "list_backbones",
    "load_backbone",
    "register_family",
    "tiny_config",
    "unregister_family",
]
