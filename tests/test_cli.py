"""``python -m petl_kit``: argument parsing, exit codes, a real notebook run through papermill."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from petl_kit.__main__ import build_parser, main, parse_filters, parse_overrides
from tests.conftest import LIGHT_CODE, LIGHT_PARAMS, write_notebook

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))  # feature cache
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # papermill kernels inherit it
    return tmp_path / "outputs"


@pytest.fixture
def light(tmp_path):
    return write_notebook(tmp_path / "light.ipynb", LIGHT_PARAMS, LIGHT_CODE)


def test_overrides_are_read_as_yaml():
    args = build_parser().parse_args(
        [
            "run",
            "nb.ipynb",
            "-f",
            "p.yaml",
            "-p",
            "epochs",
            "3",
            "-p",
            "lr",
            "null",
            "-p",
            "head_lr",
            "1e-3",
            "-p",
            "checkpoint",
            "builtin:tiny-ast",
            "-p",
            "deep",
            "false",
        ]
    )
    assert args.notebook == Path("nb.ipynb") and args.params_file == Path("p.yaml")
    assert parse_overrides(args.param) == {
        "epochs": 3,
        "lr": None,
        "head_lr": 0.001,
        "checkpoint": "builtin:tiny-ast",
        "deep": False,
    }


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linear") and "bitfit" in out and "full_ft" in out


def test_user_errors_exit_2_without_traceback(light, tmp_path, capsys, outputs):
    assert main(["run", str(light), "-p", "nope", "1"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "-p overrides" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: many\n")
    assert main(["run", str(light), "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x = 'many'" in err and "bad.yaml" in err and "expected int" in err
    assert main(["run", str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert main(["report", "never_ran"]) == 2
    assert not outputs.exists()  # nothing ran


def test_run_sweep_report_and_a_failing_run(light, tmp_path, capsys, outputs):
    params = tmp_path / "p.yaml"
    params.write_text("x: 4\nexperiment: cli\n")
    assert main(["run", str(light), "-f", str(params), "-p", "rate", "2"]) == 0
    (run_dir,) = (outputs / "cli").iterdir()
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["rate"] == 2
    assert main(["run", str(light), "-f", str(params), "-p", "fail", "true"]) == 1
    assert "run failed" in capsys.readouterr().err
    failed = [d for d in (outputs / "cli").iterdir() if d != run_dir]
    assert json.loads((failed[0] / "metrics.json").read_text())["status"] == "failed"

    assert main(["report", "cli"]) == 0
    assert "| linear | 40 | 0.400 |" in capsys.readouterr().out

    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "experiment": "cli",
                "runs": [
                    {"notebook": str(light), "params_file": str(params), "params": {"rate": 2}},
                    {"notebook": str(light), "params": {"fail": True}},
                ],
            }
        )
    )
    assert main(["sweep", str(sweep)]) == 1  # one failure: the sweep finishes, then exits 1
    out = capsys.readouterr().out
    assert "[1/2] linear: skipped" in out and "[2/2] linear: failed" in out


def test_real_method_notebook_through_papermill(tiny_checkpoints, tmp_path, outputs, caplog):
    """notebooks/12_bitfit.ipynb end to end on a tiny backbone."""
    notebook = shutil.copy(REPO / "notebooks" / "12_bitfit.ipynb", tmp_path / "12_bitfit.ipynb")
    params = tmp_path / "tiny.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "checkpoint": str(tiny_checkpoints["ast"]),
                "n_per_class": 3,
                "epochs": 1,
                "batch_size": 12,
            }
        )
    )
    args = ["run", str(notebook), "-f", str(params), "-p", "experiment", "nb", "-p", "seed", "3"]
    assert main(args) == 0
    (run_dir,) = (outputs / "nb").iterdir()
    assert run_dir.name.startswith("bitfit-") and (run_dir / "12_bitfit.ipynb").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["method"] == "bitfit"
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["seed"] == 3
    assert (run_dir / "weights" / "trainable.safetensors").is_file()
    # papermill cannot parse `str | None` annotations; its "unknown parameter" warnings are muted
    assert not [r for r in caplog.records if "Passed unknown parameter" in r.getMessage()]


def test_sweep_and_report_options(light, tmp_path, capsys, outputs):
    args = build_parser().parse_args(
        ["sweep", "s.yaml", "--workers", "2", "--runner", "inprocess", "-p", "epochs", "3"]
    )
    assert (args.workers, args.executor, args.runner) == (2, None, "inprocess")
    assert args.param == [["epochs", "3"]]
    assert parse_filters(["git_commit=1a2b", "seed=0", "seed=1"]) == {
        "git_commit": ["1a2b"], "seed": ["0", "1"]
    }  # fmt: skip
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"experiment": "opt", "grid": {"notebook": [str(light)],
                                                                   "x": [1, 2]}}))  # fmt: skip
    assert main(["sweep", str(sweep), "-p", "rate", "0.25", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] light-x1: completed" in out and "sweep done: 2 completed" in out
    rates = {yaml.safe_load((d / "params.yaml").read_text())["rate"] for d in
             (outputs / "opt").iterdir()}  # fmt: skip
    assert rates == {0.25}

    assert main(["report", "opt", "--filter", "x=2"]) == 0
    out = capsys.readouterr().out
    assert "Runs: 1 completed (filtered: x=['2'])" in out and "paper_table_tex:" in out
    assert main(["report", "opt", "--filter", "nope=1"]) == 2
    assert "no column(s) ['nope']" in capsys.readouterr().err
    assert main(["report", "opt", "--filter", "x"]) == 2
    assert "expected COLUMN=VALUE" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--workers", "0"]) == 2
    assert "workers = 0" in capsys.readouterr().err
