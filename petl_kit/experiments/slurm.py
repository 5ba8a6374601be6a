"""What a sweep needs from Slurm beyond submitit: a time limit, a partition that exists, and the
end of every job — also on a cluster without accounting.

submitit learns a job's state from ``sacct``; without accounting (or once the job record is gone)
that state stays ``UNKNOWN`` and ``job.result()`` waits for ever for a result file a killed job
never writes. :class:`JobStates` asks the controller instead (``squeue -t all``, no accounting
needed): a job is over when its result file exists, when the controller names a final state
(``CANCELLED``, ``TIMEOUT``, ``FAILED`` ...; never while ``COMPLETING``, so a dying worker cannot
overwrite what is recorded), or when the controller has not known it for ``state_timeout_s``
seconds (the executor option; :data:`STATE_TIMEOUT_S` by default) — then it is given up on.
:func:`end_record` records each as what it was: ``completed`` / ``failed`` as the worker said,
``cancelled`` for a cancelled job (also a notebook whose kernel the cancellation killed), else
``failed`` with the Slurm state (or ``state unknown``) in ``error``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .provenance import read_json, write_json

STATE_TIMEOUT_S = 120.0  # a job the controller no longer knows, with no result, is given up on
TIME_KEYS = ("timeout_min", "slurm_time")  # submitit's names for the job's time limit
FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "TIMEOUT", "REVOKED", "SPECIAL_EXIT"}  # fmt: skip
UNKNOWN = "UNKNOWN"


def check_time_limit(opts: dict[str, Any], where: str) -> None:
    """Refuse a Slurm sweep without a time limit (submitit would silently ask for 5 minutes)."""
    if not any(opts.get(k) is not None for k in TIME_KEYS):
        raise ConfigError(f"{where}: executor slurm needs a time limit per run: --slurm-time-min "
                          "MINUTES, or timeout_min: MINUTES in the sweep's executor block "
                          "(Slurm kills a job at its limit)")  # fmt: skip


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def partitions() -> list[str] | None:
    """The cluster's partitions (``sinfo``), or None when ``sinfo`` cannot say."""
    out = _run(["sinfo", "-h", "-o", "%P"])
    if out is None or out.returncode != 0:
        return None
    return sorted({p.strip().rstrip("*") for p in out.stdout.split() if p.strip()})


def check_partition(partition: str | None) -> None:
    """A clear error for a partition the cluster does not have (before any run folder is made)."""
    if partition is None:
        return
    valid = partitions()
    if valid is not None and str(partition) not in valid:
        raise ConfigError(f"Slurm partition {partition!r} does not exist on this cluster; valid "
                          f"partitions: {', '.join(valid) or '(none)'} (--slurm-partition or "
                          "executor.slurm_partition)")  # fmt: skip


def submit_error(err: Exception, opts: dict[str, Any]) -> ConfigError:
    """``sbatch``'s own words for a refused job, with the partitions there are."""
    lines = [ln.strip() for ln in str(err).splitlines() if "error" in ln.lower()]
    text = "; ".join(lines[-3:]) or str(err).strip()[-500:]
    valid = partitions()
    hint = f"; valid partitions: {', '.join(valid)}" if valid is not None else ""
    return ConfigError(f"Slurm refused the job (partition {opts.get('slurm_partition')!r}): "
                       f"{text}{hint}")  # fmt: skip


def query_squeue(job_ids: list[str]) -> dict[str, str] | None:
    """``{job id: state}`` of the jobs the controller knows; None when ``squeue`` cannot say."""
    out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)])
    if out is None:
        return None
    if out.returncode != 0:
        if "Invalid job id" not in out.stderr:
            return None
        if len(job_ids) > 1:  # one unknown id fails the whole query: ask one by one
            states = {}
            for job_id in job_ids:
                one = query_squeue([job_id])
                if one is None:
                    return None
                states.update(one)
            return states
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in job_ids:
            states[job_id] = state.split()[0] if state else UNKNOWN
    return states


