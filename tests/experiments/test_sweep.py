"""Sweeps at scale: grids, every method × 2 seeds, interrupt + resume, failures, submitit workers.

Time budget: the every-method grid (18 runs + a failing one) runs in this process
(``runner: inprocess``: ``run_experiment`` on the notebooks' resolved parameters) on the tiny AST
with 3 clips per class and 1 epoch; papermill and submitit's local executor (2 workers) run a
smaller sweep of a notebook that needs no model, so worker processes and kernels are exercised
without training 18 models through them.
"""

import json
from pathlib import Path

import pytest
import torch

import petl_kit as pk
from petl_kit.config import ConfigError
from petl_kit.experiments.executors import executor_options
from petl_kit.experiments.results import aggregate_results, collect_results, paper_table
from petl_kit.experiments.sweep import completed_runs, plan_sweep, run_sweep
from petl_kit.training import train
from tests.conftest import LIGHT_CODE, LIGHT_PARAMS, write_notebook, write_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers and kernels inherit it
    monkeypatch.chdir(REPO)  # notebooks/ and params/ are found from here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "outputs"
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- planning
def test_grid_expands_axes_with_precedence_and_names(tmp_path):
    lora_file = tmp_path / "lora.yaml"
    lora_file.write_text("lr: 0.02\nalpha: 4.0\n")
    sweep = write_sweep(tmp_path / "g.yaml", {
        "experiment": "g",
        "params": {"epochs": 2, "lr": 0.5},
        "grid": {
            "method": {"linear": None, "lora": str(lora_file)},
            "dataset": {"synthetic": {"n_per_class": 4}},
            "seed": [0, 1],
            "lr": [0.1],  # an axis value beats every bundle and the shared params
        },
        "runs": [{"notebook": "notebooks/12_bitfit.ipynb", "params": {"epochs": 5}}],
    })  # fmt: skip
    specs = plan_sweep(sweep)
    assert [s.name for s in specs] == ["linear-s0", "linear-s1", "lora-s0", "lora-s1", "bitfit"]
    assert [s.notebook.name for s in specs] == ["10_linear.ipynb"] * 2 + ["14_lora.ipynb"] * 2 + [
        "12_bitfit.ipynb"
    ]
    lora = specs[3].resolved
    assert (lora["lr"], lora["alpha"], lora["epochs"], lora["n_per_class"]) == (0.1, 4.0, 2, 4)
    assert lora["seed"] == 1 and lora["experiment"] == "g" and specs[3].source == str(lora_file)
    assert specs[4].resolved["epochs"] == 5 and specs[4].resolved["lr"] == 0.5
    assert specs[0].runner == "papermill" and specs[0].protocol == {}
    assert len({s.key for s in specs}) == 5


def test_protocol_axes_folds_and_episodes(tmp_path):
    sweep = write_sweep(tmp_path / "p.yaml", {
        "experiment": "p",
        "runner": "inprocess",
        "grid": {"method": ["bitfit"], "fold": "all", "shots": [1, 2], "episode": [0, 1]},
    })  # fmt: skip
    specs = plan_sweep(sweep)  # synthetic: one split, so fold "all" is fold 0
    assert [s.name for s in specs] == [
        "bitfit-k1-e0",
        "bitfit-k1-e1",
        "bitfit-k2-e0",
        "bitfit-k2-e1",
    ]
    assert specs[1].protocol == {"fold": 0, "shots": 1, "episode": 1}
    assert specs[0].key != specs[1].key  # same params, other episode: another run
    with pytest.raises(ConfigError, match="runner: inprocess"):
        plan_sweep(sweep, runner="papermill")


def test_variant_axis_name_template_and_overrides(tmp_path):
    (tmp_path / "small.yaml").write_text("method: lora\nreduction_rate: 16\n")
    (tmp_path / "big.yaml").write_text("method: lora\nreduction_rate: 4\n")
    sweep = write_sweep(tmp_path / "v.yaml", {
        "experiment": "v",
        "runs": [
            {"grid": {"variant": {"small": "small.yaml", "big": "big.yaml"}, "seed": [0, 1]}},
            {"grid": {"method": ["bitfit"], "seed": [3]}, "name": "b{method}-{seed}",
             "params": {"epochs": 7}},
        ],
    })  # fmt: skip
    specs = plan_sweep(sweep, overrides={"epochs": 2})
    assert [s.name for s in specs] == ["small-s0", "small-s1", "big-s0", "big-s1", "bbitfit-3"]
    assert [s.resolved["reduction_rate"] for s in specs[:4]] == [16, 16, 4, 4]
    assert {s.notebook.name for s in specs[:4]} == {"14_lora.ipynb"}
    assert "variant" not in specs[0].resolved  # a label, not a parameter
    assert {s.resolved["epochs"] for s in specs} == {2}  # -p beats the entry's params
    with pytest.raises(ConfigError, match=r"command-line -p: unknown parameter\(s\) 'epoch'"):
        plan_sweep(sweep, overrides={"epoch": 2})


