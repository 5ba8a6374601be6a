"""The report of an experiment: its tables and figures, written next to its runs.

``write_report(experiment)`` writes into ``<outputs>/<experiment>/``:

- ``results.csv``: the tidy table — every run (any status), one row each: params, protocol
  (fold / shots / episode), metrics (``test_accuracy``...), ledger and provenance fields
  (:func:`petl_kit.results.collect_results`);
- ``summary.{csv,md,tex}``: completed runs aggregated per setting over seeds, folds and
  episodes: mean, population std (ddof=0) and n of every metric;
- ``paper_table.{csv,md,tex}``: methods × datasets, cells "mean ± std" (percent) of the primary
  test metric, a trainable-parameters column;
- ``results.md``: the run counts, the per-method summary (trainable params, test score
  mean ± std (n), train time) and the paper table;
- ``accuracy_vs_params.png`` and ``pareto.png`` (the Pareto front of trainable parameters
  against the test score) from :mod:`petl_kit.plots`.

Filters (``write_report(experiment, git_commit="1a2b", torch="2.11.0")``) restrict every table to
the matching runs (:func:`petl_kit.results.filter_results`). :func:`export_table` writes any
table as CSV, Markdown (:func:`to_markdown`, no extra dependency) and LaTeX (:func:`to_latex`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .provenance import experiment_dir
from .results import (  # noqa: F401  (re-exported: the report API)
    aggregate_results,
    collect_results,
    filter_results,
    paper_table,
)


def _primary(df: pd.DataFrame) -> str:
    from ..training.metrics import primary_metric

    tasks = df["task"].dropna() if "task" in df else pd.Series(dtype=str)
    return primary_metric(tasks.iloc[0] if len(tasks) else "multiclass")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs per setting over seeds, folds and episodes: ``method, trainable_params,
    test_<m>, test_<m>_std`` (population std, ddof=0), ``n_runs, train_seconds``, sorted by
    trainable parameters; ``method`` is the setting's label (``lora (lr=0.01)`` where two settings
    share a method; ``· dataset`` when there are several datasets).

    A rerun of identical parameters (same seed, fold and episode) replaces the earlier one.
    """
    metric = f"test_{_primary(df)}" if not df.empty else "test_accuracy"
    columns = ["method", "trainable_params", metric, f"{metric}_std", "n_runs", "train_seconds"]
    agg = aggregate_results(df) if not df.empty and "status" in df else pd.DataFrame()
    if agg.empty or metric not in agg:
        return pd.DataFrame(columns=columns)
    table = agg.rename(columns={"n": "n_runs"})
    if "dataset" in table and table["dataset"].nunique() > 1:
        table["label"] = table["label"] + " · " + table["dataset"].astype(str)
    table["method"] = table["label"]
    if "train_seconds" not in table:
        table["train_seconds"] = float("nan")
    table["trainable_params"] = table["trainable_params"].round().astype("Int64")
    return table[columns].reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    """``results.md``'s table: method | trainable params | test <metric> | train time [s]."""
    metric = next(
        (c for c in table.columns if c.startswith("test_") and not c.endswith("_std")), None
    )
    head = ["method", "trainable params", f"test {metric[5:] if metric else 'score'}",
            "train time [s]"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|"]
    for _, row in table.iterrows():
        score = "–"
        if metric is not None and pd.notna(row[metric]):
            score = f"{row[metric]:.3f}"
            if row["n_runs"] > 1:
                score += f" ± {row[f'{metric}_std']:.3f} (n={row['n_runs']})"
        seconds = "–" if pd.isna(row["train_seconds"]) else f"{row['train_seconds']:.1f}"
        cells = [str(row["method"]), f"{int(row['trainable_params']):,}", score, seconds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _failures(df: pd.DataFrame, status: str = "failed", title: str = "Failed runs") -> str:
    """A list of the runs of ``status`` with the first line of their error (tracebacks:
    results.csv)."""
    if df.empty or "status" not in df or not (df["status"] == status).any():
        return ""
    lines = ["", f"## {title}", ""]
    for _, row in df[df["status"] == status].iterrows():
        error = str(row.get("error") or "no error recorded").splitlines()[0][:300]
        lines.append(f"- `{row['run_id']}`: {error}")
    return "\n".join(lines) + "\n"


def _figures(table: pd.DataFrame, root: Path, title: str) -> dict[str, Path]:
    """accuracy_vs_params.png and pareto.png (trainable parameters against the test score)."""
    from matplotlib import pyplot as plt

    from ..views import plots

    paths = {"png": root / "accuracy_vs_params.png"}
    fig = plots.accuracy_vs_params(table, title=title)
    fig.savefig(paths["png"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    if not table.empty:  # the Pareto front of trainable parameters against the test score
        paths["pareto"] = root / "pareto.png"
        fig = plots.pareto_plot(table, title=title)
        fig.savefig(paths["pareto"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def write_report(experiment: str, **filters: Any) -> dict[str, Path]:
    """Write the report files (module docstring); return ``{kind: path}``.

    ``filters``: column = value(s) of the tidy table that runs must match (``git_commit``,
    ``torch``, ``method``, ...); an unknown column is an error listing the columns.
    """
    root = experiment_dir(experiment)
    if not root.is_dir():
        raise FileNotFoundError(f"no experiment folder {root}; run a notebook or a sweep first")
    df = collect_results(experiment, **filters)
    table = summary_table(df)
    paths = {"csv": root / "results.csv", "md": root / "results.md"}
    df.to_csv(paths["csv"], index=False)
    agg = aggregate_results(df)
    note = "mean ± population std (ddof=0) over seeds, folds and episodes; n = runs averaged"
    for kind, frame in (("summary", agg.drop(columns=["config"], errors="ignore")),
                        ("paper_table", paper_table(agg))):  # fmt: skip
        for ext, path in export_table(frame, root / kind, caption=f"{experiment}: {note}").items():
            paths[f"{kind}_{ext}"] = path
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    runs = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
    where = ", ".join(f"{k}={v}" for k, v in filters.items())
    paths["md"].write_text(
        f"# {experiment}\n\nRuns: {runs}{f' (filtered: {where})' if where else ''}.\n\n"
        f"{markdown_table(table)}\n## Paper table\n\n{note}.\n\n"
        f"{paths['paper_table_md'].read_text()}{_failures(df)}"
        f"{_failures(df, 'interrupted', 'Interrupted runs (killed; a resumed sweep reruns them)')}"
    )
    paths.update(_figures(table, root, experiment))
    return paths


# ---------------------------------------------------------------------------- exports
def to_markdown(df: pd.DataFrame, *, floatfmt: str = ".4g") -> str:
    """A GitHub pipe table (numbers right-aligned), no extra dependency."""

    def text(v) -> str:
        if isinstance(v, float):
            return "–" if v != v else format(v, floatfmt)
        return "–" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(str(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]  # fmt: skip
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(text(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, *, caption: str | None = None, label: str | None = None,
             floatfmt: str = "{:.4g}") -> str:  # fmt: skip
    """A LaTeX ``tabular`` (pandas' ``to_latex``; text escaped, "±" as ``$\\pm$``)."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    tex = df.to_latex(index=False, escape=True, caption=caption, label=label, na_rep="--",
                      column_format="".join("r" if n else "l" for n in numeric),
                      float_format=floatfmt.format)  # fmt: skip
    return tex.replace("±", r"$\pm$").replace("–", "--")


def export_table(df: pd.DataFrame, stem: str | Path, *, caption: str | None = None) -> dict:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``; return ``{'csv','md','tex'}``."""
    stem = Path(stem)
    paths = {k: stem.with_name(f"{stem.name}.{k}") for k in ("csv", "md", "tex")}
    df.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(df))
    paths["tex"].write_text(to_latex(df, caption=caption))
    return paths


def param_group_table(metrics: dict) -> pd.DataFrame:
    """Trainable parameters per ``count_parameters`` group, with the share of the total model."""
    groups = metrics.get("param_groups") or {}
    total = metrics.get("total_params") or 1
    rows = [{"group": g, "trainable": n, "% of model": 100 * n / total} for g, n in groups.items()]
    rows.append({"group": "all trainable", "trainable": metrics.get("trainable_params", 0),
                 "% of model": 100 * metrics.get("trainable_params", 0) / total})  # fmt: skip
    return pd.DataFrame(rows).set_index("group")
