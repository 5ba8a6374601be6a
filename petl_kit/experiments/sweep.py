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
``method``, ``dataset``, ``seed`` and any other notebook parameter; ``variant``, whose values only
name settings and whose bundles hold their params (``variant: {conformer_pfeiffer:
params/paper1/table1/esc50/conformer_pfeiffer.yaml, ...}``); and the protocol axes
``fold`` (int or ``all``), ``shots`` (k examples per class) and ``episode`` (few-shot episode e,
drawn with seed e; default 0). Protocol axes need ``runner: inprocess``: the runs call
:func:`petl_kit.runs.run_experiment` on the fold's / episode's splits (the notebooks have no fold
parameter). A run's name is its method (or notebook) plus the values of every axis with more than
one value (``lora-esc50-f3-s1``), or the grid's ``name`` template (``"{method}-{seed}"``).

Precedence: shared ``params`` < ``params_file`` < the entry's ``params`` < the grid's axis
bundles and values, in the order the axes are written < command-line ``-p KEY VALUE``;
``experiment`` always comes from the sweep. A grid entry may also hold ``params_file``,
``params`` and ``name``.
Relative paths are looked up from the current folder, then from the sweep file's folder and each
folder above it. Every run is validated before any starts.

Running (:func:`run_sweep`): a run whose resolved parameters (and fold/episode) equal those of a
completed run in the experiment folder is skipped; a failing run is recorded (``status: failed``
and its traceback in ``metrics.json``) and the sweep goes on; a progress bar counts the runs.
Every run gets a fresh folder (never another run's), claimed before it starts; each planned run
is claimed by its key first, so two sweeps on one experiment never run the same run (the second
skips what the first holds). A resumed sweep marks the runs whose process died ``interrupted``
(:mod:`petl_kit.experiments.claims`) and reruns them. ``workers`` > 1 or an ``executor`` sends runs
to submitit (``AutoExecutor``; ``name``: ``local`` (processes on this machine; ``timeout_min``
a week unless given), ``slurm`` (with
any submitit option: ``slurm_partition``, ``timeout_min``, ``gpus_per_node``...) or ``debug``),
at most ``workers`` at a time — one code path for a laptop and a cluster (``slurm`` needs
``timeout_min``; ``state_timeout_s``, default 120: a job the cluster dropped without a result is
given up on after it; a cancelled job is recorded ``cancelled``); ``none`` runs them in
this process, one after another (the default). ``devices: N`` trains each run data-parallel on
N devices (``local`` or ``slurm``, ``runner: inprocess``): one job of N tasks on one node, each
task a ``torch.distributed`` process (:mod:`petl_kit.training.distributed`).
``runner: papermill`` keeps each executed notebook in its run folder; ``inprocess`` skips the
kernel start (a few seconds a run) and the notebook.

Results: ``python -m petl_kit report EXPERIMENT`` (:mod:`petl_kit.report`) tabulates the runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError
from .claims import mark_interrupted
from .executors import check_devices, completed_runs, executor_options, run_specs

# RUNNERS, RunSpec and method_notebook are part of the sweep API
from .plan import RUNNERS, Planner, RunSpec, flat_params, method_notebook  # noqa: F401
from .provenance import check_segment, load_yaml

_SWEEP_KEYS = {"experiment", "params", "runs", "grid", "runner", "executor"}


def plan_sweep(
    file: str | Path, *, runner: str | None = None, overrides: dict | None = None
) -> list[RunSpec]:
    """Read and validate a sweep file (module docstring); every run is checked before any starts.

    ``runner`` overrides the file's ``runner``; ``overrides`` (``-p KEY VALUE`` of the command
    line) beat every parameter of every run.
    """
    file = Path(file)
    data = read_sweep(file)
    experiment = check_segment(data.get("experiment") or file.stem, f"{file}: experiment")
    runner = runner or data.get("runner") or "papermill"
    if runner not in RUNNERS:
        raise ConfigError(f"{file}: runner {runner!r}; valid runners: {', '.join(RUNNERS)}")
    shared = flat_params(data.get("params") or {}, f"{file}: params")
    planner = Planner(file, experiment, shared, runner, overrides)
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


def run_sweep(
    file: str | Path,
    *,
    resume: bool = True,
    workers: int | None = None,
    executor: str | None = None,
    runner: str | None = None,
    overrides: dict | None = None,
    executor_params: dict | None = None,
    devices: int | None = None,
    log: Callable[[str], Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every run of the sweep (module docstring); ``workers``/``executor``/``runner``
    override the file's, ``overrides`` every run's parameters, ``executor_params`` (submitit
    options such as ``slurm_partition``, ``timeout_min``; slurm only) and ``devices``
    (processes per run) the executor block's.

    Returns one record per run, in plan order: ``{'name', 'status': 'completed' | 'skipped' |
    'failed' | 'cancelled', 'run_dir', 'seconds', 'error'}``.
    """
    specs = plan_sweep(file, runner=runner, overrides=overrides)
    options = executor_options(read_sweep(Path(file)).get("executor"), Path(file),
                               workers=workers, name=executor, params=executor_params,
                               devices=devices)  # fmt: skip
    check_devices(specs, options)
    if resume and specs:  # runs killed with their sweep: recorded, then rerun in fresh folders
        for run_dir in mark_interrupted(specs[0].experiment):
            (log or print)(f"interrupted earlier (its process is gone): {run_dir}")
    done = completed_runs(specs[0].experiment) if resume and specs else {}
    return run_specs(specs, done, options, log=log, progress=progress)
