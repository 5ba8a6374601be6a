"""Results of an experiment: one row per run, a per-method summary, the report files.

``write_report(experiment)`` writes into ``<outputs>/<experiment>/``:

- ``results.csv``: every run (any status), metrics flattened (``test_accuracy``...) + its params;
- ``results.md``: completed runs per method — trainable params, test score (mean ± std over
  seeds), train time — sorted by trainable parameters;
- ``accuracy_vs_params.png``: trainable parameters (log x) against the test score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from .provenance import experiment_dir, read_json, run_name

_SCALARS = (
    "status", "method", "dataset", "backbone", "profile", "task", "trainable_params",
    "total_params", "train_seconds", "peak_memory_mb", "examples_per_second", "best_epoch",
    "select", "device", "lr", "error", "started", "finished",
)  # fmt: skip
_IGNORED_FOR_CONFIG = ("seed", "run_dir", "experiment")


def collect_results(experiment: str) -> pd.DataFrame:
    """One row per run folder of ``experiment`` (from ``metrics.json`` and ``params.yaml``).

    Columns: ``run_id, name, run_dir, config`` (the params except seed, as text), the scalar
    fields of metrics.json, ``val_<metric>`` / ``test_<metric>``, then each parameter not already
    a column (metrics win: e.g. ``lr`` is the LR actually used).
    """
    root = experiment_dir(experiment)
    rows = []
    for run_dir in sorted(p for p in root.glob("*/") if (p / "metrics.json").is_file()):
        metrics = read_json(run_dir / "metrics.json") or {"status": "unreadable"}
        params = {}
        if (run_dir / "params.yaml").is_file():
            params = yaml.safe_load((run_dir / "params.yaml").read_text()) or {}
        config = {k: v for k, v in params.items() if k not in _IGNORED_FOR_CONFIG}
        row = {"run_id": run_dir.name, "name": run_name(run_dir), "run_dir": str(run_dir),
               "config": json.dumps(config, sort_keys=True, default=str)}  # fmt: skip
        row.update({k: metrics.get(k) for k in _SCALARS})
        for split in ("val", "test"):
            for key, value in (metrics.get(split) or {}).items():
                row[f"{split}_{key}"] = value
        for key, value in params.items():
            if key not in row or row[key] is None:
                row[key] = value if not isinstance(value, (list, dict)) else json.dumps(value)
        rows.append(row)
    return pd.DataFrame(rows)


def _primary(df: pd.DataFrame) -> str:
    from .metrics import primary_metric

    tasks = df["task"].dropna() if "task" in df else pd.Series(dtype=str)
    return primary_metric(tasks.iloc[0] if len(tasks) else "multiclass")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs per (name, config) over seeds: ``method, trainable_params, test_<m>,
    test_<m>_std, n_runs, train_seconds``, sorted by trainable parameters.

    A rerun of identical parameters (same seed) replaces the earlier one.
    """
    if df.empty or "status" not in df:
        return pd.DataFrame(columns=["method", "trainable_params", "n_runs", "train_seconds"])
    done = df[df["status"] == "completed"].copy()
    metric = f"test_{_primary(df)}"
    if done.empty or metric not in done:
        return pd.DataFrame(
            columns=["method", "trainable_params", metric, "n_runs", "train_seconds"]
        )
    done["seed"] = done["seed"] if "seed" in done else 0
    done = done.sort_values("run_id").drop_duplicates(["name", "config", "seed"], keep="last")
    rows = []
    for (name, _), group in done.groupby(["name", "config"], sort=False):
        rows.append({
            "method": name, "trainable_params": int(group["trainable_params"].iloc[0]),
            metric: group[metric].mean(), f"{metric}_std": group[metric].std(ddof=1),
            "n_runs": len(group), "train_seconds": group["train_seconds"].mean(),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table["method"].duplicated().any():  # same name, different settings: tell them apart
        seen: dict[str, int] = {}
        labels = []
        for name in table["method"]:
            seen[name] = seen.get(name, 0) + 1
            labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
        table["method"] = labels
    return table.sort_values(["trainable_params", "method"]).reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    """``results.md``'s table: method | trainable params | test <metric> | train time [s]."""
    metric = next(
        (c for c in table.columns if c.startswith("test_") and not c.endswith("_std")), None
    )
    head = [
        "method",
        "trainable params",
        f"test {metric[5:] if metric else 'score'}",
        "train time [s]",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|"]
    for _, row in table.iterrows():
        score = "–"
        if metric is not None and pd.notna(row[metric]):
            score = f"{row[metric]:.3f}"
            if row["n_runs"] > 1:
                score += f" ± {row[f'{metric}_std']:.3f} (n={row['n_runs']})"
        cells = [str(row["method"]), f"{int(row['trainable_params']):,}", score,
                 f"{row['train_seconds']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(experiment: str) -> dict[str, Path]:
    """Write results.csv, results.md and accuracy_vs_params.png; return their paths."""
    from matplotlib import pyplot as plt

    from .plots import accuracy_vs_params

    root = experiment_dir(experiment)
    if not root.is_dir():
        raise FileNotFoundError(f"no experiment folder {root}; run a notebook or a sweep first")
    df = collect_results(experiment)
    table = summary_table(df)
    paths = {"csv": root / "results.csv", "md": root / "results.md",
             "png": root / "accuracy_vs_params.png"}  # fmt: skip
    df.to_csv(paths["csv"], index=False)
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    note = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
    paths["md"].write_text(f"# {experiment}\n\nRuns: {note}.\n\n{markdown_table(table)}")
    fig = accuracy_vs_params(table, title=experiment)
    fig.savefig(paths["png"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def param_group_table(metrics: dict) -> pd.DataFrame:
    """Trainable parameters per ``count_parameters`` group, with the share of the total model."""
    groups = metrics.get("param_groups") or {}
    total = metrics.get("total_params") or 1
    rows = [{"group": g, "trainable": n, "% of model": 100 * n / total} for g, n in groups.items()]
    rows.append({"group": "all trainable", "trainable": metrics.get("trainable_params", 0),
                 "% of model": 100 * metrics.get("trainable_params", 0) / total})  # fmt: skip
    return pd.DataFrame(rows).set_index("group")
