"""Every method notebook's default run learns: the mean of its validation and test accuracy is
at least MARGIN × chance (12 classes: chance 0.083, so 0.167). Measured values and runtimes:
benchmarks/results/notebook_defaults.md.

The notebooks are not executed twice: `make test` (`pytest tests notebooks`) runs each one
through nbval, which writes its default run to ``$PETL_KIT_OUTPUTS/scratch/<method>-<id>/``; this
test is ordered after them (``after_notebooks``, see the root conftest.py) and reads those
folders. Run alone (no notebook in the session) it is skipped and says so.
"""

from pathlib import Path

import pytest
import yaml

import petl_kit as pk
from petl_kit.experiments.provenance import outputs_root, read_json
from petl_kit.views.plots import chance_level

pytestmark = pytest.mark.after_notebooks
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("1[0-9]_*.ipynb"))
# the weakest default measured (full_ft, 0.22 mean accuracy) is 2.7 × chance; 2 × chance is
# z > 3 above guessing on 144 clips (val + test), and leaves room for other CPUs and BLAS
MARGIN = 2.0


def _defaults(notebook: Path) -> dict:
    return {k: v["default"] for k, v in pk.notebook_parameters(notebook).items()}


def _default_runs(notebook: Path) -> list[Path]:
    """Completed run folders of the notebook's method whose params are its defaults."""
    defaults = _defaults(notebook)
    found = []
    for metrics in sorted((outputs_root() / defaults["experiment"]).glob("*/metrics.json")):
        params = yaml.safe_load((metrics.parent / "params.yaml").read_text()) or {}
        same = all(params.get(k) == v for k, v in defaults.items() if k != "run_dir")
        if same and (read_json(metrics) or {}).get("status") == "completed":
            found.append(metrics.parent)
    return found


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_default_run_beats_chance(notebook, request):
    executed = getattr(request.config, "petl_notebooks", [])
    if notebook.stem not in executed:
        pytest.skip(f"{notebook.name} is not executed in this session: run `pytest tests "
                    "notebooks` (make test) to check its default run")  # fmt: skip
    runs = _default_runs(notebook)
    assert runs, (
        f"{notebook.name} ran in this session but left no completed default run under "
        f"{outputs_root() / _defaults(notebook)['experiment']}"
    )
    metrics = read_json(runs[-1] / "metrics.json")
    chance = chance_level(metrics["task"], _num_classes(runs[-1]))
    score = (metrics["val"]["accuracy"] + metrics["test"]["accuracy"]) / 2
    assert score >= MARGIN * chance, (
        f"{notebook.name}: default run at mean val/test accuracy {score:.3f}, under "
        f"{MARGIN} × chance ({chance:.3f}); see {runs[-1]}"
    )


def _num_classes(run_dir: Path) -> int:
    build = read_json(run_dir / "weights" / "build_args.json") or {}
    assert build.get("num_classes"), f"{run_dir}: no num_classes in weights/build_args.json"
    return build["num_classes"]
