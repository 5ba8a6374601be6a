"""petl_kit: parameter-efficient transfer learning of pretrained audio transformers.

>>> import petl_kit as pk
>>> pk.list_backbones(), pk.list_methods(), pk.list_presets(), pk.list_datasets()  # names
>>> model = pk.build_model(backbone="ast", num_classes=31, method="bitfit")
>>> pk.count_parameters(model)["trainable"]
"""

__version__ = "0.1.0"

# Models: backbones (AST, wav2vec2, HuBERT, MERT, MusicFM, the scratch baseline), methods, presets.
from .backbones.mert import load_mert
from .backbones.musicfm import MusicFMConfig, MusicFMModel, load_musicfm
from .backbones.registry import (
    FAMILIES,
    CheckpointError,
    list_backbones,
    load_backbone,
    tiny_config,
)
from .config import ConfigError
from .data import list_datasets, load_dataset
from .efficiency import count_parameters, flops_per_example, pareto_front

# Runs: notebook parameters, run folders, headless execution, sweeps, results and reports.
from .experiments.claims import new_run_dir
from .experiments.report import collect_results, write_report
from .experiments.results import aggregate_results, filter_results, paper_table
from .experiments.runs import (
    RunFailed,
    RunResult,
    collect_params,
    load_params_file,
    notebook_parameters,
    run_experiment,
    run_notebook,
    validate_params,
)
from .experiments.sweep import plan_sweep, run_sweep
from .methods import get_method, list_methods, make_config, register_method
from .methods.registry import list_presets, method_preset
from .model import PetlModel, build_model, load_trained, save_trained

# Use and share: predict with a finished run, export it (transformers, PEFT, the kit's format).
from .share import export_run, load_run

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "ConfigError",
    "MusicFMConfig",
    "MusicFMModel",
    "PetlModel",
    "RunFailed",
    "RunResult",
    "__version__",
    "aggregate_results",
    "build_model",
    "collect_params",
    "collect_results",
    "count_parameters",
    "export_run",
    "filter_results",
    "flops_per_example",
    "get_method",
    "list_backbones",
    "list_datasets",
    "list_methods",
    "list_presets",
    "load_backbone",
    "load_dataset",
    "load_mert",
    "load_musicfm",
    "load_params_file",
    "load_run",
    "load_trained",
    "make_config",
    "method_preset",
    "new_run_dir",
    "notebook_parameters",
    "pareto_front",
    "paper_table",
    "plan_sweep",
    "register_method",
    "run_experiment",
    "run_notebook",
    "run_sweep",
    "save_trained",
    "tiny_config",
    "validate_params",
    "write_report",
]
