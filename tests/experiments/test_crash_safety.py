"""Crash-safe run folders, with real processes: a sweep killed with SIGKILL at a named point and
resumed; two sweeps on one experiment at once; run folders that refuse to be written twice.

Kill points are made deterministic by the kit's testing hook ``claims.pause_point``:
``$PETL_KIT_PAUSE_AT=<point>`` makes the process write ``<outputs>/paused-<point>`` (its pid) and
sleep there; the test polls for that file, then kills. Runs are the tiny AST, 3 clips per class,
1 epoch (``runner: inprocess`` except the notebook case).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
import yaml

from petl_kit.errors import RunClaimed
from petl_kit.experiments import claims
from petl_kit.experiments.report import write_report
from petl_kit.experiments.results import collect_results
from petl_kit.experiments.runs import run_experiment
from petl_kit.experiments.sweep import completed_runs, plan_sweep, run_sweep

REPO = Path(__file__).resolve().parents[2]
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
# A method notebook in miniature: parameters, run_experiment, then a last cell that must run.
NB_PARAMS = """experiment: str = "nb"
run_dir: str | None = None
method: str = "linear"
dataset: str = "synthetic"
data_path: str | None = None
n_per_class: int = 3
backbone: str = "ast"
checkpoint: str | None = None
max_length: int = 100
epochs: int = 1
batch_size: int = 12
lr: float | None = None
seed: int = 0
profile: str = "corrected"
device: str = "cpu"
"""
NB_RUN = "import petl_kit as pk\nresult = pk.run_experiment(pk.collect_params(globals()))"
NB_END = 'print("notebook end")'


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sweeps and kernels inherit it
    monkeypatch.delenv(claims.PAUSE_ENV, raising=False)
    monkeypatch.chdir(REPO)  # notebooks/ are found from here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "outputs"
    torch.set_num_threads(threads)


def write_sweep(path: Path, checkpoint: Path, **extra) -> Path:
    data = {
        "experiment": "crash",
        "runner": "inprocess",
        "params": {"checkpoint": str(checkpoint), "n_per_class": 3, "epochs": 1,
                   "batch_size": 12},
        "grid": {"method": ["linear"], "seed": [0, 1]},
        **extra,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_sweep(file: Path, outputs: Path, pause: str | None = None) -> subprocess.Popen:
    """``python -m petl_kit sweep FILE`` in its own session (so killpg reaches all of it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PETL_KIT_OUTPUTS": str(outputs)}
    env.pop(claims.PAUSE_ENV, None)
    if pause:
        env[claims.PAUSE_ENV] = pause
    cmd = [sys.executable, "-m", "petl_kit", "sweep", str(file), "--no-progress"]
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, **out)


def kill_at(proc: subprocess.Popen, outputs: Path, point: str, timeout: float = 240) -> None:
    """Wait for the pause marker of ``point``, then SIGKILL the sweep and the paused process."""
    marker = outputs / f"paused-{point}"
    end = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {point}:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no pause at {point} within {timeout} s")
        time.sleep(0.1)
    time.sleep(0.2)  # the pid is written right after the file appears
    paused = int(marker.read_text() or 0)
    os.killpg(proc.pid, signal.SIGKILL)
    if paused and paused != proc.pid:  # a notebook kernel runs in a session of its own
        try:
            os.kill(paused, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    marker.unlink()


def statuses(experiment: str = "crash") -> list[str]:
    return sorted(collect_results(experiment)["status"])


def assert_each_run_completed_once(file: Path, experiment: str = "crash") -> dict:
    keys = [s.key for s in plan_sweep(file)]
    done = completed_runs(experiment)
    assert sorted(done) == sorted(keys)
    df = collect_results(experiment)
    completed = df[df["status"] == "completed"]
    assert len(completed) == len(keys)  # exactly once each: no run ran twice
    return done


def test_killed_during_training_is_interrupted_and_rerun(tiny_checkpoints, tmp_path, outputs):
    file = write_sweep(tmp_path / "a.yaml", tiny_checkpoints["ast"])
    proc = start_sweep(file, outputs, pause="training")
    kill_at(proc, outputs, "training")
    (killed,) = [d for d in (outputs / "crash").iterdir() if d.is_dir() and d.name[0] != "."]
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"
    lock = json.loads((killed / claims.LOCK).read_text())
    assert lock["pid"] == proc.pid and lock["host"] == platform.node() and lock["started"]
    assert statuses() == ["interrupted"]  # seen as such before anyone writes it down
    assert completed_runs("crash") == {}

    lines = []
    records = run_sweep(file, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert killed not in {r["run_dir"] for r in records}  # rerun in a fresh folder
    assert any(str(killed) in line and "interrupted" in line for line in lines)
    assert json.loads((killed / "metrics.json").read_text())["status"] == "interrupted"
    assert_each_run_completed_once(file)
    assert statuses() == ["completed", "completed", "interrupted"]
    report = write_report("crash")["md"].read_text()
    assert "## Interrupted runs" in report and killed.name in report
    assert "## Failed runs" not in report  # interrupted runs are listed apart


def test_killed_after_metrics_before_the_notebook_ends(tiny_checkpoints, tmp_path, outputs):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL})
    params = nbformat.v4.new_code_cell(NB_PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(NB_RUN), nbformat.v4.new_code_cell(NB_END)]
    notebook = tmp_path / "mini.ipynb"
    nbformat.write(nb, notebook)
    file = write_sweep(tmp_path / "b.yaml", tiny_checkpoints["ast"], runner="papermill",
                       grid={"notebook": [str(notebook)]})  # fmt: skip
    proc = start_sweep(file, outputs, pause="trained")
    kill_at(proc, outputs, "trained")
    (killed,) = [d for d in (outputs / "crash").iterdir() if d.is_dir() and d.name[0] != "."]
    metrics = json.loads((killed / "metrics.json").read_text())
    # every artefact and the metrics are written, but the notebook did not end: not completed
    assert metrics["status"] == "trained" and metrics["test"]
    assert (killed / "weights").is_dir() and (killed / "history.csv").is_file()
    assert completed_runs("crash") == {}

    records = run_sweep(file, progress=False, log=lambda _: None)
    assert [r["status"] for r in records] == ["completed"]
    for run_dir in assert_each_run_completed_once(file).values():
        executed = nbformat.read(run_dir / "mini.ipynb", as_version=4)
        text = "".join(o.get("text", "") for o in executed.cells[-1].get("outputs", []))
        assert "notebook end" in text  # the notebook ran to its end before `completed`
    assert json.loads((killed / "metrics.json").read_text())["status"] == "interrupted"


