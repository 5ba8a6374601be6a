"""The named steps of one training run (:func:`petl_kit.runs.run_experiment`), in order:

``load_data`` → ``build`` → ``make_loaders`` → ``train`` → ``write_artefacts``.

Each step fills a field of the :class:`~petl_kit.runs.RunResult`; ``write_artefacts`` writes every
file of the run folder and only then ``metrics.json`` with the final status, atomically, so a run
that says ``completed`` has all of its artefacts.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..config import ConfigError
from . import claims
from .provenance import read_json, write_json

# A run reports test metrics: it needs clips in these splits (val is optional).
RUN_SPLITS = ("train", "test")


def train_config(result, train_keys: tuple[str, ...]):
    """The run's ``TrainConfig`` from its params and profile."""
    from ..config import build
    from ..training.train import TrainConfig

    p = result.params
    values = {k: p[k] for k in train_keys if k in p}
    if "progress" not in values and os.environ.get("PETL_KIT_PROGRESS") == "0":
        values["progress"] = False  # headless (run_notebook): no one watches the bars
    return build(TrainConfig, values, p["profile"])


def load_data(result, options: dict[str, Any]) -> None:
    """``result.splits``: the given splits or ``load_dataset``; degenerate data is refused
    (``data.checks.validate_splits``: one class, unseen classes, an empty train or test)."""
    from ..data import load_dataset, validate_splits

    p = result.params
    if result.splits is None:
        result.splits = load_dataset(p["dataset"], p["data_path"], **options)
    validate_splits(result.splits, needs=RUN_SPLITS)


def build(result, method: str) -> None:
    """``result.model`` and ``result.extractor`` as the params say."""
    from ..backbones.registry import get_family
    from ..data.clip_length import run_length
    from ..methods import config_keys
    from ..model import build_model

    p, splits = result.params, result.splits
    family = get_family(p["backbone"])
    fbank = family.input_kind == "fbank"
    # clip_seconds or max_length (exactly one), in the family's frames or samples; logs the count
    # of clips cut and padded
    length = run_length(p, splits, input_kind=family.input_kind, sample_rate=family.sample_rate)
    result.model = model = build_model(
        backbone=p["backbone"],
        checkpoint=p["checkpoint"],
        backbone_config={"max_length": length} if fbank else None,
        num_classes=len(splits.classes),
        method=method,
        method_config={k: p[k] for k in config_keys(method) if k in p},
        task=splits.task,
        pooling=p.get("pooling") or "ALL",
        profile=p["profile"],
        seed=p["seed"],
        encoder_depth=p.get("encoder_depth"),
        head=p.get("head") or "linear",
        layer_aggregation=p.get("layer_aggregation") or "last",
    )
    result.extractor = model.feature_extractor(**({} if fbank else {"max_samples": length}))


def make_loaders(result, train_cfg) -> None:
    """``result.loaders``: SpecAugment (fbank), feature cache and the segment protocol."""
    from ..data import SpecAugment
    from ..training.train import segment_options

    p = result.params
    fbank = result.extractor.input_kind == "fbank"
    masks = p.get("freq_mask") or 0, p.get("time_mask") or 0
    augment = SpecAugment(*masks) if fbank and any(masks) else None
    cache = {"cache": p["cache"]} if p.get("cache") is not None else {}
    result.loaders = result.splits.loaders(
        result.extractor,
        batch_size=train_cfg.batch_size,
        spec_augment=augment,
        seed=p["seed"],
        **cache,
        **segment_options(train_cfg),  # train_crop, eval_segment, val_crop (music tasks)
    )


def train(result, train_cfg) -> bool:
    """``result.fit``; True when the backbone-output cache stood in for the model."""
    from ..training.train import fit

    fit_model, fit_loaders = result.model, result.loaders
    if result.params.get("probe_cache"):  # exact for a linear probe of a frozen backbone
        from ..training.probe_cache import cached_probe

        try:
            fit_model, fit_loaders = cached_probe(
                result.model, result.loaders, device=train_cfg.device,
                progress=train_cfg.progress,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(f"probe_cache=True: {err}") from err
    claims.pause_point("training")
    result.fit = fit(fit_model, fit_loaders, train_cfg)
    return fit_model is not result.model


def write_artefacts(result, method: str, *, probe_cache: bool, status: str) -> None:
    """history.csv, ledger.json, weights/, labels.json, load_report.json (what the backbone's
    weights came from), learning_curves.png, then metrics.json (``status``)."""
    import pandas as pd
    from matplotlib import pyplot as plt

    from ..efficiency import count_parameters, run_ledger
    from ..model import save_trained
    from ..views import plots

    p, run_dir, model, fr, splits = (result.params, result.run_dir, result.model, result.fit,
                                     result.splits)  # fmt: skip
    counts = count_parameters(model)
    result.metrics = metrics = {
        "status": status, "method": method, "dataset": p["dataset"],
        "backbone": p["backbone"], "profile": p["profile"], "task": splits.task,
        "trainable_params": counts["trainable"], "total_params": counts["total"],
        "param_groups": counts["groups"], "val": fr.val, "test": fr.test,
        "test_last": fr.test_last, "test_best_val": fr.test_best_val, "select": fr.select,
        "best_epoch": fr.best_epoch, "selected_epoch": fr.selected_epoch,
        "train_seconds": fr.train_seconds, "peak_memory_mb": fr.peak_memory_mb,
        "examples_per_second": fr.examples_per_second, "device": fr.device,
        "precision": fr.precision, "processes": fr.processes,
        "lr": fr.lr, "head_lr": fr.head_lr, "sizes": splits.sizes(),
        "probe_cache": probe_cache, "data_warnings": list(splits.info.get("warnings") or []),
    }  # fmt: skip
    pd.DataFrame(fr.history).to_csv(run_dir / "history.csv", index=False)
    # FLOPs, inference latency (and merged latency) on one test batch: efficiency.run_ledger
    write_json(run_dir / "ledger.json", run_ledger(model, fr, result.loaders))
    save_trained(model, run_dir / "weights")
    write_json(run_dir / "labels.json", list(splits.classes))  # class names: predict, export
    write_json(run_dir / "load_report.json", getattr(model.backbone, "petl_load_report", None))
    fig = plots.learning_curves(
        fr.history, chance=plots.chance_level(splits.task, len(splits.classes))
    )
    fig.savefig(run_dir / "learning_curves.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    started = (read_json(run_dir / "metrics.json") or {}).get("started")
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(run_dir / "metrics.json", {**metrics, "started": started, "finished": finished})
