"""Who owns a run folder or a planned run: lock files that survive a crash and say so.

A run claims its folder before anything runs: ``run.lock`` is created with ``O_CREAT | O_EXCL``
(one process wins, however many race) and holds ``{host, pid, started}``. The lock stays after the
run ends, as a record of who ran it. A sweep claims each planned run by its key
(``<experiment>/.claims/<hash of the key>.lock``, same content) before starting it, so two sweeps
on one experiment never run the same run twice; the claim goes when the run ends.

An owner is *gone* when its host is this host and its pid is dead, or, on another host, when the
lock is older than :data:`LOCK_TIMEOUT_S` (``$PETL_KIT_LOCK_TIMEOUT``, seconds; default 48 h: a
cluster job longer than that must raise it). A run whose folder still says ``queued`` /
``running`` / ``trained`` but whose owner is gone was killed: :func:`effective_status` calls it
``interrupted``, :func:`mark_interrupted` writes that down, and the next sweep reruns it in a
fresh folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import time
from pathlib import Path

from ..errors import RunClaimed
from .provenance import check_segment, experiment_dir, read_json, write_json

LOCK = "run.lock"
CLAIMS = ".claims"
# A run that says one of these has not ended; with its owner gone it was interrupted.
UNFINISHED = ("queued", "running", "trained")
# A folder whose metrics say one of these holds results that no call may overwrite.
RESULTS = ("completed", "failed", "interrupted", "trained")
# Set by run_notebook for its kernel: the run folder the runner claimed and hands over.
HANDOFF_ENV = "PETL_KIT_RUN_DIR"
LOCK_TIMEOUT_S = float(os.environ.get("PETL_KIT_LOCK_TIMEOUT", 48 * 3600))


def owner() -> dict:
    """This process as a lock owner: ``{host, pid, started}`` (started: epoch seconds)."""
    return {"host": platform.node(), "pid": os.getpid(), "started": time.time(),
            "started_text": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def _create(path: Path, info: dict) -> bool:
    """Create ``path`` holding ``info`` if it does not exist (atomic); False if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def read_lock(path: Path) -> dict | None:
    """A lock's owner, ``{}`` for a lock being written (empty), None when there is none."""
    if not path.exists():
        return None
    return read_json(path) or {}


def is_mine(info: dict | None) -> bool:
    return bool(info) and info.get("host") == platform.node() and info.get("pid") == os.getpid()


def owner_gone(info: dict | None, timeout_s: float | None = None) -> bool:
    """True when the lock's owner cannot be running (module docstring)."""
    if info is None:
        return True
    if not info:  # created an instant ago and not yet written: its owner is alive
        return False
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    if info.get("host") != platform.node():
        return time.time() - float(info.get("started") or 0) > timeout_s
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except (KeyError, ValueError, TypeError):
        return True
    return _zombie(int(info["pid"]))


def _zombie(pid: int) -> bool:
    # a killed child not yet reaped by its parent still answers kill(pid, 0)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe(info: dict | None) -> str:
    if not info:
        return "an owner still writing its lock"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started_text')}"


# ---------------------------------------------------------------------------- run folders
def claim_dir(run_dir: Path) -> dict:
    """Claim ``run_dir`` (its ``run.lock``); RunClaimed naming the folder and owner if taken."""
    info = owner()
    if not _create(run_dir / LOCK, info):
        held = read_lock(run_dir / LOCK)
        raise RunClaimed(f"run folder {run_dir} is claimed by {describe(held)} ({run_dir / LOCK})")
    return info


def take_over(run_dir: Path) -> None:
    """Make this process the owner of a folder its sweep claimed and handed to it (a worker)."""
    write_json(run_dir / LOCK, owner())


def ensure_claim(run_dir: Path) -> None:
    """Before a call writes into ``run_dir``: refuse a folder holding results or claimed by
    another live process; claim it when unclaimed. A folder claimed by this process, or handed
    to it by its runner (``$PETL_KIT_RUN_DIR``), is used as is."""
    metrics = read_json(run_dir / "metrics.json") or {}
    if metrics.get("status") in RESULTS:
        raise RunClaimed(
            f"run folder {run_dir} already holds results (status {metrics.get('status')!r}); "
            "a run never writes into another run's folder: pass run_dir=None for a fresh one"
        )
    held = read_lock(run_dir / LOCK)
    if held is None:
        claim_dir(run_dir)
        return
    handed = os.environ.get(HANDOFF_ENV)
    if is_mine(held) or (handed and Path(handed).resolve() == run_dir.resolve()):
        return
    raise RunClaimed(
        f"run folder {run_dir} is claimed by {describe(held)}; "
        + ("its owner is gone, so it was interrupted: " if owner_gone(held) else "")
        + "pass run_dir=None for a fresh folder"
    )