def test_killed_between_runs_resumes_with_the_rest(tiny_checkpoints, tmp_path, outputs):
    file = write_sweep(tmp_path / "c.yaml", tiny_checkpoints["ast"])
    proc = start_sweep(file, outputs, pause="between_runs")
    kill_at(proc, outputs, "between_runs")
    assert statuses() == ["completed"] and len(completed_runs("crash")) == 1
    records = run_sweep(file, progress=False, log=lambda _: None)
    assert [r["status"] for r in records] == ["skipped", "completed"]
    assert_each_run_completed_once(file)
    assert statuses() == ["completed", "completed"]


def test_two_concurrent_sweeps_never_run_one_run_twice(tiny_checkpoints, tmp_path, outputs):
    file = write_sweep(tmp_path / "d.yaml", tiny_checkpoints["ast"],
                       grid={"method": ["linear"], "seed": [0, 1, 2]})  # fmt: skip
    procs = [start_sweep(file, outputs) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert_each_run_completed_once(file)
    assert statuses() == ["completed"] * 3  # no second folder for any run
    assert "skipped" in "".join(logs)  # each run left to the sweep that claimed it
    assert not (outputs / "crash" / claims.CLAIMS).exists()  # every claim released


# ---------------------------------------------------------------------------- run folders
def tiny(checkpoint, **over):
    return {**dict(experiment="folders", method="linear", dataset="synthetic", data_path=None,
                   n_per_class=3, backbone="ast", checkpoint=str(checkpoint), max_length=100,
                   epochs=1, batch_size=12, lr=None, seed=0, profile="corrected", device="cpu",
                   progress=False), **over}  # fmt: skip


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_finished_run_folder_is_never_written_again(tiny_checkpoints, outputs):
    result = run_experiment(tiny(tiny_checkpoints["ast"]))
    lock = json.loads((result.run_dir / claims.LOCK).read_text())
    assert lock["pid"] == os.getpid() and lock["host"] == platform.node()
    before = (result.run_dir / "metrics.json").read_text()
    with pytest.raises(RunClaimed, match=f"run folder {result.run_dir} already holds results"):
        run_experiment(tiny(tiny_checkpoints["ast"], seed=1), run_dir=result.run_dir)
    assert (result.run_dir / "metrics.json").read_text() == before


def test_a_folder_claimed_by_a_live_process_is_refused(tiny_checkpoints, outputs, live_pid):
    folder = outputs / "folders" / "taken"
    folder.mkdir(parents=True)
    (folder / claims.LOCK).write_text(json.dumps({"host": platform.node(), "pid": live_pid,
                                                  "started": time.time()}))  # fmt: skip
    with pytest.raises(RunClaimed, match=f"run folder {folder} is claimed by pid {live_pid}"):
        run_experiment(tiny(tiny_checkpoints["ast"]), run_dir=folder)
    assert not (folder / "metrics.json").exists()


def test_owner_gone_same_host_dead_pid_or_old_lock_elsewhere(live_pid):
    me = platform.node()
    assert not claims.owner_gone({"host": me, "pid": live_pid, "started": time.time()})
    assert claims.owner_gone({"host": me, "pid": dead_pid(), "started": time.time()})
    old = time.time() - 10
    assert not claims.owner_gone({"host": "elsewhere", "pid": 1, "started": old}, timeout_s=60)
    assert claims.owner_gone({"host": "elsewhere", "pid": 1, "started": old}, timeout_s=5)


def test_run_key_claims_skip_live_owners_and_break_dead_ones(outputs, live_pid):
    path = claims._claim_path("keys", "k")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": platform.node(), "pid": live_pid, "started": 0}))
    assert not claims.claim_key("keys", "k", "run")  # held by a live process: skipped
    path.write_text(json.dumps({"host": platform.node(), "pid": dead_pid(), "started": 0}))
    assert claims.claim_key("keys", "k", "run")  # its owner is gone: claimed anew
    assert json.loads(path.read_text())["pid"] == os.getpid()
    claims.release_key("keys", "k")
    assert not path.exists()
