"""Executing planned sweep runs: in this process one after another, or through submitit.

A run is executed by :func:`run_spec` — the same function in this process, in a local worker
process or on a cluster node: it fills the run folder the sweep made for it and returns a record.
It never raises for a failing run (the folder's ``metrics.json`` says ``failed`` with the
traceback); only an interrupt stops the sweep, and an interrupted run is simply not completed, so
the next ``run_sweep`` runs it again in a fresh folder.

submitit (``AutoExecutor``) is used when ``workers`` > 1 or an executor is named; at most
``workers`` jobs are in flight at a time, the same loop for ``local`` processes and ``slurm``.
Its logs go to ``<outputs>/<experiment>/.submitit/``. On ``slurm`` the end of each job is
learnt from the controller as well (:mod:`petl_kit.experiments.slurm`): a cancelled job is
recorded ``cancelled``, a job the cluster dropped without a result is given up on after
``state_timeout_s`` (an executor option), a time limit is required and a missing partition is
named before any run folder is made. With ``devices`` N > 1 a run is one job of N tasks: every
task joins the job's ``torch.distributed`` group (:func:`run_spec_on_devices`), task 0 writes the
folder and returns the record.
"""

from __future__ import annotations

import collections
import shutil
import time
import traceback
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..config import ConfigError
from ..errors import RunFailed
from ..training import distributed
from . import claims, slurm
from .claims import new_run_dir
from .crossval import protocol_run
from .provenance import canonical, experiment_dir, read_json, write_json
from .runs import inprocess_params, run_experiment, run_notebook

if TYPE_CHECKING:
    from .plan import RunSpec

EXECUTORS = ("local", "slurm", "debug")
# submitit kills local workers after 2 minutes unless told otherwise; no scheduler asks for a
# limit here, so a run on this machine gets a week unless the sweep gives timeout_min
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
_OWN_KEYS = {"name", "workers", "poll_seconds", "state_timeout_s", "devices"}


