"""petl_kit: parameter-efficient transfer learning of pretrained audio transformers.

>>> import petl_kit as pk
>>> pk.list_methods()
>>> model = pk.build_model(backbone="ast", num_classes=31, method="bitfit")
>>> pk.count_parameters(model)["trainable"]
"""

__version__ = "0.1.0"

from .backbones import FAMILIES, CheckpointError, load_backbone, tiny_config
from .config import ConfigError
from .data import load_dataset
from .efficiency import count_parameters
from .methods import get_method, list_methods, make_config, register_method
from .model import PetlModel, build_model, load_trained, save_trained
from .musicfm import MusicFMConfig, MusicFMModel, load_musicfm

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "ConfigError",
    "PetlModel",
    "build_model",
    "count_parameters",
    "get_method",
    "list_methods",
    "load_dataset",
    "load_backbone",
    "load_musicfm",
    "load_trained",
    "make_config",
    "MusicFMConfig",
    "MusicFMModel",
    "register_method",
    "save_trained",
    "tiny_config",
    "__version__",
]

# Runs: notebook parameters, run folders, headless execution, sweeps, reports.
from .provenance import new_run_dir  # noqa: E402
from .report import collect_results, write_report  # noqa: E402
from .runs import (  # noqa: E402
    RunFailed,
    RunResult,
    collect_params,
    load_params_file,
    notebook_parameters,
    run_experiment,
    run_notebook,
    validate_params,
)
from .sweep import run_sweep  # noqa: E402

__all__ += [
    "RunFailed",
    "RunResult",
    "collect_params",
    "collect_results",
    "load_params_file",
    "new_run_dir",
    "notebook_parameters",
    "run_experiment",
    "run_notebook",
    "run_sweep",
    "validate_params",
    "write_report",
]

# Music: MERT-v1 folders, named method presets (the music paper's adapter and LoRA, ...).
from .mert import load_mert  # noqa: E402
from .methods.registry import list_presets, method_preset  # noqa: E402

__all__ += ["list_presets", "load_mert", "method_preset"]

# Efficiency: FLOPs per example (the run ledger's measure) and Pareto fronts of runs.
from .efficiency import flops_per_example, pareto_front  # noqa: E402

__all__ += ["flops_per_example", "pareto_front"]

# Results across runs: filters, mean ± population-std aggregation, paper tables; sweep plans.
from .results import aggregate_results, filter_results, paper_table  # noqa: E402
from .sweep import plan_sweep  # noqa: E402

__all__ += ["aggregate_results", "filter_results", "paper_table", "plan_sweep"]
