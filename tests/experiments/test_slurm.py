"""Sweeps through a real single-node Slurm cluster (``.ci/slurm_up.sh``, ``make test-slurm``):
completed, failed, cancelled (``scancel`` while running) and resumed runs, each recorded as what
it was; a missing partition; no time limit. Without Slurm (no ``sbatch``) the cluster tests are
skipped, unless ``CI_REQUIRE_SLURM=1``, where they fail. The option and state-tracking tests need
no cluster.
"""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from petl_kit.__main__ import main
from petl_kit.config import ConfigError
from petl_kit.experiments import slurm
from petl_kit.experiments.executors import executor_options
from petl_kit.experiments.results import collect_results
from petl_kit.experiments.sweep import run_sweep
from tests.conftest import write_notebook, write_sweep

REPO = Path(__file__).resolve().parents[2]
UP = REPO / ".ci" / "slurm_up.sh"


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs inherit it
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "outputs"
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- no cluster needed
def test_slurm_needs_a_time_limit_and_flags_need_slurm(tmp_path):
    f = tmp_path / "s.yaml"
    with pytest.raises(ConfigError, match=r"executor slurm needs a time limit.*--slurm-time-min"):
        executor_options({"name": "slurm"}, f)
    opts = executor_options("slurm", f, params={"timeout_min": 30, "slurm_partition": "gpu"})
    assert opts["submitit"] == {"timeout_min": 30, "slurm_partition": "gpu"}
    assert opts["state_timeout_s"] == slurm.STATE_TIMEOUT_S
    assert executor_options({"name": "slurm", "slurm_time": "1:00:00", "state_timeout_s": 5},
                            f)["state_timeout_s"] == 5.0  # fmt: skip
    with pytest.raises(ConfigError, match=r"slurm_partition from the command line need the slurm"):
        executor_options({"name": "local"}, f, params={"slurm_partition": "gpu"})
    with pytest.raises(ConfigError, match=r"state_timeout_s = 0; expected seconds > 0"):
        executor_options({"name": "slurm", "timeout_min": 5, "state_timeout_s": 0}, f)


def test_cli_slurm_flags_reach_the_executor(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "c.yaml", {"experiment": "c", "runs": [
        {"notebook": "notebooks/10_linear.ipynb"}]})  # fmt: skip
    assert main(["sweep", str(sweep), "--executor", "slurm"]) == 2
    assert "executor slurm needs a time limit" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--slurm-partition", "gpu"]) == 2
    assert "need the slurm executor" in capsys.readouterr().err


class FakeJob:
    def __init__(self, job_id, folder: Path):
        self.job_id = job_id
        self.paths = SimpleNamespace(result_pickle=folder / f"{job_id}_result.pkl")

    def done(self):
        return False


def test_a_dropped_job_is_given_up_on_after_the_timeout(tmp_path):
    """The controller forgets job 7 with no result: unknown after ``state_timeout_s``, not
    before; a COMPLETING job is not over; a CANCELLED one is."""
    now, answers = [0.0], {"7": "RUNNING", "8": "COMPLETING"}
    states = slurm.JobStates(30, every_s=0, query=lambda ids: dict(answers), clock=lambda: now[0])
    jobs = {i: FakeJob(i, tmp_path) for i in ("7", "8")}
    states.update(list(jobs))
    assert [states.over(j) for j in jobs.values()] == [None, None]
    del answers["7"]
    now[0] = 10.0
    states.update(list(jobs))
    now[0] = 39.0
    assert states.over(jobs["7"]) is None
    now[0] = 40.0
    assert states.over(jobs["7"]) == slurm.UNKNOWN
    answers["8"] = "CANCELLED"
    states.update(list(jobs))
    assert states.over(jobs["8"]) == "CANCELLED"
    (tmp_path / "7_result.pkl").write_bytes(b"")
    assert states.over(jobs["7"]) == "RESULT"  # a result file always wins

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
    record = slurm.end_record(FakeJob("9", tmp_path), slurm.UNKNOWN, "r", run_dir, 30)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == metrics["status"] == "failed"
    assert metrics["error"].startswith("state unknown: Slurm job 9") and "30 s" in metrics["error"]
    record = slurm.end_record(FakeJob("9", tmp_path), "TIMEOUT", "r", run_dir, 30)
    assert (record["status"], record["error"]) == ("failed", "Slurm job 9 ended TIMEOUT")
    record = slurm.end_record(FakeJob("9", tmp_path), "CANCELLED", "r", run_dir, 30)
    assert record["status"] == "cancelled"
    assert json.loads((run_dir / "metrics.json").read_text())["slurm_state"] == "CANCELLED"