def executor_options(block: Any, file: Path, *, workers: int | None = None,
                     name: str | None = None, params: dict | None = None,
                     devices: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The sweep file's ``executor`` block (None, a name, or a mapping) with CLI overrides;
    ``params`` (``--slurm-partition``, ``--slurm-time-min``) are submitit options for ``slurm``.

    Returns ``{'name': None | 'local' | 'slurm' | 'debug', 'workers': int, 'devices': int,
    'poll_seconds': float, 'state_timeout_s': float, 'submitit': {option: value}}``; ``name``
    None (``none``) means: in this process, in order. ``slurm`` needs a time limit
    (``timeout_min``); ``local`` gets :data:`LOCAL_TIMEOUT_MIN` unless it has one. ``devices``
    N > 1: each run is one job of N tasks on one node, trained data-parallel
    (:mod:`petl_kit.training.distributed`); ``local`` or ``slurm`` only.
    """
    block = {"name": block} if isinstance(block, str) else dict(block or {})
    if not all(isinstance(k, str) for k in block):
        raise ConfigError(f"{file}: executor: expected a mapping of option: value")
    if name is not None:
        block["name"] = name
    if workers is not None:
        block["workers"] = workers
    if devices is not None:
        block["devices"] = devices
    block.update(params or {})
    n = block.get("workers", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{file}: executor.workers = {n!r}; expected an int >= 1")
    chosen = block.get("name") or ("local" if n > 1 else None)
    if chosen == "none":  # in this process, one run after another (workers ignored)
        chosen, n = None, 1
    if chosen not in (None, *EXECUTORS):
        raise ConfigError(f"{file}: executor {chosen!r}; valid: none, {', '.join(EXECUTORS)}")
    opts = {k: v for k, v in block.items() if k not in _OWN_KEYS}
    if params and chosen != "slurm":
        raise ConfigError(f"{file}: {', '.join(sorted(params))} from the command line need the "
                          "slurm executor (--executor slurm); the executor is "
                          f"{chosen or 'none'}")  # fmt: skip
    if chosen == "slurm":
        slurm.check_time_limit(opts, f"{file}")
    if chosen == "local":
        opts.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
    devices = _devices(block.get("devices", 1), chosen, opts, file)
    timeout = block.get("state_timeout_s", slurm.STATE_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{file}: executor.state_timeout_s = {timeout!r}; expected seconds > 0")
    return {"name": chosen, "workers": n, "devices": devices,
            "poll_seconds": float(block.get("poll_seconds", 0.5)),
            "state_timeout_s": float(timeout), "submitit": opts}  # fmt: skip


def _devices(n: Any, chosen: str | None, opts: dict, file: Path) -> int:
    """The executor block's ``devices`` (processes per run), checked."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{file}: executor.devices = {n!r}; expected an int >= 1")
    if n > 1 and chosen not in ("local", "slurm"):
        raise ConfigError(f"{file}: executor.devices = {n} starts a process per device "
                          "through submitit: use the local or slurm executor, not "
                          f"{chosen or 'none'}")  # fmt: skip
    if n > 1 and ("tasks_per_node" in opts or opts.get("nodes", 1) != 1):
        raise ConfigError(f"{file}: executor.devices = {n} sets tasks_per_node = {n} on one "
                          "node; leave tasks_per_node and nodes out")  # fmt: skip
    return n


def check_devices(specs: list[RunSpec], options: dict[str, Any]) -> None:
    """Runs on more than one device need ``runner: inprocess``: a notebook's kernel cannot join
    the processes' group."""
    papermill = [s.name for s in specs if s.runner != "inprocess"]
    if options["devices"] > 1 and papermill:
        raise ConfigError(f"executor.devices = {options['devices']} needs runner: inprocess; "
                          f"these runs execute notebooks: {', '.join(papermill[:5])}")  # fmt: skip


# ---------------------------------------------------------------------------- one run
def prepare(spec: RunSpec) -> Path:
    """The run's fresh folder, claimed by this process (``run.lock``), with ``sweep.json`` (its
    key) and a ``queued`` metrics.json."""
    run_dir = new_run_dir(spec.experiment, spec.name)
    write_json(run_dir / "sweep.json", {
        "key": spec.key, "name": spec.name, "notebook": str(spec.notebook), "runner": spec.runner,
        "protocol": spec.protocol, "source": spec.source,
    })  # fmt: skip
    write_json(run_dir / "metrics.json", {"status": "queued"})
    return run_dir


def run_inprocess(spec: RunSpec, run_dir: Path | None = None) -> Path:
    """``run_experiment`` on the notebook's resolved params (no notebook is executed); a
    protocol (fold / shots + episode) trains on that fold's or episode's splits."""

    params = inprocess_params(spec.resolved)
    params.setdefault("progress", False)  # headless: no one watches the bars
    run_dir = Path(run_dir) if run_dir else new_run_dir(spec.experiment, spec.name)
    if spec.protocol:
        protocol_run(params, run_dir, **spec.protocol)
    else:
        run_experiment(params, run_dir)
    return run_dir


def execute(spec: RunSpec, run_dir: Path | None = None) -> Path:
    """Run one planned run (raises :class:`~petl_kit.errors.RunFailed` when it fails)."""
    if spec.runner == "inprocess":
        return run_inprocess(spec, run_dir)
    return run_notebook(spec.notebook, spec.params, experiment=spec.experiment, name=spec.name,
                        source=spec.source, run_dir=run_dir)  # fmt: skip


def run_spec_on_devices(spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """One task of a run's multi-task job (``devices`` N): joins the job's N tasks as
    torch.distributed processes; task 0 is :func:`run_spec` (the folder, the record), the
    others train beside it and return None."""
    distributed.export_submitit_env()
    if distributed.is_main():
        return run_spec(spec, run_dir)
    run_inprocess(spec, run_dir)
    return None


def run_spec(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Execute one run into ``run_dir``; the record :func:`petl_kit.sweep.run_sweep` returns."""
    t0 = time.perf_counter()
    if not claims.is_mine(claims.read_lock(run_dir / claims.LOCK)):
        claims.take_over(run_dir)  # a worker process: the sweep claimed the folder for it
    try:
        execute(spec, run_dir)
        status, error = "completed", None
    except RunFailed as err:
        status, error = "failed", str(err)
    except Exception as err:  # anything else: still recorded, the sweep goes on
        status, error = "failed", f"{type(err).__name__}: {err}"
        _mark(run_dir, "failed", error, traceback.format_exc())
    return {"name": spec.name, "status": status, "run_dir": Path(run_dir),
            "seconds": time.perf_counter() - t0, "error": error}  # fmt: skip


def _mark(run_dir: Path, status: str, error: str, trace: str) -> None:
    """Record ``status`` unless the run already finished (it wrote its own, fuller record)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    if metrics.get("status") not in ("failed", "completed", "interrupted"):
        write_json(run_dir / "metrics.json", {**metrics, "status": status, "error": error,
                                              "traceback": trace})  # fmt: skip


# ---------------------------------------------------------------------------- many runs
def run_specs(specs: list[RunSpec], done: dict[str, Path], options: dict[str, Any], *,
              log=None, progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Skip the runs in ``done`` (key → folder), execute the others, return records in order."""
    from tqdm.auto import tqdm

    records: list[dict | None] = [None] * len(specs)
    pending = []
    for i, spec in enumerate(specs):
        if spec.key in done:
            records[i] = {"name": spec.name, "status": "skipped", "run_dir": done[spec.key],
                          "seconds": 0.0, "error": None}  # fmt: skip
        else:
            pending.append(i)
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), unit="run",
               desc=specs[0].experiment if specs else "sweep", disable=not progress)  # fmt: skip
    say = log or bar.write
    for i, spec in enumerate(specs):
        if records[i] is not None:
            say(
                f"[{i + 1}/{len(specs)}] {spec.name}: skipped, completed in {records[i]['run_dir']}"
            )

    def start(i: int) -> Path | None:
        """Claim run i's key and prepare its folder; None (recorded skipped) when another live
        sweep holds the claim or completed the run meanwhile."""
        spec = specs[i]
        if claims.claim_key(spec.experiment, spec.key, spec.name):
            done_now = _completed(spec)
            if done_now is None:
                return prepare(spec)
            claims.release_key(spec.experiment, spec.key)
            why = f"completed meanwhile in {done_now}"
        else:
            done_now, why = None, "claimed by another sweep that is running it"
        records[i] = {"name": spec.name, "status": "skipped", "run_dir": done_now,
                      "seconds": 0.0, "error": None, "note": why}  # fmt: skip
        say(f"[{i + 1}/{len(specs)}] {spec.name}: skipped, {why}")
        bar.update(1)
        return None

    def finished(i: int, record: dict) -> None:
        claims.release_key(specs[i].experiment, specs[i].key)
        records[i] = record
        metrics = read_json(record["run_dir"] / "metrics.json") or {}
        say(f"[{i + 1}/{len(specs)}] {record['name']}: {record['status']} in "
            f"{record['seconds']:.1f} s{_score_text(metrics)}  → {record['run_dir']}")  # fmt: skip
        if record["error"]:
            say(f"    {record['error'].splitlines()[0][:500]}")
        bar.update(1)
        bar.set_postfix(failed=sum(r is not None and r["status"] == "failed" for r in records))

    try:
        if options["name"] is None:
            for i in pending:
                run_dir = start(i)
                if run_dir is None:
                    continue
                say(f"[{i + 1}/{len(specs)}] {specs[i].name}: running ...")
                try:
                    record = run_spec(specs[i], run_dir)
                except BaseException:  # Ctrl-C: this run is unfinished, the next sweep reruns it
                    _mark(run_dir, "interrupted", "the sweep was stopped", traceback.format_exc())
                    claims.release_key(specs[i].experiment, specs[i].key)
                    raise
                finished(i, record)
                claims.pause_point("between_runs")
        else:
            _submitit(specs, pending, options, start, finished, say)
    finally:
        bar.close()
    counts = {s: sum(r["status"] == s for r in records) for s in ("completed", "skipped", "failed")}
    counts.update({s: n for s, n in collections.Counter(r["status"] for r in records).items()
                   if s not in counts})  # cancelled (Slurm), ...  # fmt: skip
    say("sweep done: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return records


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


def _completed(spec: RunSpec) -> Path | None:
    return completed_runs(spec.experiment).get(spec.key)


def _submitit(specs, pending, options, start, finished, say) -> None:
    import submitit

    if not pending:
        return
    on_slurm = options["name"] == "slurm"
    if on_slurm:  # before any run folder is made
        slurm.check_partition(options["submitit"].get("slurm_partition"))
    folder = experiment_dir(specs[0].experiment) / ".submitit"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options["name"])
    devices = options["devices"]
    tasks = {"tasks_per_node": devices, "nodes": 1} if devices > 1 else {}
    work = run_spec_on_devices if devices > 1 else run_spec
    try:
        executor.update_parameters(**{"name": f"petl-{specs[0].experiment}", **tasks,
                                      **options["submitit"]})  # fmt: skip
    except (ValueError, TypeError, NameError) as err:  # submitit names bad keys by NameError
        raise ConfigError(f"executor options {sorted(options['submitit'])}: {err}") from err
    say(f"submitit {options['name']} executor, {options['workers']} worker(s), logs in {folder}")
    states = slurm.JobStates(options["state_timeout_s"]) if on_slurm else None
    queue, running = deque(pending), {}
    try:
        while queue or running:
            while queue and len(running) < options["workers"]:
                i = queue.popleft()
                run_dir = start(i)
                if run_dir is None:
                    continue
                try:
                    job = executor.submit(work, specs[i], run_dir)
                except Exception as err:  # refused: no `queued` folder is left behind
                    shutil.rmtree(run_dir, ignore_errors=True)
                    claims.release_key(specs[i].experiment, specs[i].key)
                    if on_slurm and isinstance(err, submitit.core.utils.FailedJobError):
                        raise slurm.submit_error(err, options["submitit"]) from err
                    raise
                running[job.job_id] = (job, i, run_dir)
            if states is None:
                ready = {key: None for key, (job, _, _) in running.items() if job.done()}
            else:
                states.update([str(key) for key in running])
                ready = {key: states.over(job) for key, (job, _, _) in running.items()}
                ready = {key: over for key, over in ready.items() if over is not None}
            if not ready:
                time.sleep(options["poll_seconds"])
            for key, over in ready.items():
                job, i, run_dir = running.pop(key)
                if over is None:
                    finished(i, _result(job, specs[i], run_dir))
                else:
                    finished(i, slurm.end_record(job, over, specs[i].name, run_dir,
                                                 options["state_timeout_s"]))  # fmt: skip
    except BaseException:
        for job, i, run_dir in running.values():  # stop the workers; their runs stay unfinished
            job.cancel(check=False)
            _mark(run_dir, "interrupted", "the sweep was stopped", "")
            claims.release_key(specs[i].experiment, specs[i].key)
        raise


def _result(job, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """The job's record; a job that died (killed, out of memory) is recorded as failed."""
    try:
        return job.results()[0]  # task 0's record (a multi-device job has one per task)
    except Exception as err:
        own = read_json(run_dir / "metrics.json") or {}
        if own.get("status") == "failed" and own.get("error"):  # the run's own error first: the
            error = own["error"]  # other tasks of a multi-device run fail after it
        else:
            error = f"the worker died: {type(err).__name__}: {str(err)[-2000:]}"
        _mark(run_dir, "failed", error, getattr(job, "stderr", lambda: "")() or "")
        return {"name": spec.name, "status": "failed", "run_dir": run_dir, "seconds": 0.0,
                "error": error}  # fmt: skip


def _score_text(metrics: dict) -> str:
    test = metrics.get("test") or {}
    for key in ("accuracy", "mAP"):
        if isinstance(test.get(key), (int, float)):
            return f", test {key} {test[key]:.3f}"
    return ""
