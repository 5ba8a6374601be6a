"""Every file in params/ is valid for its notebook, and every notebook keeps the run contract.

papermill only warns on unknown parameters (design §6), so these checks are what keeps a params
file and its notebook in step. A params file belongs to the notebook a sweep runs it with, else
to ``notebooks/*_<file stem>.ipynb``.
"""

from pathlib import Path

import nbformat
import pytest

import petl_kit as pk
from petl_kit.experiments.provenance import load_yaml
from petl_kit.experiments.runs import COMMON_KEYS, known_keys, type_matches
from petl_kit.experiments.sweep import plan_sweep

REPO = Path(__file__).resolve().parents[2]
PARAMS = sorted((REPO / "params").rglob("*.yaml"))
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SWEEPS = [p for p in PARAMS if "runs" in (load_yaml(p.read_text()) or {})]


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _method(notebook: Path) -> str | None:
    return pk.notebook_parameters(notebook).get("method", {}).get("default")


@pytest.mark.parametrize("sweep", SWEEPS, ids=_rel)
def test_sweep_files_plan(sweep):
    specs = plan_sweep(sweep)
    assert specs, f"{sweep} has no runs"
    names = [s.name for s in specs]
    assert len(set(names)) == len(names), f"{sweep}: run names repeat: {names}"


def _owner(params_file: Path, params: dict) -> Path | None:
    """The sweep's notebook for the file, else the notebook of its `method`, else by stem."""
    for sweep in SWEEPS:
        for spec in plan_sweep(sweep):
            if Path(spec.source).resolve() == params_file.resolve():
                return spec.notebook
    if "method" in params:
        method = pk.get_method(params["method"]).name
        return next((n for n in NOTEBOOKS if _method(n) == method), None)
    return next(iter(sorted((REPO / "notebooks").glob(f"*_{params_file.stem}.ipynb"))), None)


@pytest.mark.parametrize("params_file", [p for p in PARAMS if p not in SWEEPS], ids=_rel)
def test_params_file_is_flat_and_valid_for_its_notebook(params_file):
    params = pk.load_params_file(params_file)
    notebook = _owner(params_file, params)
    if notebook is not None:
        pk.validate_params(notebook, params, source=str(params_file))
        return
    # its method's notebook is not written yet: hold it to what run_experiment accepts
    assert "method" in params, (
        f"{params_file}: no notebook runs it; give it a `method`, reference it from a sweep or "
        "name it after a notebook (notebooks/NN_<stem>.ipynb)"
    )
    unknown = sorted(set(params) - set(known_keys(pk.get_method(params["method"]).name)))
    assert not unknown, f"{params_file}: keys no run understands: {unknown}"


def test_the_quickstart_exists():
    assert REPO / "params" / "quickstart.yaml" in SWEEPS
    assert plan_sweep(REPO / "params" / "quickstart.yaml")[0].experiment == "quickstart"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_rel)
def test_notebook_is_committed_clean(notebook):
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.get("kernelspec") == {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit without outputs"
    for name, p in pk.notebook_parameters(notebook).items():
        assert type_matches(p["default"], p["type"]), f"{name}: default {p['default']!r}"
        assert p["help"] or name in ("epochs", "batch_size", "seed"), f"{name} has no comment"


@pytest.mark.parametrize("notebook", [n for n in NOTEBOOKS if _method(n)], ids=_rel)
def test_method_notebook_parameters(notebook):
    """Common keys + the method's keys; nothing run_experiment would not understand; a tiny
    CPU run on the synthetic set by default."""
    spec = pk.notebook_parameters(notebook)
    method = _method(notebook)
    assert pk.get_method(method).name == method
    missing = [k for k in (*COMMON_KEYS, *pk.methods.config_keys(method)) if k not in spec]
    assert not missing, f"missing parameters {missing}"
    unknown = [k for k in spec if k not in known_keys(method)]
    assert not unknown, f"parameters run_experiment does not know: {unknown}"
    defaults = {k: v["default"] for k, v in spec.items()}
    assert defaults["dataset"] == "synthetic" and defaults["device"] == "cpu"
    assert defaults["checkpoint"] == "builtin:tiny-ast" and defaults["run_dir"] is None
    assert defaults["epochs"] <= 15  # about two minutes on two cores (notebook_defaults.md)
    source = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells)
    assert "pk.run_experiment(pk.collect_params(globals()))" in source
