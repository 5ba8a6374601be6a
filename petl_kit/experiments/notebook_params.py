"""Notebook parameters: read a parameters cell, validate values against it, load params files.

papermill only warns on unknown parameters (design §6); these checks make a wrong key or a
wrong-typed value an error that names the key, the value, the expected type and the file.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .provenance import load_yaml


def _comments(source: str) -> dict[int, str]:
    out = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def notebook_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{name: {"type", "default", "help"}}`` of the notebook's cell tagged ``parameters``.

    Same result as ``papermill.inspect_notebook`` where that works, but read with ``ast``:
    papermill's regex skips annotations such as ``str | None`` and any line whose comment holds
    an ``=``. ``type`` is the annotation's text (or the default's type name when unannotated);
    ``default`` is the literal value; ``help`` the trailing comment.
    """
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} not found")
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ConfigError(f"{path} has no cell tagged 'parameters'")
    source = cells[0].source
    comments, params = _comments(source), {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            name, annotation = node.target.id, ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            if not isinstance(node.targets[0], ast.Name):
                continue
            name, annotation = node.targets[0].id, None
        else:
            continue
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            default = ast.unparse(node.value)
        if annotation is None:
            annotation = "Any" if default is None else type(default).__name__
        params[name] = {
            "type": annotation,
            "default": default,
            "help": comments.get(node.end_lineno, ""),
        }
    return params


def notebook_trains(path: str | Path) -> bool:
    """Whether the notebook trains one run (writes a completed ``metrics.json`` through
    ``run_experiment``): its metadata ``{"petl_kit": {"trains": false}}`` marks an analysis
    notebook (data preparation, dashboards, comparisons), judged by its execution alone.
    Without the field a notebook trains (every method notebook)."""
    import nbformat

    meta = nbformat.read(Path(path), as_version=4).metadata.get("petl_kit", {})
    trains = meta.get("trains", True) if isinstance(meta, dict) else meta
    if not isinstance(trains, bool):
        raise ConfigError(
            f"{path}: notebook metadata petl_kit.trains = {trains!r}; expected true or false "
            '(e.g. "petl_kit": {"trains": false} for an analysis notebook)'
        )
    return trains


_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
    "list": lambda v: isinstance(v, (list, tuple)),
    "tuple": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, dict),
}


def type_matches(value: Any, annotation: str) -> bool:
    """Does ``value`` fit the annotation text (``int``, ``float`` (ints too), ``str | None``...)?"""
    arms = [a.strip().split("[")[0] for a in annotation.split("|")]
    if any(a not in _CHECKS for a in arms):  # an annotation we do not model: accept
        return True
    return any(_CHECKS[a](value) for a in arms)


def validate_params(notebook: str | Path, params: dict[str, Any], source: str = "parameters"):
    """Check every key of ``params`` against the notebook's parameters cell.

    Raises:
        ConfigError naming the key, the value, the expected type, the notebook and ``source``
        (the params file, or ``-p`` for command-line overrides).
    """
    spec = notebook_parameters(notebook)
    if not isinstance(params, dict):
        raise ConfigError(
            f"{source}: expected a mapping of parameters, got {type(params).__name__}"
        )
    unknown = sorted(k for k in params if k not in spec)
    if unknown:
        raise ConfigError(
            f"{source}: unknown parameter(s) {', '.join(map(repr, unknown))} for notebook "
            f"{notebook}; valid keys: {', '.join(spec)}"
        )
    for key, value in params.items():
        expected = spec[key]["type"]
        if not type_matches(value, expected):
            raise ConfigError(
                f"{source}: {key} = {value!r} ({type(value).__name__}) is not valid for notebook "
                f"{notebook}; expected {expected}"
            )
    return params


def resolve_params(notebook: str | Path, params: dict[str, Any]) -> dict[str, Any]:
    """The notebook's defaults updated with ``params``: what the run will actually use."""
    return {**{k: v["default"] for k, v in notebook_parameters(notebook).items()}, **params}


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping of parameters (an empty file is ``{}``; nested mappings are errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except Exception as err:  # yaml.YAMLError and its subclasses
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a flat mapping of key: value, got {type(data).__name__}"
        )
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r} is not a string")
        if isinstance(value, dict):
            raise ConfigError(
                f"{path}: {key} is a nested mapping; params files are flat (papermill merges "
                "shallowly): write each value as its own top-level key"
            )
    return data
