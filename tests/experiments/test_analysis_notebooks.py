"""Analysis notebooks (metadata ``petl_kit.trains: false``): judged by their execution, recorded
completed without scores by ``run_notebook`` and sweeps; a training notebook that writes no
metrics still fails. The kit's own analysis notebooks say so in their metadata."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

import petl_kit as pk
from petl_kit.config import ConfigError
from petl_kit.experiments.notebook_params import notebook_trains
from petl_kit.experiments.sweep import run_sweep

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
PARAMS = 'experiment: str = "look"  # outputs/<experiment>/\nfail: bool = False\n'
CODE = 'if fail:\n    raise ValueError("broken analysis")\nprint("looked")\n'


def notebook(path: Path, trains) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL})
    if trains is not None:
        nb.metadata["petl_kit"] = {"trains": trains}
    cell = nbformat.v4.new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(CODE)]
    nbformat.write(nb, path)
    return path


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def test_the_kits_analysis_notebooks_declare_it():
    analysis = {"00_data_prep", "20_moa_analysis", "21_router_slots", "30_compare"}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert notebook_trains(path) == (path.stem not in analysis), path.name


def test_a_bad_declaration_is_an_error(tmp_path):
    path = notebook(tmp_path / "bad.ipynb", "no")
    with pytest.raises(ConfigError, match=r"bad.ipynb.*petl_kit.trains = 'no'.*true or false"):
        notebook_trains(path)
    with pytest.raises(ConfigError, match="petl_kit.trains"):
        pk.run_notebook(path, {})


def test_analysis_runs_complete_without_metrics_and_sweeps_agree(tmp_path, outputs):
    look = notebook(tmp_path / "look.ipynb", False)
    run_dir = pk.run_notebook(look, {})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["trains"] is False
    assert "test" not in metrics and (run_dir / "look.ipynb").is_file()

    with pytest.raises(pk.RunFailed, match="broken analysis") as err:
        pk.run_notebook(look, {"fail": True}, experiment="other")
    assert json.loads((err.value.run_dir / "metrics.json").read_text())["status"] == "failed"

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"experiment": "sw", "runs": [
        {"notebook": str(look), "params": {}, "name": "look"}]}))  # fmt: skip
    records = run_sweep(sweep, progress=False)
    assert [r["status"] for r in records] == ["completed"]
    found = (outputs / "sw").glob("*/metrics.json")
    statuses = [json.loads(m.read_text())["status"] for m in found]
    assert statuses == ["completed"]  # no failed run left behind


def test_a_training_notebook_without_metrics_still_fails(tmp_path):
    silent = notebook(tmp_path / "silent.ipynb", None)
    with pytest.raises(pk.RunFailed, match="without a completed metrics.json"):
        pk.run_notebook(silent, {})
