"""The music notebooks' comparison: several recipes trained on the same splits, one table.

``notebooks/40_music_tagging``, ``41_music_key`` and ``42_music_tempo`` differ only in their task
and their last look; the loop they share lives here::

    splits = music_compare.load_splits(globals())          # the notebook's data parameters
    comparison = music_compare.compare_methods(splits, globals())
    comparison.table                                        # one row per method
    comparison.folder                                       # outputs/<experiment>/compare-<id>/
    labels, probs = comparison.test_outputs("lora")         # clip-level test outputs

Each method's run folder is ``<folder>/<method>/`` (``run_experiment``'s usual contents); the
comparison folder's own ``metrics.json`` has ``kind: "compare"`` and names them, so the report
and the dashboard read the methods' runs (``results._run_dirs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ConfigError

# every recipe the comparison knows, in the music paper's order
RECIPES = ("probing", "full_ft", "adapter", "lora", "ssf", "scratch")
# the notebook parameters compare_methods reads (a notebook passes its globals())
COMPARE_KEYS = (
    "experiment", "run_dir", "dataset", "data_path", "backbone", "checkpoint", "encoder_depth",
    "max_length", "profile", "methods", "probe_layers", "epochs", "batch_size", "probe_lr",
    "ft_lr", "petl_lr", "scratch_lr", "min_lr", "train_crop", "eval_segment", "select", "seed",
    "device", "precision", "activation_checkpointing",
)  # fmt: skip
# data parameters of the generated sets (synthetic_key, ...); ignored for a real data_path
SYNTHETIC_KEYS = ("n_per_class", "clip_seconds", "bpm_step")


def _pick(params: Mapping[str, Any], keys, where: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ConfigError(
            f"{where}: missing parameter(s) {', '.join(missing)}; a music comparison needs "
            f"{', '.join(keys)}"
        )
    return {k: params[k] for k in keys}


def load_splits(params: Mapping[str, Any]):
    """The splits of ``params['dataset']``: a generated set (``data_path`` None) takes the
    :data:`SYNTHETIC_KEYS` present in ``params`` (None values left out)."""
    from ..data import load_dataset

    p = _pick(params, ("dataset", "data_path"), "load_splits")
    options = {}
    if p["data_path"] is None:
        options = {k: params[k] for k in SYNTHETIC_KEYS if params.get(k) is not None}
    return load_dataset(p["dataset"], p["data_path"], **options)


def recipes(p: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Run parameters of each recipe of :data:`RECIPES` under ``p['profile']`` (presets
    ``music_probe``, ``music_finetune``, ``music_adapter``, ``music_lora``, ``music_ssf``; the
    scratch CNN)."""
    from ..methods.registry import method_preset

    def preset(name, **run):
        chosen = method_preset(name, p["profile"])
        return {**chosen["method_config"], "method": chosen["method"], **run}

    return {
        "probing": preset("music_probe", head="mlp", layer_aggregation=p["probe_layers"],
                          lr=p["probe_lr"], min_lr=p["probe_lr"]),  # fmt: skip
        # the music recipe fine-tunes everything, the conv feature encoder included
        "full_ft": preset("music_finetune", lr=p["ft_lr"]),
        "adapter": preset("music_adapter", lr=p["petl_lr"]),
        "lora": preset("music_lora", lr=p["petl_lr"]),
        "ssf": preset("music_ssf", lr=p["petl_lr"]),
        "scratch": {"method": "full_ft", "backbone": "scratch", "checkpoint": None,
                    "encoder_depth": None, "ft_last_n_layers": "all", "lr": p["scratch_lr"]},
    }  # fmt: skip


@dataclass
class MusicComparison:
    """What :func:`compare_methods` returns: ``results`` (method → ``RunResult``), ``table``
    (one row per method), ``folder`` (the comparison's run folder), ``score`` (the task's
    primary metric)."""

    splits: Any
    folder: Path
    score: str
    results: dict[str, Any] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def test_outputs(self, name: str):
        """Clip-level ``(labels [N] or [N, C], probabilities [N, C])`` of method ``name`` on the
        test split, from its selected weights (segmented runs: the mean over segments)."""
        from ..training.metrics import clip_probabilities, evaluate

        result = self.results[name]
        task = self.splits.task
        _, out = evaluate(result.model, result.loaders["test"], task, return_outputs=True)
        if "clip_probs" in out:
            return out["clip_labels"].numpy(), out["clip_probs"].numpy()
        return out["labels"].numpy(), clip_probabilities(task, out["logits"]).numpy()


def compare_methods(splits, params: Mapping[str, Any], *, log=print) -> MusicComparison:
    """Train each method of ``params['methods']`` (comma-separated, from :data:`RECIPES`) on
    ``splits`` with the music recipe (Adam, no weight decay, cosine to ``min_lr``, gradient
    clipping 1.0) and return the comparison.

    ``params``: a mapping holding :data:`COMPARE_KEYS` (a notebook passes ``globals()``).
    ``run_dir`` None makes ``outputs/<experiment>/compare-<id>/``; each method writes
    ``<folder>/<method>/``. ``log``: one line per finished method (None: quiet).

    Raises:
        ConfigError naming an unknown method and the valid ones, or a missing parameter.
    """
    from ..training.metrics import METRICS, primary_metric
    from .claims import new_run_dir
    from .provenance import write_json
    from .runs import run_experiment

    p = _pick(params, COMPARE_KEYS, "compare_methods")
    known = recipes(p)
    names = [m.strip() for m in str(p["methods"]).split(",") if m.strip()]
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ConfigError(
            f"methods = {p['methods']!r}: unknown {unknown or 'none given'}; valid: "
            f"{', '.join(known)} (comma-separated)"
        )
    common = {k: p[k] for k in ("experiment", "dataset", "data_path", "backbone", "checkpoint",
                                "encoder_depth", "max_length", "epochs", "batch_size", "seed",
                                "profile", "device", "precision", "activation_checkpointing",
                                "min_lr", "train_crop", "eval_segment", "select")}  # fmt: skip
    common.update(optimizer="adam", weight_decay=0.0, grad_clip=1.0, progress=False)
    folder = Path(p["run_dir"]) if p["run_dir"] else new_run_dir(p["experiment"], "compare")
    comparison = MusicComparison(splits, folder, primary_metric(splits.task))
    for name in names:
        run = run_experiment({**common, **known[name]}, folder / name, splits=splits)
        comparison.results[name] = run
        if log is not None:
            log(f"{name:8s} test {run.metrics['test']}")
    score, results = comparison.score, comparison.results
    comparison.table = pd.DataFrame([
        {"method": name, "trainable_params": r.metrics["trainable_params"],
         **{f"test_{m}": r.metrics["test"].get(m) for m in METRICS[splits.task]},
         f"val_{score}": r.metrics["val"].get(score), "train_seconds": r.metrics["train_seconds"]}
        for name, r in results.items()
    ])  # fmt: skip
    write_json(folder / "metrics.json", {
        "status": "completed", "kind": "compare", "method": "compare", "dataset": p["dataset"],
        "task": splits.task, "runs": names,
        "trainable_params": {n: r.metrics["trainable_params"] for n, r in results.items()},
        "val": {n: r.metrics["val"] for n, r in results.items()},
        "test": {n: r.metrics["test"] for n, r in results.items()},
    })  # fmt: skip
    return comparison
