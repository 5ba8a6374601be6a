"""Results across runs: one tidy table, filters, mean ± std aggregation, paper tables, exports.

:func:`collect_results` reads every run folder of an experiment into one row per run — its
params, its protocol (fold / shots / episode of a grid sweep), metrics (``val_<m>``,
``test_<m>``), ledger fields (FLOPs, stored bytes, latency...) and provenance (``petl_kit``
version, ``git_commit``, ``git_dirty``, ``torch``, ``transformers``, ..., ``device_name``).
:func:`aggregate_results` averages runs that differ only in seed, fold or episode:
``<metric>`` (mean), ``<metric>_std`` — the POPULATION standard deviation (``ddof=0``, as paper 1
reports its folds; one run gives 0) — and ``n``. :func:`paper_table` lays a metric out as methods ×
datasets with "mean ± std" cells and a trainable-parameter column;
:func:`petl_kit.report.export_table` writes any table as CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .claims import effective_status
from .provenance import experiment_dir, read_json, run_name

_SCALARS = (
    "status", "method", "dataset", "backbone", "profile", "task", "trainable_params",
    "total_params", "train_seconds", "peak_memory_mb", "examples_per_second", "best_epoch",
    "select", "device", "lr", "error", "started", "finished",
)  # fmt: skip
PROTOCOL = ("fold", "shots", "episode")
OVER = ("seed", "fold", "episode")  # what aggregation averages over
_NOT_CONFIG = ("seed", "run_dir", "experiment", "fold", "episode")
_EFFICIENCY = ("trainable_params", "total_params", "train_seconds", "peak_memory_mb",
               "examples_per_second")  # fmt: skip
_DESCRIBE = ("method", "dataset", "backbone", "profile", "task", "shots")


def _plain(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _provenance(versions: dict) -> dict:
    row = {}
    for key, value in versions.items():
        if key == "git":
            row["git_commit"] = (value or {}).get("commit")
            row["git_dirty"] = (value or {}).get("dirty")
        elif key == "device":
            row["device_name"] = value
        elif key not in ("seed", "time"):
            row[key] = _plain(value)
    return row


def _flatten(ledger: dict) -> dict:
    """Scalar ledger fields, nested ones one level down (``inference_ms_per_example``); the
    parameter counts are already columns (``trainable_params``...)."""
    out = {}
    for key, value in ledger.items():
        if isinstance(value, dict) and key != "parameters":
            out.update(
                {f"{key}_{k}": v for k, v in value.items() if not isinstance(v, (dict, list))}
            )
        elif not isinstance(value, (dict, list)):
            out[key] = value
    return out


def run_row(run_dir: Path, protocol: dict | None = None) -> dict[str, Any]:
    """One run folder as a flat row (see the module docstring); ``protocol``: the fold / shots /
    episode of a run inside a cross-validation folder (a sweep's runs say it in sweep.json)."""
    metrics = read_json(run_dir / "metrics.json") or {"status": "unreadable"}
    params = {}
    if (run_dir / "params.yaml").is_file():
        params = yaml.safe_load((run_dir / "params.yaml").read_text()) or {}
    sweep = read_json(run_dir / "sweep.json") or {}
    protocol = sweep.get("protocol") or protocol or {}
    config = {k: v for k, v in {**params, **protocol}.items() if k not in _NOT_CONFIG}
    row = {"run_id": run_dir.name, "name": run_name(run_dir), "run_dir": str(run_dir)}
    outer = read_json(run_dir.parent / "metrics.json") or {}
    if outer.get("kind") == "compare" or outer.get("method") == "compare":
        row["run_id"] = f"{run_dir.parent.name}/{run_dir.name}"  # compare-<id>/<method>
    if protocol and not sweep:  # fold<i>/ of a crossval folder: named after that folder
        outer = run_dir.parents[len(_nested_parts(run_dir)) - 1]
        rel = ".".join(_nested_parts(run_dir))
        row.update(run_id=f"{outer.name}:{rel}", name=run_name(outer))
    row.update({k: metrics.get(k) for k in _SCALARS})
    # a queued / running run whose owner is gone was killed: say so (claims.effective_status)
    row["status"] = effective_status(run_dir, metrics) or row.get("status")
    row.update({k: protocol.get(k) for k in PROTOCOL})
    for split in ("val", "test"):
        for key, value in (metrics.get(split) or {}).items():
            row[f"{split}_{key}"] = value
    for key, value in params.items():  # metrics win: e.g. `lr` is the LR actually used
        if key not in row or row[key] is None:
            row[key] = _plain(value)
    for key, value in _flatten(read_json(run_dir / "ledger.json") or {}).items():
        row.setdefault(key, value)  # metrics.json's copy of a field (train_seconds) wins
    row.update(_provenance(read_json(run_dir / "versions.json") or {}))
    row["runner"] = sweep.get("runner") or ("papermill" if (run_dir / "run.json").is_file()
                                            else "inprocess")  # fmt: skip
    row["config"] = json.dumps(config, sort_keys=True, default=str)
    row["traceback"] = metrics.get("traceback")
    return row


def collect_results(experiment: str, **filters: Any) -> pd.DataFrame:
    """One row per run folder of ``experiment`` (any status), optionally :func:`filter_results`.

    ``config`` is the run's params and protocol without seed, fold and episode, as JSON text:
    runs with the same ``config`` are repetitions of one setting.
    """
    root = experiment_dir(experiment)
    df = pd.DataFrame([run_row(d, protocol) for d, protocol in _run_dirs(root)])
    return filter_results(df, **filters) if filters else df


_NESTED = {"fold": "fold", "k": "shots", "ep": "episode"}


def _nested_parts(run_dir: Path) -> list[str]:
    """The trailing ``k<k>/ep<e>/fold<i>`` parts of a run inside a crossval folder."""
    parts = []
    for part in reversed(run_dir.parts):
        match = re.fullmatch(r"(fold|k|ep)(\d+)", part)
        if not match:
            break
        parts.insert(0, part)
    return parts


def _run_dirs(root: Path):
    """``(run folder, protocol)``: the experiment's run folders, the per-fold / per-episode
    runs inside ``petl_kit.crossval`` folders (whose own metrics.json is an aggregate) and the
    per-method runs inside a music comparison's ``compare-<id>/`` (``kind: "compare"``)."""
    for folder in sorted(root.glob("*/")) if root.is_dir() else []:
        metrics = read_json(folder / "metrics.json")
        if metrics is None and not (folder / "metrics.json").is_file():
            continue
        kind = (metrics or {}).get("kind")
        if kind == "compare" or (metrics or {}).get("method") == "compare":
            # music_compare (older folders say only method "compare"): one run per method
            for found in sorted(folder.glob("*/metrics.json")):
                yield found.parent, None
            continue
        if kind not in ("cv", "fewshot"):
            yield folder, None
            continue
        for found in sorted(folder.rglob("fold*/metrics.json")):
            parts = _nested_parts(found.parent)
            if parts and (found.parent / "params.yaml").is_file():
                protocol = {}
                for part in parts:
                    key, value = re.fullmatch(r"(fold|k|ep)(\d+)", part).groups()
                    protocol[_NESTED[key]] = int(value)
                yield found.parent, protocol


def filter_results(df: pd.DataFrame, **criteria: Any) -> pd.DataFrame:
    """Rows whose columns equal the given values: ``filter_results(df, git_commit="1a2b3c",
    torch="2.11.0", method=["lora", "adapter"])``.

    A list means any of its values; values are compared as text and as numbers, so ``seed=0``,
    ``seed="0"`` and a float column's 0.0 agree; ``git_commit`` also matches a prefix (a short
    hash). An unknown column is an error
    that lists the columns.
    """
    unknown = sorted(set(criteria) - set(df.columns))
    if unknown:
        raise ValueError(f"filter_results: no column(s) {unknown}; columns: {list(df.columns)}")
    keep = pd.Series(True, index=df.index)
    for column, wanted in criteria.items():
        options = [str(w) for w in (wanted if isinstance(wanted, (list, tuple, set)) else [wanted])]
        text = df[column].map(lambda v: "" if v is None or v != v else str(v))
        hit = text.isin(options)
        numbers = [n for n in map(_number, options) if n is not None]
        if numbers:  # 2 matches 2.0 (an int column with gaps is read as floats)
            hit |= df[column].map(lambda v, n=numbers: _number(v) in n)
        if column == "git_commit":
            prefixes = tuple(o for o in options if o)
            hit |= text.map(lambda t, p=prefixes: bool(t) and bool(p) and t.startswith(p))
        keep &= hit
    return df[keep].reset_index(drop=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """A rerun of one setting with the same seed/fold/episode replaces the earlier run."""
    stamp = df["run_id"].map(lambda r: "-".join(str(r).rsplit("-", 3)[1:3]))
    cols = ["config", *[c for c in OVER if c in df]]
    keyed = df.assign(_stamp=stamp).sort_values(["_stamp", "run_id"])
    return keyed.drop_duplicates(cols, keep="last", ignore_index=True).drop(columns="_stamp")


def _labels(groups: pd.DataFrame) -> list[str]:
    """Method names, with the parameters that tell apart settings sharing a method and dataset."""
    configs = [json.loads(c) for c in groups["config"]]
    same = [c for c in ("dataset", "shots") if c in groups]
    cols = ["method", *same]
    keys = ["|".join(str(groups[c].iloc[i]) for c in cols) for i in range(len(groups))]
    labels = []
    for i, key in enumerate(keys):
        peers = [configs[j] for j in range(len(configs)) if keys[j] == key]
        base = str(groups["method"].iloc[i] if pd.notna(groups["method"].iloc[i])
                   else groups["name"].iloc[i])  # fmt: skip
        # a backbone of its own is named; what comes with it (checkpoint, lengths, pooling)
        # only tells settings apart among peers on the same backbone
        backbones = {p.get("backbone") for p in peers}
        own = configs[i].get("backbone")
        if len(backbones) > 1:
            peers = [p for p in peers if p.get("backbone") == own]
        differ = sorted({k for p in peers for k in p if any(q.get(k) != p.get(k) for q in peers)})
        differ = [k for k in differ if k not in ("method", *same)]
        extra = ", ".join([str(own)] * (len(backbones) > 1)
                          + [f"{k}={configs[i].get(k)}" for k in differ])  # fmt: skip
        labels.append(f"{base} ({extra})" if extra else base)
    return labels


def aggregate_results(
    df: pd.DataFrame, metrics: Sequence[str] | None = None, *, completed_only: bool = True
) -> pd.DataFrame:
    """Mean, population std (``ddof=0``) and ``n`` over seeds, folds and episodes per setting.

    Args:
        df: a tidy table (:func:`collect_results`).
        metrics: columns to aggregate (default: every numeric ``val_*``/``test_*`` column and the
            efficiency columns ``trainable_params``, ``train_seconds``...).
        completed_only: only runs with status ``completed`` (the default) count.

    Returns one row per ``config``: ``label`` (method, plus the parameters that tell settings
    apart), ``method``, ``dataset``... (when present), ``n``, then ``<m>`` and ``<m>_std`` per
    metric; ``n`` is the number of runs averaged (seeds × folds × episodes that completed).
    """
    if df.empty or "config" not in df:
        return pd.DataFrame(columns=["label", "n"])
    runs = df[df["status"] == "completed"] if completed_only and "status" in df else df
    if runs.empty:
        return pd.DataFrame(columns=["label", "n"])
    runs = _latest(runs)
    if metrics is None:
        split = [c for c in runs if c.startswith(("val_", "test_")) and not c.endswith("_n")]
        metrics = [c for c in [*split, *_EFFICIENCY] if c in runs]
        metrics = [c for c in metrics if pd.api.types.is_numeric_dtype(runs[c])]
    rows = []
    for config, group in runs.groupby("config", sort=False):
        row: dict[str, Any] = {"config": config, "name": group["name"].iloc[0]}
        row.update({c: group[c].iloc[0] for c in _DESCRIBE if c in group})
        row["n"] = len(group)
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").dropna()
            row[m] = values.mean() if len(values) else float("nan")
            row[f"{m}_std"] = values.std(ddof=0) if len(values) else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(0, "label", _labels(out))
    if "trainable_params" in out:
        out = out.sort_values(["trainable_params", "label"], kind="stable")
    return out.reset_index(drop=True)


def params_text(n: float) -> str:
    """Trainable parameters as papers print them: 4,608 · 12.3K · 1.25M."""
    if n != n:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}K" if n >= 1e4 else f"{int(round(n)):,}"


def paper_table(
    df: pd.DataFrame, metric: str | None = None, *, columns: str = "dataset",
    scale: float = 100.0, digits: int = 2,
) -> pd.DataFrame:  # fmt: skip
    """Methods × ``columns`` (datasets; with a few-shot ``shots`` axis, ``dataset k=<k>``), cells
    "mean ± std" of ``metric`` (default: the task's primary test metric) × ``scale`` (percent),
    population std (a single run: its value alone); a "trainable params" column (a range when
    it differs across datasets, e.g. with the head's class count). Rows sorted by trainable
    parameters.

    ``df``: a tidy table (:func:`collect_results`) or an already aggregated one.
    """
    from ..training.metrics import primary_metric

    agg = df if "label" in df and "n" in df else aggregate_results(df)
    if agg.empty:
        return pd.DataFrame(columns=["method", "trainable params"])
    if metric is None:
        task = agg["task"].dropna().iloc[0] if "task" in agg and agg["task"].notna().any() else None
        metric = f"test_{primary_metric(task or 'multiclass')}"
    if metric not in agg:
        raise ValueError(f"paper_table: no column {metric!r}; columns: {list(agg.columns)}")
    agg = agg.copy()
    missing = metric.removeprefix("test_")  # the column of runs without a dataset name
    col = agg[columns] if columns in agg else pd.Series(None, index=agg.index, dtype=object)
    col = col.map(lambda v: missing if v is None or v != v else str(v))
    if "shots" in agg and agg["shots"].notna().any():
        col = col + agg["shots"].map(lambda k: "" if pd.isna(k) else f" k={int(k)}")
    agg["_col"] = col
    agg["_row"] = agg["label"].str.replace(r" \(dataset=[^)]*\)", "", regex=True)

    def cell(row) -> str:
        mean, std = row[metric] * scale, row[f"{metric}_std"] * scale
        if mean != mean:
            return "–"
        # one run has no spread to report: its value alone, not a misleading "± 0.00"
        return f"{mean:.{digits}f}" if row["n"] == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"

    agg["_cell"] = agg.apply(cell, axis=1)
    table = agg.pivot_table(index="_row", columns="_col", values="_cell", aggfunc="first",
                            sort=False).fillna("–")  # fmt: skip
    params = agg.groupby("_row", sort=False)["trainable_params"].agg(["min", "max"])
    text = [params_text(lo) if lo == hi else f"{params_text(lo)}–{params_text(hi)}"
            for lo, hi in zip(params["min"], params["max"], strict=True)]  # fmt: skip
    table.insert(0, "trainable params", pd.Series(text, index=params.index))
    table = table.loc[params["min"].sort_values(kind="stable").index]
    table.index.name, table.columns.name = "method", None
    return table.reset_index()
