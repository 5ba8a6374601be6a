"""Data-parallel training (``training.distributed``): two CPU processes (gloo) launched by
torchrun train exactly what one process trains with the same global batch; a run, the CLI and a
sweep (submitit's local executor, ``devices: 2``) write one folder through process 0, and a failing
multi-device run is recorded with its own error."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from petl_kit.__main__ import main
from petl_kit.config import ConfigError
from petl_kit.experiments.executors import check_devices, executor_options
from petl_kit.experiments.sweep import plan_sweep, run_sweep
from petl_kit.training.distributed import ShardedBatchSampler
from tests.conftest import write_sweep

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("ddp_fit.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def child_env(tmp_path) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "PETL_KIT_OUTPUTS": str(tmp_path / "outputs"),
        "PETL_KIT_CACHE": str(tmp_path / "c"),
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env  # fmt: skip


def torchrun(args: list[str], tmp_path, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([*TORCHRUN, *args], cwd=REPO, env=child_env(tmp_path), timeout=timeout,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_shares_of_a_batch_are_that_batch_with_stand_ins_of_weight_zero():
    batches = [[5, 1, 7, 2, 9], [3]]  # the single-process sampler's global batches
    shares = [list(ShardedBatchSampler(batches, rank, 2)) for rank in (0, 1)]
    assert shares == [[[5, 7, 9], [3]], [[1, 2], [3]]]  # rank 1's [3] stands in for nothing
    for step, batch in enumerate(batches):
        assert sorted(shares[0][step] + shares[1][step]) == sorted(batch) or len(batch) < 2
    sampler = ShardedBatchSampler(batches, 1, 2)
    list(sampler)
    assert list(sampler.shares) == [(2, 5), (0, 1)] and len(sampler) == 2


@pytest.mark.parametrize("method", ["lora", "soft_moa"])
def test_two_processes_train_what_one_process_trains(method, tmp_path, monkeypatch):
    """Same global batch (8; the last batch holds one clip, a stand-in on process 1): weights
    within float summation order, the same history, selection and test metrics."""
    torchrun([str(SCRIPT), str(tmp_path / "two.pt"), method], tmp_path)
    spec = importlib.util.spec_from_file_location("ddp_fit", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(str(tmp_path / "one.pt"), method)
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert one["fit"]["processes"] == 1 and two["fit"]["processes"] == 2
    assert one["state"].keys() == two["state"].keys()
    for name, value in one["state"].items():
        torch.testing.assert_close(two["state"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert one["fit"]["steps"] == two["fit"]["steps"] == 3 * 4
    for a, b in zip(one["fit"]["history"], two["fit"]["history"], strict=True):
        assert a["train_accuracy"] == b["train_accuracy"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert one["fit"]["best_epoch"] == two["fit"]["best_epoch"]
    assert one["fit"]["test"]["accuracy"] == two["fit"]["test"]["accuracy"]
    assert one["fit"]["test"]["loss"] == pytest.approx(two["fit"]["test"]["loss"], rel=1e-5)


def test_torchrun_cli_run_writes_one_folder_through_process_0(tmp_path, tiny_checkpoints):
    checkpoint = str(tiny_checkpoints["ast"])
    torchrun(["-m", "petl_kit", "run", "notebooks/14_lora.ipynb", "--inprocess", "-f",
              "params/quickstart/lora.yaml", "-p", "checkpoint", checkpoint, "-p", "epochs",
              "1", "-p", "n_per_class", "4", "-p", "experiment", "dp", "--name", "lora-dp"],
             tmp_path)  # fmt: skip
    runs = list((tmp_path / "outputs" / "dp").iterdir())
    assert [r.name.startswith("lora-dp-") for r in runs] == [True], runs
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["processes"] == 2
    assert json.loads((runs[0] / "ledger.json").read_text())["processes"] == 2
    assert (runs[0] / "weights").is_dir() and (runs[0] / "history.csv").is_file()


def test_a_notebook_cannot_join_the_process_group(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "notebooks/14_lora.ipynb", "-p", "epochs", "1"]) == 2
    assert "add --inprocess; a notebook's kernel cannot join" in capsys.readouterr().err


def test_devices_need_a_submitit_executor_and_runner_inprocess(tmp_path):
    f = tmp_path / "s.yaml"
    with pytest.raises(ConfigError, match=r"devices = 2 starts a process per device.*not none"):
        executor_options({"devices": 2}, f)
    with pytest.raises(ConfigError, match=r"devices = 0; expected an int >= 1"):
        executor_options({"name": "local", "devices": 0}, f)
    with pytest.raises(ConfigError, match=r"leave tasks_per_node and nodes out"):
        executor_options({"name": "local", "devices": 2, "tasks_per_node": 4}, f)
    assert executor_options({"name": "local"}, f, devices=2)["devices"] == 2
    sweep = write_sweep(
        tmp_path / "nb.yaml",
        {"experiment": "nb", "runs": [{"notebook": "notebooks/10_linear.ipynb", "name": "lin"}]},
    )
    with pytest.raises(ConfigError, match=r"devices = 2 needs runner: inprocess.*: lin"):
        check_devices(plan_sweep(sweep), executor_options({"name": "local"}, f, devices=2))


def test_sweep_runs_on_two_devices_through_submitit(tmp_path, monkeypatch, tiny_checkpoints):
    monkeypatch.chdir(REPO)
    for key, value in child_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    sweep = write_sweep(tmp_path / "dp.yaml", {
        "experiment": "dps", "runner": "inprocess",
        "executor": {"name": "local", "devices": 2, "workers": 2, "timeout_min": 10,
                     "poll_seconds": 0.5},
        "params": {"checkpoint": str(tiny_checkpoints["ast"]), "n_per_class": 4, "epochs": 1},
        "runs": [{"notebook": "notebooks/16_adapter.ipynb", "name": "adapter"},
                 {"notebook": "notebooks/16_adapter.ipynb", "name": "broken",
                  "params": {"dataset": "no_such"}}],
    })  # fmt: skip
    lines = []
    records = run_sweep(sweep, log=lines.append, progress=False)
    assert [r["status"] for r in records] == ["completed", "failed"], lines
    # process 0's own error, not the other process's lost connection
    assert records[1]["error"].startswith("ValueError: unknown dataset 'no_such'")
    runs = list((tmp_path / "outputs" / "dps").glob("adapter-*"))
    assert runs == [records[0]["run_dir"]]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["processes"] == 2