class JobStates:
    """When Slurm jobs are over, from their result files and the controller (module docstring).

    ``query`` (default :func:`query_squeue`) and ``clock`` are replaceable for tests; the
    controller is asked at most every ``every_s`` seconds.
    """

    def __init__(self, state_timeout_s: float = STATE_TIMEOUT_S, *, every_s: float = 1.0,
                 query=query_squeue, clock=time.monotonic):  # fmt: skip
        self.timeout_s, self.every_s = state_timeout_s, every_s
        self.query, self.clock = query, clock
        self.states: dict[str, str] = {}
        self.missing_since: dict[str, float] = {}
        self.answered = False  # the controller answered at least once
        self._last = float("-inf")

    def update(self, job_ids: list[str]) -> None:
        now = self.clock()
        if not job_ids or now - self._last < self.every_s:
            return
        self._last = now
        states = self.query(job_ids)
        if states is None:  # squeue failed: no news, and no job counts as dropped
            return
        self.answered = True
        for job_id in job_ids:
            if job_id in states:
                self.states[job_id] = states[job_id]
                self.missing_since.pop(job_id, None)
            else:
                self.missing_since.setdefault(job_id, now)

    def over(self, job) -> str | None:
        """None while ``job`` may still run or write; else ``'RESULT'`` (its result file is
        there), a final Slurm state, or :data:`UNKNOWN` (dropped by the controller and given up
        on after the timeout)."""
        if job.paths.result_pickle.exists():
            return "RESULT"
        job_id = str(job.job_id)
        if self.states.get(job_id, "").upper() in FINAL:
            return self.states[job_id].upper()
        since = self.missing_since.get(job_id)
        if since is not None and self.clock() - since >= self.timeout_s:
            return UNKNOWN
        if not self.answered and job.done():  # squeue cannot say: submitit (sacct) decides
            return "RESULT" if job.paths.result_pickle.exists() else job.state.upper()
        return None


def final_state(job_id: str, query=query_squeue, wait_s: float = 30.0) -> str | None:
    """The controller's final state of a job that is ending (waits out ``COMPLETING``), or None."""
    deadline = time.monotonic() + wait_s
    while True:
        states = query([job_id])
        state = (states or {}).get(job_id, "").upper()
        if state in FINAL or states is None or not state or time.monotonic() > deadline:
            return state if state in FINAL else None
        time.sleep(0.5)


def end_record(job, over: str, spec_name: str, run_dir: Path, timeout_s: float, *,
               query=query_squeue, wait_s: float = 15.0) -> dict[str, Any]:  # fmt: skip
    """The run's record once :meth:`JobStates.over` said ``over``; ``metrics.json`` agrees.

    A ``COMPLETED`` job whose result file is late (a slow shared file system) gets ``wait_s``; a
    worker that reports a failure is asked about once more: a cancelled job is ``cancelled``.
    """
    job_id = str(job.job_id)
    if over == "COMPLETED":
        deadline = time.monotonic() + wait_s
        while not job.paths.result_pickle.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        over = "RESULT" if job.paths.result_pickle.exists() else over
    record = {"name": spec_name, "status": "failed", "run_dir": Path(run_dir), "seconds": 0.0,
              "error": None}  # fmt: skip
    own = False  # the worker returned its own record (it wrote the run folder)
    if over == "RESULT":
        try:
            record, own = job.results()[0], True  # task 0's (one per task on devices > 1)
        except Exception as err:  # the worker died outside run_spec
            record["error"] = f"the worker died: {type(err).__name__}: {str(err)[-1000:]}"
        if own and record["status"] == "completed":
            return record
        over = final_state(job_id, query, wait_s) or ("RESULT" if own else "FAILED")
    if over == "CANCELLED":  # also a notebook whose kernel died of the cancellation
        status, error = "cancelled", f"Slurm job {job_id} was cancelled"
    elif over == UNKNOWN:
        status = "failed"
        error = (
            f"state unknown: Slurm job {job_id} left no result and the cluster has not "
            f"known it for {timeout_s:g} s (executor.state_timeout_s); given up on"
        )
    elif own:
        return record  # the worker's own failure, recorded by the worker
    else:
        status, error = "failed", record["error"] or f"Slurm job {job_id} ended {over}"
    metrics = read_json(Path(run_dir) / "metrics.json") or {}
    if metrics.get("status") != "completed":
        write_json(Path(run_dir) / "metrics.json", {
            **metrics, "status": status, "error": error, "slurm_job": job_id, "slurm_state": over,
        })  # fmt: skip
    return {**record, "status": status, "error": error}
