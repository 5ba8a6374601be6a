"""Runs: the run parameters contract, one run and its folder, headless execution with papermill.

Method notebook pattern (copy ``notebooks/12_bitfit.ipynb`` for a new method; see
``notebooks/README.md``)::

    [markdown]   what the method changes, its trainable set and count formula, the paper
    [parameters] flat, typed, commented: COMMON_KEYS + the method's config_keys(method)
    [code]       import petl_kit as pk
                 result = pk.run_experiment(pk.collect_params(globals()))
    [code]       learning curves, parameter groups, then the method-specific look

``run_experiment`` does the work and writes the run folder (design §5)::

    run.lock (who ran it: host, pid, start)  params.yaml  versions.json
    history.csv  ledger.json  weights/ (trainable only)  learning_curves.png
    metrics.json (status running → completed | failed, written last and atomically; a
    notebook's run is ``trained`` until ``run_notebook`` has saved the executed notebook;
    a run whose owner died is ``interrupted``)

``run_notebook`` executes a notebook with papermill into a new run folder; ``petl_kit.sweep``
runs many; ``petl_kit.report`` tabulates them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import RunFailed
from ..training import distributed
from . import claims, steps
from .claims import new_run_dir
from .notebook_params import (  # noqa: F401  (re-exported: the runs API)
    load_params_file,
    notebook_parameters,
    notebook_trains,
    resolve_params,
    type_matches,
    validate_params,
)
from .provenance import read_json, versions, write_json, write_yaml

# Keys every method notebook has (design §4), plus `method` and `run_dir` (set by the runner).
COMMON_KEYS = (
    "experiment", "run_dir", "method", "dataset", "data_path", "backbone", "checkpoint",
    "max_length", "epochs", "batch_size", "lr", "seed", "profile", "device",
)  # fmt: skip
# Keys a notebook may add: synthetic set size, pooling, SpecAugment widths (0 = off), feature cache,
# backbone-output cache (linear probing: the frozen backbone runs once per clip); encoder depth,
# head and layer aggregation (music probing: build_model's arguments); fold (a csv manifest's
# fold label to test on); the clip length in seconds (instead of max_length: data.clip_length).
OPTIONAL_KEYS = (
    "n_per_class", "pooling", "freq_mask", "time_mask", "cache", "probe_cache",
    "encoder_depth", "head", "layer_aggregation", "fold", "clip_seconds",
)  # fmt: skip


# ---------------------------------------------------------------------------- parameters
def _train_keys() -> tuple[str, ...]:
    from ..training.train import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "profile")


def known_keys(method: str) -> list[str]:
    """Every key a notebook of ``method`` may declare: common, optional, training, method keys."""
    from ..methods import config_keys

    keys = [*COMMON_KEYS, *OPTIONAL_KEYS, *_train_keys(), *config_keys(method)]
    return list(dict.fromkeys(keys))


def collect_params(namespace: dict[str, Any]) -> dict[str, Any]:
    """The run parameters found in a notebook's ``globals()`` (its parameters cell's names)."""
    if "method" not in namespace:
        raise ConfigError("collect_params: the parameters cell must define `method`")
    return {k: namespace[k] for k in known_keys(namespace["method"]) if k in namespace}


# ---------------------------------------------------------------------------- one run
@dataclass
class RunResult:
    """What a method notebook gets back for its insight cells."""

    params: dict[str, Any]
    run_dir: Path
    model: Any = None
    splits: Any = None
    loaders: dict = field(default_factory=dict)
    extractor: Any = None
    fit: Any = None
    metrics: dict = field(default_factory=dict)

    def param_table(self):
        """Trainable parameters by group (``count_parameters`` groups) as a DataFrame."""
        from .report import param_group_table

        return param_group_table(self.metrics)

    def load_summary(self) -> str:
        """One line: what the backbone's weights came from (the run's ``load_report.json``)."""
        from ..backbones.strict import summary

        report = read_json(self.run_dir / "load_report.json")
        if report is None and self.model is not None:
            report = getattr(self.model.backbone, "petl_load_report", None)
        return summary(report)

    def initial_model(self):
        """The model as built before training (same build arguments and seed)."""
        from ..model.build import build_model

        return build_model(**self.model.build_args, seed=self.params["seed"])


def inprocess_params(resolved: dict[str, Any]) -> dict[str, Any]:
    """A notebook's resolved parameters (:func:`resolve_params`) as :func:`run_experiment`
    takes them, to train in this process without executing the notebook."""
    method = resolved["method"]
    return {k: v for k, v in resolved.items() if k in known_keys(method) and k != "run_dir"}


def dataset_options(params: dict[str, Any]) -> dict[str, Any]:
    """The ``load_dataset`` options a run's params imply: ``n_per_class`` sizes the generated
    sets (``synthetic``, ``synthetic_key``, ...) and means nothing to the others; ``fold`` picks
    the test fold of a dataset that has folds (a csv manifest: one of its fold labels)."""
    generated = params["dataset"] == "synthetic" or params["dataset"].startswith("synthetic_")
    out = {}
    if generated and params.get("n_per_class") is not None:
        out["n_per_class"] = params["n_per_class"]
    if params.get("fold") is not None:  # e.g. a csv manifest's fold label (test on it)
        out["fold"] = params["fold"]
    return out


def _check_keys(params: dict[str, Any]) -> str:
    from ..methods import get_method

    if "method" not in params:
        raise ConfigError("run parameters need `method`; valid keys: " + ", ".join(COMMON_KEYS))
    method = get_method(params["method"]).name
    missing = [k for k in COMMON_KEYS if k not in params and k != "run_dir"]
    if missing:
        raise ConfigError(f"run parameters: missing {', '.join(missing)} (every run needs them)")
    unknown = sorted(set(params) - set(known_keys(method)))
    if unknown:
        raise ConfigError(
            f"run parameters: unknown key(s) {', '.join(map(repr, unknown))} for method "
            f"{method!r}; valid keys: {', '.join(known_keys(method))}"
        )
    return method


def run_experiment(
    params: dict[str, Any], run_dir: str | Path | None = None, *, splits=None
) -> RunResult:
    """Train one model as ``params`` say and write its run folder (module docstring).

    ``params`` holds the keys of :data:`COMMON_KEYS`, optionally :data:`OPTIONAL_KEYS` and
    ``TrainConfig`` fields, and the method's config keys. ``run_dir`` (or ``params['run_dir']``)
    None creates ``<outputs>/<experiment>/<method>-<time>-<hex>/``. ``splits`` (a
    ``DatasetSplits``, e.g. one fold or few-shot episode) replaces loading ``params['dataset']``.

    The run claims its folder first (``run.lock``, :mod:`petl_kit.experiments.claims`): a folder
    that holds results or that another live process claimed is a
    :class:`~petl_kit.errors.RunClaimed` error naming it. On an exception ``metrics.json`` gets
    status ``failed`` and the traceback; then it re-raises.

    Launched once per device (``torchrun``, a sweep's ``devices: N``), the processes train one
    run data-parallel (:mod:`petl_kit.training.distributed`): process 0 makes and writes the
    folder, the others train beside it and write nothing (``run_dir`` is process 0's).
    """
    params = dict(params)
    method = _check_keys(params)
    if distributed.launched() > 1:
        from ..training.train import pick_device

        distributed.setup(pick_device(params["device"]))
        if not distributed.is_main():
            return _train_beside(params, method, splits)
    given = run_dir or params.get("run_dir")
    if given:
        run_dir = Path(given)
        run_dir.mkdir(parents=True, exist_ok=True)
        claims.ensure_claim(run_dir)
    else:
        run_dir = new_run_dir(params["experiment"], method)
    params["run_dir"] = str(distributed.broadcast(str(run_dir)))
    result = RunResult(params=params, run_dir=run_dir, splits=splits)
    base = {k: params[k] for k in ("method", "dataset", "backbone", "profile")}
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # provenance first: a run that dies still says what it was
    write_yaml(run_dir / "params.yaml", params)
    write_json(run_dir / "versions.json", versions(_device_text(params["device"]), params["seed"]))
    write_json(run_dir / "metrics.json", {"status": "running", **base, "started": started})
    try:
        _train(result, method)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        write_json(run_dir / "metrics.json", {
            "status": status, **base, "started": started, "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        })  # fmt: skip
        raise
    return result


def _train_beside(params: dict[str, Any], method: str, splits) -> RunResult:
    """A process other than 0 of a data-parallel run: the same steps, no file written."""
    run_dir = Path(distributed.broadcast(None))  # process 0's folder, once it has claimed it
    result = RunResult(params={**params, "run_dir": str(run_dir)}, run_dir=run_dir, splits=splits)
    _train(result, method)
    return result


def _device_text(device: str) -> str:
    from ..training.train import pick_device

    try:
        return str(pick_device(device))
    except ConfigError:
        return str(device)


def _train(result: RunResult, method: str) -> None:
    """The steps of :mod:`petl_kit.experiments.steps`, in order. Inside a notebook that
    ``run_notebook`` executes, the run ends ``trained``: the runner writes ``completed`` once the
    executed notebook is saved."""
    train_cfg = steps.train_config(result, _train_keys())
    with distributed.main_first():  # what process 0 caches (features), the others read
        steps.load_data(result, dataset_options(result.params))
        steps.build(result, method)
        steps.make_loaders(result, train_cfg)
    probe_cache = steps.train(result, train_cfg)
    if not distributed.is_main():
        return
    handed = os.environ.get(claims.HANDOFF_ENV)
    in_notebook = bool(handed) and Path(handed).resolve() == result.run_dir.resolve()
    status = "trained" if in_notebook else "completed"
    steps.write_artefacts(result, method, probe_cache=probe_cache, status=status)
    claims.pause_point(status)


# ---------------------------------------------------------------------------- headless
class _KnownParameters(logging.Filter):
    """papermill's regex cannot read annotations like ``str | None`` and warns that such
    parameters are unknown; the kit has validated every key already, so those warnings go."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


_FILTER = _KnownParameters()


def _local_kernel_manager():
    """A kernel manager whose kernel talks over local IPC sockets in the temp folder: the run's
    kernel is never reachable over TCP (and ipykernel has no reason to warn that it is)."""
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(tempfile.gettempdir(), f"petl-kit-kernel-{uuid.uuid4().hex}")

    return LocalKernelManager


def run_notebook(
    notebook: str | Path,
    params: dict[str, Any],
    *,
    experiment: str | None = None,
    name: str | None = None,
    source: str = "parameters",
    run_dir: str | Path | None = None,
) -> Path:
    """Execute ``notebook`` with ``params`` into a new run folder and return the folder.

    ``experiment`` overrides ``params['experiment']`` (default: the notebook's own default);
    ``name`` (default: the method, else the notebook's stem) starts the run id. ``run_dir``: a
    fresh folder made by the caller (a sweep makes it before handing the run to a worker).

    Raises:
        ConfigError for invalid params (before any folder is made); :class:`RunFailed` when the
        notebook raises (its ``metrics.json`` says ``failed``, the executed notebook is kept),
        or when a training notebook wrote no completed ``metrics.json``. An analysis notebook
        (metadata ``petl_kit.trains`` false: :func:`notebook_trains`) that runs to the end is
        recorded ``completed`` with ``trains: false`` and no scores.
    """
    import papermill as pm

    if _FILTER not in logging.getLogger("papermill").filters:
        logging.getLogger("papermill").addFilter(_FILTER)
    notebook = Path(notebook)
    params = dict(params)
    if experiment is not None:
        params["experiment"] = experiment
    validate_params(notebook, params, source=source)
    resolved = resolve_params(notebook, params)
    experiment = resolved.get("experiment") or "scratch"
    name = name or resolved.get("method") or notebook.stem
    if run_dir is not None:  # a folder the caller made (a sweep's, claimed by it)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        claims.ensure_claim(run_dir)
    else:
        run_dir = new_run_dir(experiment, name)
    resolved["run_dir"] = str(run_dir)
    write_yaml(run_dir / "params.yaml", resolved)
    write_json(run_dir / "run.json", {"notebook": str(notebook), "name": name,
                                      "experiment": experiment, "source": source})  # fmt: skip
    output = run_dir / notebook.name
    trains = notebook_trains(notebook)  # False: an analysis notebook, judged by its execution
    try:
        with _kernel_env(PETL_KIT_PROGRESS="0", HF_HUB_DISABLE_PROGRESS_BARS="1",
                         **{claims.HANDOFF_ENV: str(run_dir)}):  # fmt: skip
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters={**params, "run_dir": str(run_dir)},
                kernel_name=None,
                progress_bar=False,
                **({} if os.name == "nt" else {"kernel_manager_class": _local_kernel_manager()}),
            )
    except Exception as err:
        _record_failure(run_dir, err, output)
        raise RunFailed(f"{notebook} failed: {_error_text(err)}; see {output}", run_dir) from err
    metrics = read_json(run_dir / "metrics.json") or {}
    if not trains and metrics.get("status") in (None, "queued"):  # ran to the end: no scores
        write_json(run_dir / "metrics.json", {"status": "completed", "trains": False,
                                              "notebook": str(output)})  # fmt: skip
        return run_dir
    if metrics.get("status") == "trained":  # the executed notebook is saved: now it counts
        metrics["status"] = "completed"
        write_json(run_dir / "metrics.json", metrics)
    if metrics.get("status") != "completed":  # the notebook never called run_experiment
        _record_failure(
            run_dir, RuntimeError("the notebook wrote no completed metrics.json"), output
        )
        raise RunFailed(
            f"{notebook} finished without a completed metrics.json; see {output}", run_dir
        )
    return run_dir


@contextlib.contextmanager
def _kernel_env(**values: str):
    """Environment variables the kernel inherits, restored afterwards in this process."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _error_text(err: Exception) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    return f"{ename}: {evalue}" if ename else f"{type(err).__name__}: {err}"


def _record_failure(run_dir: Path, err: Exception, notebook: Path) -> None:
    metrics = read_json(run_dir / "metrics.json") or {}
    if metrics.get("status") == "failed":  # run_experiment already wrote the full traceback
        return
    metrics.update(status="failed", error=_error_text(err), notebook=str(notebook))
    if getattr(err, "traceback", None):
        metrics["traceback"] = "\n".join(err.traceback)
    write_json(run_dir / "metrics.json", metrics)
