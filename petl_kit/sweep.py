"""Sweeps: many runs from one YAML file — listed runs and grids — resumable, optionally parallel.

```yaml
experiment: paper_grid          # runs go to <outputs>/paper_grid/
params: {epochs: 3}             # shared by every run (flat)
runner: papermill               # papermill (default): execute the notebook | inprocess
executor: {name: local, workers: 2}   # optional: submitit (local | slurm | debug), see below
grid:                           # the cartesian product of its axes, in the order written
  method:                       # a list of values, or value -> params file / flat mapping
    linear: params/quickstart/linear.yaml
    lora: {lr: 0.01}
  dataset:
    synthetic: {n_per_class: 80}
    esc50: {data_path: /data/ESC-50}
  fold: all                     # every fold of the dataset's protocol (or a list)
  seed: [0, 1]                  # any flat parameter can be an axis: lr: [0.001, 0.01]
runs:                           # listed runs; an entry may also be {grid: ..., params: ...}
  - notebook: notebooks/10_linear.ipynb
    params_file: params/quickstart/linear.yaml     # and/or
    params: {lr: 0.001}                            # per-run overrides
    name: linear                                   # optional; default: the method
```

Axes: ``notebook`` (default: the notebook in ``notebooks/`` whose ``method`` is the run's),
``method``, ``dataset``, ``seed`` and any other notebook parameter, plus the protocol axes
``fold`` (int or ``all``), ``shots`` (k examples per class) and ``episode`` (few-shot episode e,
drawn with seed e; default 0). Protocol axes need ``runner: inprocess``: the runs call
:func:`petl_kit.runs.run_experiment` on the fold's / episode's splits (the notebooks have no fold
parameter). A run's name is its method (or notebook) plus the values of every axis with more than
one value (``lora-esc50-f3-s1``), or the grid's ``name`` template (``"{method}-{seed}"``).

Precedence: shared ``params`` < ``params_file`` < the entry's ``params`` < the grid's axis
bundles and values, in the order the axes are written; ``experiment`` always comes from the sweep.
Relative paths are looked up from the current folder, then from the sweep file's folder and each
folder above it. Every run is validated before any starts.

Running (:func:`run_sweep`): a run whose resolved parameters (and fold/episode) equal those of a
completed run in the experiment folder is skipped; a failing run is recorded (``status: failed``
and its traceback in ``metrics.json``) and the sweep goes on; a progress bar counts the runs.
Every run gets a fresh folder (never another run's). ``workers`` > 1 or an ``executor`` sends runs
to submitit (``AutoExecutor``; ``name``: ``local`` (processes on this machine), ``slurm`` (with
any submitit option: ``slurm_partition``, ``timeout_min``, ``gpus_per_node``...) or ``debug``),
at most ``workers`` at a time — one code path for a laptop and a cluster.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .provenance import canonical, check_segment, experiment_dir, load_yaml, read_json
from .runs import load_params_file, resolve_params, run_notebook, validate_params

_SWEEP_KEYS = {"experiment", "params", "runs", "grid", "runner", "executor"}
_RUN_KEYS = {"notebook", "params_file", "params", "name"}
_GRID_ENTRY_KEYS = {"grid", "params_file", "params", "name"}
PROTOCOL_AXES = ("fold", "shots", "episode")
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


@lru_cache(maxsize=8)
def _method_notebooks(folder: Path) -> dict[str, Path]:
    from .methods import get_method
    from .runs import notebook_parameters

    out = {}
    for nb in sorted(folder.glob("*.ipynb")):
        default = notebook_parameters(nb).get("method", {}).get("default")
        if isinstance(default, str):
            out.setdefault(get_method(default).name, nb)
    return out


def method_notebook(method: str, sweep_file: Path) -> Path:
    """The notebook in ``notebooks/`` (near the sweep file) whose ``method`` default is it."""
    from .methods import get_method

    name = get_method(method).name
    found = _method_notebooks(_find("notebooks", sweep_file, "notebooks folder"))
    if name not in found:
        raise ConfigError(
            f"{sweep_file}: no notebook has method {name!r}; give `notebook`. Method notebooks: "
            + ", ".join(f"{m} ({p.name})" for m, p in found.items())
        )
    return found[name]


def _flat(value: Any, where: str) -> dict:
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
    return _flat(value, where), where


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


class _Planner:
    """Turns the sweep file's entries into validated :class:`RunSpec` objects."""

    def __init__(self, file: Path, experiment: str, shared: dict, runner: str):
        self.file, self.experiment, self.shared, self.runner = file, experiment, shared, runner

    def layers(self, entry: dict, where: str) -> list[tuple[dict, str]]:
        """(params, source) in precedence order: shared, the entry's params_file, its params."""
        out = [(self.shared, f"{self.file} (shared params)")]
        if entry.get("params_file"):
            path = _find(entry["params_file"], self.file, "params_file")
            out.append((load_params_file(path), str(path)))
        out.append((_flat(entry.get("params") or {}, f"{where}.params"), f"{where}.params"))
        return out

    def spec(self, notebook, layers, name, where, protocol=None) -> RunSpec:
        params, source = {}, str(self.file)
        for values, src in layers:
            validate_params(notebook, values, source=src)
            params.update(values)
            if values and not src.startswith(str(self.file)):
                source = src  # the run's own params file names it best
        params["experiment"] = self.experiment
        resolved = resolve_params(notebook, params)
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
                if key not in PROTOCOL_AXES and key != "notebook":
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
                from .data import num_folds

                folds = list(range(num_folds(resolve_params(notebook, merged)["dataset"])))
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
        name = str(merged.get("method") or Path(str(values.get("notebook", notebook))).stem)
        for key, opts in axes:
            several = len(opts) > 1 or (key == "fold" and many_folds)
            if key not in ("method", "notebook") and several:
                name += "-" + _label(key, values[key])
        return name


