"""Sweep plans: listed runs and grids expanded into validated :class:`RunSpec` objects.

The YAML keys and the precedence of parameters are described in :mod:`petl_kit.sweep`; this
module turns one entry (a run, or a grid of axes) into runs, checking every value against the
notebook that will run it before anything starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .provenance import canonical, check_segment
from .runs import load_params_file, type_matches, validate_params

_RUN_KEYS = {"notebook", "params_file", "params", "name"}
_GRID_ENTRY_KEYS = {"grid", "params_file", "params", "name"}
PROTOCOL_AXES = ("fold", "shots", "episode")
LABEL_AXES = ("notebook", "variant")  # not parameters: they pick the notebook / name a setting
RUNNERS = ("papermill", "inprocess")
_SHORT = {"seed": "s", "fold": "f", "shots": "k", "episode": "e"}


@dataclass(frozen=True)
class RunSpec:
    """One planned run: notebook, the params to inject, the fully resolved params.

    ``protocol``: ``{'fold', 'shots', 'episode'}`` values of a grid's protocol axes (empty for a
    plain run); ``runner``: ``papermill`` or ``inprocess``.
    """

    notebook: Path
    params: dict[str, Any]
    resolved: dict[str, Any]
    name: str
    experiment: str
    source: str
    protocol: dict[str, Any] = field(default_factory=dict)
    runner: str = "papermill"

    @property
    def key(self) -> str:
        """What makes two runs the same run (resolved params + protocol; ``run_dir`` left out)."""
        if not self.protocol:
            return canonical(self.resolved)
        return canonical({**self.resolved, "protocol": self.protocol})


def _find(path: str, sweep_file: Path, what: str) -> Path:
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate.resolve()
    if not candidate.is_absolute():
        for folder in (sweep_file.parent.resolve(), *sweep_file.parent.resolve().parents):
            if (folder / candidate).exists():
                return folder / candidate
    raise FileNotFoundError(
        f"{sweep_file}: {what} {path!r} not found (looked in . and above the sweep file)"
    )


def _method_notebooks(folder: Path) -> dict[str, Path]:
    from ..methods import get_method

    out = {}
    for nb in sorted(folder.glob("*.ipynb")):
        try:
            default = _spec(nb).get("method", {}).get("default")
        except Exception:  # a notebook being written (or broken) is not this plan's business
            continue
        if isinstance(default, str):
            out.setdefault(get_method(default).name, nb)
    return out


def method_notebook(method: str, sweep_file: Path) -> Path:
    """The notebook in ``notebooks/`` (near the sweep file) whose ``method`` default is it."""
    from ..methods import get_method

    name = get_method(method).name
    found = _method_notebooks(_find("notebooks", sweep_file, "notebooks folder"))
    if name not in found:
        raise ConfigError(
            f"{sweep_file}: no notebook has method {name!r}; give `notebook`. Method notebooks: "
            + ", ".join(f"{m} ({p.name})" for m, p in found.items())
        )
    return found[name]


@lru_cache(maxsize=64)
def _parameters(path: str, mtime_ns: int) -> dict[str, dict[str, Any]]:
    from .runs import notebook_parameters

    return notebook_parameters(path)


def _spec(notebook: Path) -> dict[str, dict[str, Any]]:
    """The notebook's parameters, read once per version of the file (a grid checks many runs)."""
    return _parameters(str(notebook), notebook.stat().st_mtime_ns)


def _validate(notebook: Path, values: Any, source: str) -> None:
    spec = _spec(notebook)
    fits = isinstance(values, dict) and all(
        k in spec and type_matches(v, spec[k]["type"]) for k, v in values.items()
    )
    if not fits:  # let validate_params word the error (file, key, value, valid choices)
        validate_params(notebook, values, source=source)


def _resolve(notebook: Path, params: dict) -> dict:
    """The notebook's defaults updated with ``params`` (``runs.resolve_params``, cached)."""
    return {**{k: v["default"] for k, v in _spec(notebook).items()}, **params}


def flat_params(value: Any, where: str) -> dict:
    if not isinstance(value, dict) or any(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{where}: expected a flat mapping of parameters, got {value!r}")
    return dict(value)


def _bundle(value: Any, file: Path, where: str) -> tuple[dict, str]:
    """An axis value's extra params: None, a params file path or a flat mapping."""
    if value is None:
        return {}, where
    if isinstance(value, str):
        path = _find(value, file, "params file")
        return load_params_file(path), str(path)
    return flat_params(value, where), where


def _axes(grid: Any, file: Path, where: str) -> list[tuple[str, list[tuple[Any, dict, str]]]]:
    """``[(axis, [(value, bundle params, bundle source), ...]), ...]``."""
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{where}: expected a mapping of axis: [values]")
    axes = []
    for key, values in grid.items():
        if isinstance(values, dict):
            opts = [(v, *_bundle(b, file, f"{where}.{key}.{v}")) for v, b in values.items()]
        elif isinstance(values, list) and values:
            opts = [(v, {}, f"{where}.{key}") for v in values]
        elif key == "fold" and values == "all":
            opts = [("all", {}, f"{where}.fold")]
        else:
            raise ConfigError(
                f"{where}.{key}: expected a non-empty list of values or a mapping "
                f"value -> params (file or flat mapping), got {values!r}"
            )
        axes.append((key, opts))
    return axes


def _check_protocol(protocol: dict, where: str) -> dict:
    for key, value in protocol.items():
        low = 1 if key == "shots" else 0
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok and not (key == "fold" and value == "all"):
            what = "'all' or an int >= 0" if key == "fold" else f"an int >= {low}"
            raise ConfigError(f"{where}: {key} = {value!r}; expected {what}")
    if "episode" in protocol and "shots" not in protocol:
        raise ConfigError(f"{where}: `episode` needs a `shots` axis (k examples per class)")
    if "shots" in protocol:
        protocol.setdefault("episode", 0)
    return protocol


def _label(key: str, value: Any) -> str:
    text = f"{_SHORT.get(key, '' if key == 'dataset' else key)}{value}"
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)


