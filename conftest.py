"""Session order for `make test` (`pytest tests notebooks`): tests marked ``after_notebooks``
(tests/test_notebook_defaults.py) read what the notebooks' nbval executions wrote, so they run
last; ``config.petl_notebooks`` names the method notebooks this session executes."""

from pathlib import Path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "after_notebooks: runs after the notebooks and reads their run folders"
    )


def pytest_collection_modifyitems(session, config, items):
    config.petl_notebooks = sorted(
        {Path(str(item.fspath)).stem for item in items if str(item.fspath).endswith(".ipynb")}
    )
    later = [item for item in items if item.get_closest_marker("after_notebooks")]
    items[:] = [item for item in items if item not in later] + later
