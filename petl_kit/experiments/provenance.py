"""Run folders and what a run records about itself: where outputs go, unique run ids, versions.

A run folder is ``<outputs>/<experiment>/<name>-<YYYYmmdd-HHMMSS>-<4 hex>/`` (design §5), where
``<outputs>`` is ``$PETL_KIT_OUTPUTS``, else the ``outputs/`` folder of the petl_kit checkout the
current directory is in (so a notebook opened from ``notebooks/`` writes to the same place as
``python -m petl_kit`` run from the repository root), else ``./outputs``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def outputs_root() -> Path:
    """Where experiments live (see the module docstring)."""
    env = os.environ.get("PETL_KIT_OUTPUTS")
    if env:
        return Path(env).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "petl_kit").is_dir():
            return folder / "outputs"
    return here / "outputs"


def check_segment(value: str, what: str) -> str:
    """A name used as one folder level: letters, digits and ``_ . + = -``, no leading dot."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ConfigError(
            f"{what} {value!r} cannot name a folder; use letters, digits and '_', '-', '.', '+', "
            "'=' (not starting with '.' or '-')"
        )
    return value


def experiment_dir(experiment: str) -> Path:
    return outputs_root() / check_segment(experiment, "experiment")


def run_name(run_dir: str | Path) -> str:
    """The ``name`` part of a run folder ``<name>-<YYYYmmdd-HHMMSS>-<hex>``."""
    parts = Path(run_dir).name.rsplit("-", 3)
    return parts[0] if len(parts) == 4 else Path(run_dir).name


# ---------------------------------------------------------------------------- files
def _plain(value: Any) -> Any:
    """JSON/YAML-safe view: tuples → lists, paths → str, numpy/torch scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writer process
    tmp.write_text(json.dumps(_plain(data), indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; a params file means the float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` / ``5E4`` as floats."""
    return yaml.load(text, Loader=_Loader)


def write_yaml(path: Path, data: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(_plain(data), sort_keys=False))
    tmp.replace(path)
    return path


def canonical(params: dict) -> str:
    """A stable text of a parameter set (``run_dir`` left out), to recognise identical runs."""
    plain = {k: v for k, v in _plain(params).items() if k != "run_dir"}
    return json.dumps(plain, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- versions
def git_commit(folder: Path | None = None) -> dict[str, Any] | None:
    """``{'commit', 'dirty'}`` of the git checkout holding the kit, or None outside one."""
    folder = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: str) -> str:
    """A readable name of the device a run uses (``'cpu'``, ``'cuda:0 (NVIDIA H100 ...)'``)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# Libraries whose version can change a result or a run's behaviour (results columns by name).
LIBRARIES = ("torch", "torchaudio", "transformers", "numpy", "scikit-learn", "pandas",
             "safetensors", "papermill", "submitit")  # fmt: skip


def versions(device: str = "cpu", seed: int | None = None) -> dict[str, Any]:
    """What ``versions.json`` records: the kit, its git commit, libraries, Python, CUDA, host,
    device, seed (the results table has one column per key: ``git_commit``, ``torch``...)."""
    import torch

    from .. import __version__

    return {
        "petl_kit": __version__,
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{lib: _version(lib) for lib in LIBRARIES},
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "device": device_name(device),
        "seed": seed,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