def effective_status(run_dir: Path, metrics: dict | None = None) -> str | None:
    """The run's status, ``interrupted`` for an unfinished run whose owner is gone."""
    metrics = read_json(run_dir / "metrics.json") if metrics is None else metrics
    status = (metrics or {}).get("status")
    if status in UNFINISHED and (run_dir / LOCK).exists():
        if owner_gone(read_lock(run_dir / LOCK)):
            return "interrupted"
    return status


def mark_interrupted(experiment: str) -> list[Path]:
    """Write ``status: interrupted`` into every unfinished run folder of ``experiment`` whose
    owner is gone; returns those folders."""
    root = experiment_dir(experiment)
    marked = []
    for run_dir in sorted(root.glob("*/")) if root.is_dir() else []:
        metrics = read_json(run_dir / "metrics.json") or {}
        was = metrics.get("status")
        if was in UNFINISHED and effective_status(run_dir, metrics) == "interrupted":
            held = read_lock(run_dir / LOCK)
            write_json(run_dir / "metrics.json", {
                **metrics, "status": "interrupted", "was": was,
                "error": f"its owner ({describe(held)}) is gone; the run did not finish",
            })  # fmt: skip
            marked.append(run_dir)
    return marked


# ---------------------------------------------------------------------------- run keys
def _claim_path(experiment: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return experiment_dir(experiment) / CLAIMS / f"{digest}.lock"


def claim_key(experiment: str, key: str, name: str) -> bool:
    """Claim the planned run ``key``; False when a live process holds it. A claim whose owner
    is gone is broken (renamed away, checked, then claimed anew)."""
    path = _claim_path(experiment, key)
    info = {**owner(), "name": name}
    for _ in range(5):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if _create(path, info):
                return True
        except FileNotFoundError:  # another sweep removed the emptied folder just now
            continue
        held = read_lock(path)
        if is_mine(held):  # this process claimed it before (a sweep resumed in one session)
            return True
        if not owner_gone(held):
            return False
        # break the stale claim without deleting a fresh one another sweep made meanwhile
        aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        if (read_json(aside) or {}) != held and not path.exists():
            os.rename(aside, path)  # it was a fresh claim: put it back
            return False
        aside.unlink(missing_ok=True)
    return False


def release_key(experiment: str, key: str) -> None:
    """Drop this process's claim of ``key`` (a claim held by another process stays)."""
    path = _claim_path(experiment, key)
    if is_mine(read_lock(path)):
        path.unlink(missing_ok=True)
        try:  # the last claim gone: no empty folder left in the experiment
            path.parent.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------------------- testing hook
PAUSE_ENV = "PETL_KIT_PAUSE_AT"


def pause_point(name: str) -> None:
    """Testing hook for the crash-safety tests (``tests/experiments/test_crash_safety.py``):
    when ``$PETL_KIT_PAUSE_AT`` is ``name`` (``training``, ``trained``, ``between_runs``), touch
    ``<$PETL_KIT_OUTPUTS or .>/paused-<name>`` (holding this pid) and sleep 120 s, so a test can
    kill the process at exactly that point. Unset (always, outside those tests) it does nothing.
    Points: ``training`` (before ``fit``), ``trained`` / ``completed`` (metrics.json written),
    ``between_runs`` (a sweep, after a run ended)."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    Path(os.environ.get("PETL_KIT_OUTPUTS") or ".", f"paused-{name}").write_text(str(os.getpid()))
    time.sleep(120)


def new_run_dir(experiment: str, name: str) -> Path:
    """Create and return a fresh ``<outputs>/<experiment>/<name>-<YYYYmmdd-HHMMSS>-<4 hex>/``.

    The folder is created with ``exist_ok=False``: a clash (same second, same random suffix)
    draws a new suffix, so a run never writes into another run's folder; this process claims it
    at once (``run.lock``, :func:`claim_dir`).
    """
    parent = experiment_dir(experiment)
    check_segment(name, "run name")
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = parent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        claim_dir(folder)
        return folder
    raise RuntimeError(f"could not create a new run folder under {parent}")