@pytest.mark.parametrize(
    "data,message",
    [
        ({"grid": {"method": "lora"}}, r"grid\.method: expected a non-empty list"),
        ({"grid": {"seed": [0]}}, r"give a `method` or a `notebook` axis"),
        ({"grid": {"method": ["nope"]}}, r"unknown method 'nope'|'nope'"),
        ({"grid": {"method": ["lora"], "rnak": [2]}}, r"'rnak'.*14_lora.ipynb"),
        ({"grid": {"method": ["lora"], "shots": [0]}, "runner": "inprocess"}, r"shots = 0"),
        ({"grid": {"method": ["lora"], "episode": [1]}, "runner": "inprocess"}, r"needs a `shots`"),
        ({"grid": {"method": ["lora"]}, "runner": "slurmish"}, r"runner 'slurmish'; valid"),
        ({"grid": {"method": ["lora"]}, "workers": 2}, r"unknown key\(s\) \['workers'\]"),
        ({"grid": {"method": ["lora", "lora"]}}, r"are the same run"),
        ({"grid": {"method": ["lora"]}, "runs": [{"params": {}}]}, r"runs\[0\]: expected"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, outputs, data, message):
    sweep = write_sweep(tmp_path / "bad.yaml", {"experiment": "bad", **data})
    with pytest.raises((ConfigError, ValueError), match=message):
        plan_sweep(sweep)
    assert not outputs.exists()  # nothing ran


def test_bad_executor_options(tmp_path, outputs, light):
    sweep = write_sweep(tmp_path / "s.yaml", {
        "experiment": "s", "executor": {"name": "local", "bogus_option": 1},
        "runs": [{"notebook": str(light)}],
    })  # fmt: skip
    with pytest.raises(ConfigError, match="bogus_option"):
        run_sweep(sweep, progress=False)
    with pytest.raises(ConfigError, match=r"executor 'cloud'; valid: none, local, slurm, debug"):
        run_sweep(sweep, executor="cloud", progress=False)
    with pytest.raises(ConfigError, match=r"workers = 0"):
        run_sweep(sweep, workers=0, progress=False)


def test_executor_options_from_file_and_command_line():
    f = Path("s.yaml")
    assert executor_options(None, f)["name"] is None  # default: in this process
    assert executor_options(None, f, workers=3) == {
        "name": "local", "workers": 3, "devices": 1, "poll_seconds": 0.5, "state_timeout_s": 120.0,
        "submitit": {"timeout_min": 7 * 24 * 60},  # not submitit's 2 minutes
    }  # fmt: skip
    assert executor_options({"name": "local", "timeout_min": 30}, f)["submitit"] == {
        "timeout_min": 30
    }
    block = {"name": "slurm", "workers": 20, "slurm_partition": "gpu", "gpus_per_node": 1,
             "timeout_min": 30}  # fmt: skip
    opts = executor_options(block, f)
    assert (opts["name"], opts["workers"]) == ("slurm", 20)
    assert opts["submitit"] == {"slurm_partition": "gpu", "gpus_per_node": 1, "timeout_min": 30}
    assert executor_options(block, f, name="none")["name"] is None  # --executor none
    assert executor_options("debug", f)["name"] == "debug"


# ---------------------------------------------------------------------------- acceptance
def test_every_method_two_seeds_interrupted_resumed_and_a_failure(
    tiny_checkpoints, tmp_path, outputs, monkeypatch
):
    """Every registered method × seeds 0, 1 on the synthetic task, plus a run that fails."""
    methods = pk.list_methods()
    n = 2 * len(methods)
    sweep = write_sweep(tmp_path / "all.yaml", {
        "experiment": "all",
        "runner": "inprocess",
        "params": {"checkpoint": str(tiny_checkpoints["ast"]), "n_per_class": 3, "epochs": 1,
                   "batch_size": 12, "cache": True},
        "grid": {"method": methods, "seed": [0, 1]},
        "runs": [{"notebook": "notebooks/10_linear.ipynb", "name": "broken",
                  "params": {"checkpoint": str(tiny_checkpoints["ast"]), "dataset": "no_such"}}],
    })  # fmt: skip
    fit, calls = train.fit, []

    def interrupted_fit(*args, **kwargs):  # Ctrl-C during the 6th run
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", interrupted_fit)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, log=lines.append, progress=False)
    first = collect_results("all")
    assert sorted(first["status"]) == ["completed"] * 5 + ["interrupted"]
    assert len(completed_runs("all")) == 5

    monkeypatch.setattr(train, "fit", fit)
    records = run_sweep(sweep, log=lines.append, progress=False)
    statuses = [r["status"] for r in records]
    assert statuses == ["skipped"] * 5 + ["completed"] * (n - 5) + ["failed"]
    assert len({r["run_dir"] for r in records}) == n + 1  # no run shares a folder
    broken = json.loads((records[-1]["run_dir"] / "metrics.json").read_text())
    assert "no_such" in broken["error"] and "Traceback" in broken["traceback"]
    assert f"sweep done: {n - 5} completed, 5 skipped, 1 failed" in lines[-1]

    df = collect_results("all")
    assert len(df) == n + 2  # + the interrupted run and the failed one, all kept
    assert {"git_commit", "torch", "transformers", "petl_kit", "device_name", "runner"} <= set(df)
    assert set(df.loc[df["status"] == "completed", "runner"]) == {"inprocess"}
    agg = aggregate_results(df)
    assert sorted(agg["method"]) == sorted(methods) and set(agg["n"]) == {2}
    done = df[df["status"] == "completed"]
    lora = done[done["method"] == "lora"]["test_accuracy"]
    row = agg[agg["method"] == "lora"].iloc[0]
    assert row["test_accuracy"] == pytest.approx(lora.mean())
    assert row["test_accuracy_std"] == pytest.approx(lora.std(ddof=0))
    table = paper_table(df)
    assert len(table) == len(methods) and list(table.columns)[:2] == [
        "method",
        "trainable params",
    ]
    assert table["synthetic"].str.fullmatch(r"\d+\.\d\d ± \d+\.\d\d").all()

    assert all(r["status"] == "skipped" for r in run_sweep(sweep, log=lines.append,
                                                           progress=False)[:n])  # fmt: skip


def test_few_shot_episodes_run_in_process(tiny_checkpoints, tmp_path, outputs):
    sweep = write_sweep(tmp_path / "fs.yaml", {
        "experiment": "fs", "runner": "inprocess",
        "params": {"checkpoint": str(tiny_checkpoints["ast"]), "n_per_class": 4, "epochs": 1},
        "grid": {"method": ["linear"], "fold": "all", "shots": [1], "episode": [0, 1]},
    })  # fmt: skip
    records = run_sweep(sweep, progress=False, log=lambda _: None)
    assert [r["status"] for r in records] == ["completed", "completed"]
    for episode, record in enumerate(records):
        info = json.loads((record["run_dir"] / "dataset.json").read_text())
        shot = info["load_dataset"]["few_shot"]
        assert info["sizes"]["train"] == 12 and info["load_dataset"]["episode"] == episode
        assert (shot["k"], shot["seed"], shot["sampler"]) == (1, episode, "random_episodes")
    df = collect_results("fs")
    assert sorted(df["episode"]) == [0, 1] and set(df["shots"]) == {1} and set(df["fold"]) == {0}
    assert aggregate_results(df)["n"].tolist() == [2]
    assert list(paper_table(df).columns) == ["method", "trainable params", "synthetic k=1"]


@pytest.fixture
def light(tmp_path):
    return write_notebook(tmp_path / "light.ipynb", LIGHT_PARAMS, LIGHT_CODE)


def test_papermill_runs_on_two_submitit_workers(light, tmp_path, outputs):
    """Two notebook runs at once in submitit's local worker processes; one of them fails."""
    sweep = write_sweep(tmp_path / "w.yaml", {
        "experiment": "w",
        "executor": {"name": "local", "timeout_min": 10},
        "grid": {"notebook": [str(light)], "x": {1: None, 2: {"fail": True}}},
    })  # fmt: skip
    lines = []
    records = run_sweep(sweep, workers=2, log=lines.append, progress=False)
    assert [r["name"] for r in records] == ["light-x1", "light-x2"]
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert "submitit local executor, 2 worker(s)" in lines[0]
    good = json.loads((records[0]["run_dir"] / "metrics.json").read_text())
    assert good["test"]["accuracy"] == pytest.approx(0.1)
    assert (records[0]["run_dir"] / "light.ipynb").is_file()  # executed by papermill
    bad = json.loads((records[1]["run_dir"] / "metrics.json").read_text())
    assert bad["status"] == "failed" and "boom 2" in bad["error"] and "boom 2" in bad["traceback"]
    logs = list((outputs / "w" / ".submitit").glob("*_log.out"))
    assert len(logs) == 2  # one worker process per run
    df = collect_results("w")
    assert sorted(df["status"]) == ["completed", "failed"] and set(df["runner"]) == {"papermill"}
    assert json.loads(df.loc[df["status"] == "failed", "config"].iloc[0])["fail"] is True


@pytest.mark.parametrize("runner", ["papermill", "inprocess"])
def test_a_sweep_sets_precision_and_activation_checkpointing_of_every_notebook(tmp_path, runner):
    """Both training switches are parameters of every notebook that trains (methods, analysis,
    music), so a sweep, papermill and the music notebooks' comparison can set them."""
    trains = [nb for nb in sorted(Path("notebooks").glob("*.ipynb"))
              if "device" in pk.experiments.runs.notebook_parameters(nb)]  # fmt: skip
    assert len(trains) == 15
    if runner == "inprocess":  # run_experiment itself: the method notebooks
        trains = [nb for nb in trains if "method" in pk.experiments.runs.notebook_parameters(nb)]
    sweep = write_sweep(tmp_path / "s.yaml", {
        "experiment": "switches", "runner": runner,
        "params": {"precision": "bf16", "activation_checkpointing": True},
        "runs": [{"notebook": str(nb)} for nb in trains],
    })  # fmt: skip
    specs = plan_sweep(sweep)
    assert len(specs) == len(trains) >= 10
    assert all(s.resolved["precision"] == "bf16" for s in specs)
    assert all(s.resolved["activation_checkpointing"] is True for s in specs)