class Planner:
    """Turns the sweep file's entries into validated :class:`RunSpec` objects."""

    def __init__(self, file: Path, experiment: str, shared: dict, runner: str,
                 overrides: dict | None = None):  # fmt: skip
        self.file, self.experiment, self.shared, self.runner = file, experiment, shared, runner
        self.overrides = dict(overrides or {})  # command-line -p: beat every layer

    def layers(self, entry: dict, where: str) -> list[tuple[dict, str]]:
        """(params, source) in precedence order: shared, the entry's params_file, its params."""
        out = [(self.shared, f"{self.file} (shared params)")]
        if entry.get("params_file"):
            path = _find(entry["params_file"], self.file, "params_file")
            out.append((load_params_file(path), str(path)))
        out.append((flat_params(entry.get("params") or {}, f"{where}.params"), f"{where}.params"))
        return out

    def spec(self, notebook, layers, name, where, protocol=None) -> RunSpec:
        params, source = {}, str(self.file)
        for values, src in [*layers, (self.overrides, "command-line -p")]:
            _validate(notebook, values, src)
            params.update(values)
            if values and not src.startswith((str(self.file), "command-line")):
                source = src  # the run's own params file names it best
        params["experiment"] = self.experiment
        resolved = _resolve(notebook, params)
        protocol = _check_protocol(dict(protocol or {}), where)
        if self.runner == "inprocess" or protocol:
            self._check_inprocess(notebook, resolved, where, protocol)
        name = name or resolved.get("method") or notebook.stem
        check_segment(name, f"{where}: run name")
        return RunSpec(notebook, params, resolved, name, self.experiment, source, protocol,
                       self.runner)  # fmt: skip

    def _check_inprocess(self, notebook: Path, resolved: dict, where: str, protocol: dict):
        from .runs import known_keys

        if self.runner != "inprocess":
            raise ConfigError(
                f"{where}: {', '.join(protocol)} need(s) `runner: inprocess` (the notebooks have "
                "no fold/episode parameter); valid runners: " + ", ".join(RUNNERS)
            )
        if not isinstance(resolved.get("method"), str):
            raise ConfigError(f"{where}: runner inprocess needs a method notebook; {notebook} "
                              "has no `method` parameter")  # fmt: skip
        extra = sorted(set(resolved) - set(known_keys(resolved["method"])))
        if extra:
            raise ConfigError(f"{where}: runner inprocess cannot pass {extra} of {notebook} to "
                              "run_experiment; use runner papermill")  # fmt: skip

    def run(self, entry: dict, where: str) -> RunSpec:
        bad = sorted(set(entry) - _RUN_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; valid: {sorted(_RUN_KEYS)}")
        notebook = _find(entry["notebook"], self.file, "notebook")
        return self.spec(notebook, self.layers(entry, where), entry.get("name"), where)

    def grid(self, entry: dict, where: str) -> list[RunSpec]:
        bad = sorted(set(entry) - _GRID_ENTRY_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; valid: {sorted(_GRID_ENTRY_KEYS)}")
        gwhere = where if where.endswith("grid") else f"{where}.grid"
        axes = _axes(entry["grid"], self.file, gwhere)
        template, specs = entry.get("name"), []
        for combo in itertools.product(*(opts for _, opts in axes)):
            values = {key: opt[0] for (key, _), opt in zip(axes, combo, strict=True)}
            layers = self.layers(entry, where)
            for (key, _), (value, bundle, src) in zip(axes, combo, strict=True):
                layers.append((bundle, src))
                if key not in PROTOCOL_AXES and key not in LABEL_AXES:
                    layers.append(({key: value}, f"{gwhere}.{key}"))
            merged = {k: v for layer, _ in layers for k, v in layer.items()}
            if "notebook" in values:
                notebook = _find(str(values["notebook"]), self.file, "notebook")
            elif isinstance(merged.get("method"), str):
                notebook = method_notebook(merged["method"], self.file)
            else:
                raise ConfigError(f"{gwhere}: give a `method` or a `notebook` axis (or "
                                  "`method` in params)")  # fmt: skip
            protocol = {k: values[k] for k in PROTOCOL_AXES if k in values}
            folds = [protocol.get("fold")]
            if protocol.get("fold") == "all":
                from ..data.protocols import dataset_folds

                resolved = _resolve(notebook, merged)  # a csv manifest: its own fold labels
                folds = dataset_folds(resolved["dataset"], resolved.get("data_path"))
            for fold in folds:
                if fold is not None:
                    protocol["fold"] = values["fold"] = fold
                name = self._name(template, values, axes, merged, notebook, len(folds) > 1, where)
                specs.append(self.spec(notebook, layers, name, where, protocol))
        return specs

    def _name(self, template, values, axes, merged, notebook, many_folds, where) -> str:
        if template:
            try:
                return template.format(**{k: _label("", v) for k, v in values.items()})
            except (KeyError, IndexError, ValueError) as err:
                raise ConfigError(f"{where}.name: {template!r} names an unknown axis ({err}); "
                                  f"axes: {sorted(values)}") from err  # fmt: skip
        base = "variant" if "variant" in values else "method"
        name = _label("", values["variant"]) if base == "variant" else None
        name = name or str(merged.get("method") or notebook.stem)
        for key, opts in axes:
            several = len(opts) > 1 or (key == "fold" and many_folds)
            if key not in (base, "notebook") and several:
                name += "-" + _label(key, values[key])
        return name
