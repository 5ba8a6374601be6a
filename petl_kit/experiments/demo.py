"""A tiny experiment to look at when ``outputs/`` holds none: the dashboard's demo
(notebook ``30_compare``)."""

from __future__ import annotations

from ..methods import config_keys
from .report import collect_results
from .runs import run_experiment

# learning rates measured on the tiny AST (params/quickstart/*.yaml); the reference LRs are for
# AST-base and barely move the tiny model in a few epochs
DEMO_LR = {"linear": 0.01, "full_ft": 0.001, "bitfit": 0.02, "prompt_tuning": 0.01, "lora": 0.01,
           "prefix_tuning": 0.03, "adapter": 0.01, "dense_moa": 0.01, "soft_moa": 0.01}  # fmt: skip


def demo_experiment(
    experiment: str = "compare_demo",
    *,
    methods=("linear", "bitfit", "lora"),
    seeds=(0, 1),
    epochs: int = 6,
    n_per_class: int = 20,
    checkpoint: str = "builtin:tiny-ast",
) -> str:
    """A tiny experiment to look at: every method × seed on the synthetic task (12 classes,
    chance 0.083; tiny AST, CLS pooling, the :data:`DEMO_LR` learning rates, ``reduction_rate``
    8 where the method has one), unless ``experiment`` already holds a completed run. With the
    defaults every method reaches about 0.2-0.3 test accuracy (notebook_defaults.md). Returns
    ``experiment``."""
    runs = collect_results(experiment)
    if "status" in runs and (runs["status"] == "completed").any():
        return experiment
    splits = None
    for method in methods:
        for seed in seeds:
            run = run_experiment({
                "experiment": experiment, "run_dir": None, "method": method,
                "dataset": "synthetic", "data_path": None, "n_per_class": n_per_class,
                "backbone": "ast", "checkpoint": checkpoint, "max_length": 100, "pooling": "CLS",
                "epochs": epochs, "batch_size": 16, "lr": DEMO_LR.get(method), "seed": seed,
                "profile": "corrected", "device": "cpu", "progress": False,
                # bottleneck / rank hidden / 8: defaults meant for d = 768 round to 0-1 here
                **({"reduction_rate": 8} if "reduction_rate" in config_keys(method) else {}),
            }, splits=splits)  # fmt: skip
            splits = run.splits
    return experiment
