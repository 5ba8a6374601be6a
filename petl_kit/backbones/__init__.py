"""Backbone families: one record per family, the anatomy, loading, built-in tiny models.

A family (AST, wav2vec 2.0, HuBERT, MERT, MusicFM, the from-scratch baseline) is one
:class:`~petl_kit.backbones.registry.Family` record in ``FAMILIES``: everything the rest of the
kit needs to know about it (input kind, sample and frame/patch rate, special tokens, position
embeddings, LayerNorms, tiny test config, feature extractor, loader). ``anatomy`` is the one place
that knows each family's block internals. ``pretrained`` holds the built-in tiny checkpoints
(``builtin:tiny-ast``, ...), which pre-train a model once and so reach up into ``model`` and
``training``: the one genuine recursion of the package, imported inside the function that needs it.

May import: ``config``, ``errors``, ``data`` (feature extractors).
"""

from .registry import (
    FAMILIES,
    CheckpointError,
    Family,
    feature_extractor,
    get_family,
    list_backbones,
    load_backbone,
    tiny_config,
)

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "Family",
    "feature_extractor",
    "get_family",
    "list_backbones",
    "load_backbone",
    "tiny_config",
]