# ---------------------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster (started by ``.ci/slurm_up.sh`` unless one already runs)."""
    if shutil.which("sbatch") is None:
        message = ("Slurm is not installed (no sbatch on PATH): apt-get install -y slurm-wlm munge "
                   "slurmdbd mariadb-server, then make test-slurm")  # fmt: skip
        if os.environ.get("CI_REQUIRE_SLURM") == "1":
            pytest.fail(f"CI_REQUIRE_SLURM=1 but {message}")
        pytest.skip(message)
    started = subprocess.run([str(UP), "status"], capture_output=True).returncode != 0
    out = subprocess.run([str(UP), "start"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{UP} start failed:\n{out.stdout}\n{out.stderr}"
    conf = out.stdout.strip().splitlines()[-1].split("SLURM_CONF=")[-1]
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if started:
        subprocess.run([str(UP), "stop"], capture_output=True, timeout=120)
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved


def no_accounting(tmp_path, monkeypatch):
    """``sacct`` fails as on a cluster without accounting: job states come from the controller."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(
        "#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n"
    )
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def cancel_when_running(outputs: Path, experiment: str, pattern: str, text: str = ""):
    """``scancel`` the sweep's running job once a file ``pattern`` of its run (holding ``text``)
    shows it is running."""

    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for m in (outputs / experiment).glob(pattern):
                if text in m.read_text():
                    subprocess.run(["scancel", "-n", f"petl-{experiment}", "-t", "RUNNING"])
                    return
            time.sleep(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sweep_on_slurm_completed_failed_cancelled_resumed(
    cluster, tiny_checkpoints, tmp_path, outputs, monkeypatch
):
    no_accounting(tmp_path, monkeypatch)
    common = {"checkpoint": str(tiny_checkpoints["ast"]), "n_per_class": 3, "batch_size": 12}
    sweep = write_sweep(tmp_path / "sl.yaml", {
        "experiment": "sl", "runner": "inprocess",
        "executor": {"name": "slurm", "timeout_min": 10, "poll_seconds": 0.5},
        "params": common,
        "runs": [
            {"notebook": "notebooks/10_linear.ipynb", "name": "ok", "params": {"epochs": 1}},
            {"notebook": "notebooks/10_linear.ipynb", "name": "broken",
             "params": {"epochs": 1, "dataset": "no_such"}},
            {"notebook": "notebooks/10_linear.ipynb", "name": "slow",
             "params": {"epochs": 1000, "probe_cache": False}},  # ~25 s: outlives KillWait
        ],
    })  # fmt: skip
    watcher = cancel_when_running(outputs, "sl", "slow-*/metrics.json", '"running"')
    lines = []
    t0 = time.monotonic()
    records = run_sweep(sweep, log=lines.append, progress=False)
    first_s = time.monotonic() - t0
    watcher.join(timeout=5)
    assert [r["status"] for r in records] == ["completed", "failed", "cancelled"], lines
    assert "submitit slurm executor" in lines[0]
    assert "no_such" in records[1]["error"]
    slow = json.loads((records[2]["run_dir"] / "metrics.json").read_text())
    assert slow["status"] == "cancelled" and slow["slurm_state"] == "CANCELLED"
    assert "sweep done: 1 completed, 0 skipped, 1 failed, 1 cancelled" in lines[-1]

    t0 = time.monotonic()
    again = run_sweep(sweep, log=lines.append, progress=False)  # resumed: the cancelled run reruns
    print(f"first sweep {first_s:.0f} s, resumed {time.monotonic() - t0:.0f} s")
    assert [r["status"] for r in again] == ["skipped", "failed", "completed"]
    assert again[0]["run_dir"] == records[0]["run_dir"]
    df = collect_results("sl")
    assert sorted(df["status"]) == ["cancelled", "completed", "completed", "failed", "failed"]


SLEEPY_PARAMS = """experiment: str = "nb"
run_dir: str | None = None
method: str = "linear"
seconds: float = 0.0
"""
SLEEPY_CODE = """import json, pathlib, time
time.sleep(seconds)
pathlib.Path(run_dir, "metrics.json").write_text(json.dumps({"status": "completed"}))
"""


def test_a_cancelled_notebook_job_is_cancelled_not_a_dead_kernel(cluster, tmp_path, outputs):
    nb = write_notebook(tmp_path / "sleepy.ipynb", SLEEPY_PARAMS, SLEEPY_CODE)
    sweep = write_sweep(tmp_path / "nb.yaml", {
        "experiment": "nb", "executor": {"name": "slurm", "timeout_min": 10},
        "runs": [{"notebook": str(nb), "name": "sleepy", "params": {"seconds": 120}}],
    })  # fmt: skip
    watcher = cancel_when_running(outputs, "nb", "sleepy-*/sleepy.ipynb")
    records = run_sweep(sweep, progress=False)
    watcher.join(timeout=5)
    assert records[0]["status"] == "cancelled"
    metrics = json.loads((records[0]["run_dir"] / "metrics.json").read_text())
    assert metrics["status"] == "cancelled" and "DeadKernel" not in metrics["error"]


def test_a_missing_partition_is_named_and_leaves_no_folder(cluster, tmp_path, outputs, capsys):
    sweep = write_sweep(tmp_path / "p.yaml", {"experiment": "p", "runner": "inprocess", "runs": [
        {"notebook": "notebooks/10_linear.ipynb", "params": {"epochs": 1}}]})  # fmt: skip
    code = main(["sweep", str(sweep), "--executor", "slurm", "--slurm-partition", "no_such_part",
                 "--slurm-time-min", "5", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "'no_such_part' does not exist" in err and "debug" in err
    assert not list((outputs / "p").glob("*/metrics.json"))  # no `queued` leftovers


def test_a_run_on_two_devices_is_one_job_of_two_tasks(cluster, tiny_checkpoints, tmp_path,
                                                      outputs):  # fmt: skip
    cpus = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True)
    assert int(cpus.stdout.split()[0]) >= 2, f"a 2-task job needs 2 CPUs on the node: {cpus}"
    sweep = write_sweep(tmp_path / "dp.yaml", {
        "experiment": "dp", "runner": "inprocess",
        "executor": {"name": "slurm", "devices": 2, "timeout_min": 10, "poll_seconds": 0.5},
        "params": {"checkpoint": str(tiny_checkpoints["ast"]), "n_per_class": 4, "epochs": 1},
        "runs": [{"notebook": "notebooks/14_lora.ipynb", "name": "lora"}],
    })  # fmt: skip
    lines = []
    records = run_sweep(sweep, log=lines.append, progress=False)
    assert [r["status"] for r in records] == ["completed"], lines
    assert [p.name for p in (outputs / "dp").glob("lora-*")] == [records[0]["run_dir"].name]
    metrics = json.loads((records[0]["run_dir"] / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["processes"] == 2
    logs = sorted(p.name for p in (outputs / "dp" / ".submitit").rglob("*_log.out"))
    assert [name.split("_")[1] for name in logs] == ["0", "1"], logs  # task 0 and task 1