def plan_sweep(file: str | Path, *, runner: str | None = None) -> list[RunSpec]:
    """Read and validate a sweep file (module docstring); every run is checked before any starts.

    ``runner`` overrides the file's ``runner``.
    """
    file = Path(file)
    data = read_sweep(file)
    experiment = check_segment(data.get("experiment") or file.stem, f"{file}: experiment")
    runner = runner or data.get("runner") or "papermill"
    if runner not in RUNNERS:
        raise ConfigError(f"{file}: runner {runner!r}; valid runners: {', '.join(RUNNERS)}")
    shared = _flat(data.get("params") or {}, f"{file}: params")
    planner = _Planner(file, experiment, shared, runner)
    entries = [(f"{file}: grid", {"grid": data["grid"]})] if "grid" in data else []
    entries += [(f"{file}: runs[{i}]", e) for i, e in enumerate(data.get("runs") or [])]
    specs = []
    for where, entry in entries:
        if not isinstance(entry, dict) or not ({"notebook", "grid"} & set(entry)):
            raise ConfigError(f"{where}: expected a mapping with `notebook` (a run) or `grid`")
        if "grid" in entry:
            specs.extend(planner.grid(entry, where))
        else:
            specs.append(planner.run(entry, where))
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.key in seen:
            raise ConfigError(f"{file}: runs {seen[spec.key]!r} and {spec.name!r} are the same run "
                              "(same resolved parameters)")  # fmt: skip
        seen[spec.key] = spec.name
    return specs


def read_sweep(file: Path) -> dict:
    """The sweep file's top-level mapping, its keys checked."""
    if not file.is_file():
        raise FileNotFoundError(f"sweep file {file} not found")
    try:
        data = load_yaml(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not (
        isinstance(data.get("runs"), list) or isinstance(data.get("grid"), dict)
    ):
        raise ConfigError(f"{file}: expected a mapping with `experiment`, `params` and a `runs` "
                          "list and/or a `grid` mapping")  # fmt: skip
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {unknown}; valid: {sorted(_SWEEP_KEYS)}")
    return data


def completed_runs(experiment: str) -> dict[str, Path]:
    """``{run key: run_dir}`` of the completed runs of ``experiment`` (:attr:`RunSpec.key`)."""
    out = {}
    root = experiment_dir(experiment)
    for run_dir in sorted(root.glob("*/")) if root.is_dir() else []:
        metrics = read_json(run_dir / "metrics.json") or {}
        if metrics.get("status") != "completed":
            continue
        key = (read_json(run_dir / "sweep.json") or {}).get("key")
        if key is None and (run_dir / "params.yaml").is_file():  # a run made outside a sweep
            key = canonical(yaml.safe_load((run_dir / "params.yaml").read_text()) or {})
        if key is not None:
            out[key] = run_dir
    return out


def execute(spec: RunSpec, run_dir: Path | None = None) -> Path:
    """Run one planned run (raises :class:`~petl_kit.runs.RunFailed` when it fails)."""
    from .executors import run_inprocess

    if spec.runner == "inprocess":
        return run_inprocess(spec, run_dir)
    return run_notebook(spec.notebook, spec.params, experiment=spec.experiment, name=spec.name,
                        source=spec.source, run_dir=run_dir)  # fmt: skip


def run_sweep(
    file: str | Path,
    *,
    resume: bool = True,
    workers: int | None = None,
    executor: str | None = None,
    runner: str | None = None,
    log: Callable[[str], Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every run of the sweep (module docstring); ``workers``/``executor``/``runner``
    override the file's.

    Returns one record per run, in plan order: ``{'name', 'status': 'completed' | 'skipped' |
    'failed', 'run_dir', 'seconds', 'error'}``.
    """
    from .executors import executor_options, run_specs

    specs = plan_sweep(file, runner=runner)
    options = executor_options(read_sweep(Path(file)).get("executor"), Path(file),
                               workers=workers, name=executor)  # fmt: skip
    done = completed_runs(specs[0].experiment) if resume and specs else {}
    return run_specs(specs, done, options, log=log, progress=progress)
