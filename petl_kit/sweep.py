"""Sweeps: many notebook runs from one YAML file, sequential and resumable.

```yaml
experiment: quickstart          # runs go to <outputs>/quickstart/
params: {epochs: 3}             # shared by every run (flat)
runs:
  - notebook: notebooks/10_linear.ipynb
    params_file: params/quickstart/linear.yaml     # and/or
    params: {lr: 0.001}                            # per-run overrides
    name: linear                                   # optional; default: the method
```

Precedence: shared ``params`` < ``params_file`` < the run's ``params``; ``experiment`` always
comes from the sweep. Relative paths are looked up from the current folder, then from the sweep
file's folder and each folder above it. A run whose resolved parameters equal those of a completed
run in the experiment folder is skipped; a failing run is recorded (``status: failed``) and the
sweep goes on.

The sweep is a plan (:func:`plan_sweep`, pure) and an executor (:func:`execute`, one run), so a
parallel or cluster executor can map ``execute`` over the pending specs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .provenance import canonical, check_segment, experiment_dir, load_yaml, read_json
from .runs import RunFailed, load_params_file, resolve_params, run_notebook, validate_params

_SWEEP_KEYS = {"experiment", "params", "runs"}
_RUN_KEYS = {"notebook", "params_file", "params", "name"}


@dataclass(frozen=True)
class RunSpec:
    """One planned run: notebook, the params to inject, and the fully resolved params."""

    notebook: Path
    params: dict[str, Any]
    resolved: dict[str, Any]
    name: str
    experiment: str
    source: str


def _find(path: str, sweep_file: Path, what: str) -> Path:
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    if not candidate.is_absolute():
        for folder in (sweep_file.parent.resolve(), *sweep_file.parent.resolve().parents):
            if (folder / candidate).exists():
                return folder / candidate
    raise FileNotFoundError(
        f"{sweep_file}: {what} {path!r} not found (looked in . and above the sweep file)"
    )


def plan_sweep(file: str | Path) -> list[RunSpec]:
    """Read and validate a sweep file; every run is checked before any starts."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"sweep file {file} not found")
    try:
        data = load_yaml(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ConfigError(
            f"{file}: expected a mapping with `experiment`, `params` and a `runs` list"
        )
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {unknown}; valid: {sorted(_SWEEP_KEYS)}")
    experiment = check_segment(data.get("experiment") or file.stem, f"{file}: experiment")
    shared = data.get("params") or {}
    if not isinstance(shared, dict) or any(isinstance(v, dict) for v in shared.values()):
        raise ConfigError(f"{file}: `params` must be a flat mapping")
    specs = []
    for i, run in enumerate(data["runs"]):
        where = f"{file}: runs[{i}]"
        if not isinstance(run, dict) or "notebook" not in run:
            raise ConfigError(f"{where}: expected a mapping with `notebook`")
        bad = sorted(set(run) - _RUN_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; valid: {sorted(_RUN_KEYS)}")
        notebook = _find(run["notebook"], file, "notebook")
        params, source = dict(shared), f"{file} (shared params)"
        validate_params(notebook, params, source=source)
        if run.get("params_file"):
            source = str(_find(run["params_file"], file, "params_file"))
            params.update(validate_params(notebook, load_params_file(source), source=source))
        own = run.get("params") or {}
        validate_params(notebook, own, source=f"{where}.params")
        params = {**params, **own, "experiment": experiment}
        resolved = resolve_params(notebook, params)
        name = run.get("name") or resolved.get("method") or notebook.stem
        specs.append(RunSpec(notebook, params, resolved, check_segment(name, f"{where}.name"),
                             experiment, source))  # fmt: skip
    return specs


def completed_runs(experiment: str) -> dict[str, Path]:
    """``{canonical(params): run_dir}`` of the completed runs of ``experiment``."""
    out = {}
    root = experiment_dir(experiment)
    for run_dir in sorted(root.glob("*/")) if root.is_dir() else []:
        metrics = read_json(run_dir / "metrics.json") or {}
        params_file = run_dir / "params.yaml"
        if metrics.get("status") != "completed" or not params_file.is_file():
            continue
        params = yaml.safe_load(params_file.read_text()) or {}
        out[canonical(params)] = run_dir
    return out


def execute(spec: RunSpec) -> Path:
    """Run one planned run (raises :class:`~petl_kit.runs.RunFailed` when it fails)."""
    return run_notebook(spec.notebook, spec.params, experiment=spec.experiment, name=spec.name,
                        source=spec.source)  # fmt: skip


def run_sweep(
    file: str | Path, *, resume: bool = True, log: Callable[[str], Any] = print
) -> list[dict[str, Any]]:
    """Run every run of the sweep in order.

    Returns one record per run: ``{'name', 'status': 'completed' | 'skipped' | 'failed',
    'run_dir', 'seconds', 'error'}``.
    """
    specs = plan_sweep(file)
    done = completed_runs(specs[0].experiment) if resume and specs else {}
    records = []
    for i, spec in enumerate(specs, 1):
        head = f"[{i}/{len(specs)}] {spec.name}"
        previous = done.get(canonical(spec.resolved))
        if previous is not None:
            log(f"{head}: skipped, already completed in {previous}")
            records.append({"name": spec.name, "status": "skipped", "run_dir": previous,
                            "seconds": 0.0, "error": None})  # fmt: skip
            continue
        log(f"{head}: running {spec.notebook} ...")
        t0 = time.perf_counter()
        try:
            run_dir = execute(spec)
            status, error = "completed", None
        except RunFailed as err:
            run_dir, status, error = err.run_dir, "failed", str(err)
        seconds = time.perf_counter() - t0
        metrics = read_json(run_dir / "metrics.json") or {}
        score = _score_text(metrics)
        log(f"{head}: {status} in {seconds:.1f} s{score}  → {run_dir}")
        if error:
            log(f"    {error.splitlines()[0][:500]}")
        records.append({"name": spec.name, "status": status, "run_dir": run_dir,
                        "seconds": seconds, "error": error})  # fmt: skip
    counts = {s: sum(r["status"] == s for r in records) for s in ("completed", "skipped", "failed")}
    log("sweep done: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return records


def _score_text(metrics: dict) -> str:
    test = metrics.get("test") or {}
    for key in ("accuracy", "mAP"):
        if isinstance(test.get(key), (int, float)):
            return f", test {key} {test[key]:.3f}"
    return ""
