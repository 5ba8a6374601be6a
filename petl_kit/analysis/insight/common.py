"""Helpers the looks share: where a parameter sits (layer, module) and a capped batch loop."""

from __future__ import annotations

import re
from collections.abc import Iterator

_LAYER = re.compile(r"\.(?:layers?|blocks?)\.(\d+)\.")


def where(name: str) -> tuple[str, str]:
    """``(layer, module)`` of a parameter name: ``('3', 'q_proj')``, ``('head', 'head')``."""
    rel = name.removeprefix("backbone.")
    module = rel.rsplit(".", 1)[0].split(".")[-1]  # the module that owns the tensor
    match = _LAYER.search("." + rel)
    if match:
        return match.group(1), module
    return ("head" if name.startswith("head.") else rel.split(".")[0]), module


def batches(loader, max_batches: int | None) -> Iterator[dict]:
    """The first ``max_batches`` batches of ``loader`` (None: all)."""
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch
