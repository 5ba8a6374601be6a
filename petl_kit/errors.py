"""Every error type of the kit, in one leaf module that everything may import.

Each message names the file, key or value at fault and says what would be valid.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DataWarning",
    "DatasetError",
    "ExportError",
    "MertCheckpointError",
    "RunClaimed",
    "RunFailed",
]


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message says what would be."""


class CheckpointError(OSError):
    """A checkpoint could not be found or loaded; the message says how to supply a local copy."""


class MertCheckpointError(CheckpointError):
    """A MERT folder is incomplete or does not fit the kit's HuBERT mapping."""


class DatasetError(ValueError):
    """A dataset's layout, manifest or labels are not what the loader expects."""


class DataWarning(UserWarning):
    """Data a run can use but whose results cover less than it seems (a class absent from val or
    test, files an audiofolder skipped); also recorded in the run's ``metrics.json``."""


class ExportError(ValueError):
    """A run cannot be exported in the asked format; the message says why and which format can."""


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or does not match what was asked of it."""


class RunFailed(RuntimeError):
    """A run raised; its folder (``run_dir``) holds ``metrics.json`` with status ``failed``."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


class RunClaimed(RuntimeError):
    """A run folder or run key is held by another process, or a folder already holds results."""
