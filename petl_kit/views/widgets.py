"""The comparison dashboard over ``outputs/`` (notebook ``30_compare``).

Pick an experiment, a dataset, a backbone, a metric and a cost; see one row per setting (mean ±
std over seeds and folds, the efficiency ledger's columns, whether it is on the Pareto front), the
Pareto plot and the overlaid learning curves of the selected runs.

The widgets only wire controls to the plain functions below, which are what the tests drive::

    runs = load_runs("quickstart")                  # one row per run folder (+ ledger columns)
    options = choices(runs)                         # {'dataset': [...], 'metric': [...], ...}
    chosen = select_runs(runs, dataset="synthetic", backbone=ALL)
    table = compare_table(chosen, "test_accuracy", cost="trainable_params")
    curves = histories(chosen)                      # {label: history DataFrame}

    dash = Dashboard("quickstart")                  # in a notebook: display(dash)
    dash.controls["metric"].value = "val_accuracy"  # the table and figures follow
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..efficiency import pareto_front
from ..experiments.demo import DEMO_LR, demo_experiment  # noqa: F401 (the notebook calls it here)
from ..experiments.provenance import outputs_root, read_json
from ..experiments.report import collect_results

ALL = "(all)"
COSTS = ("trainable_params", "gflops", "latency_ms", "stored_bytes", "train_seconds")
_LEDGER = ("gflops", "method_mflops", "latency_ms", "merged_latency_ms", "merged_agree",
           "stored_bytes")  # fmt: skip


# ---------------------------------------------------------------------------- the logic
def list_experiments(*, completed: bool = False) -> list[str]:
    """Experiments under ``<outputs>`` that hold at least one run folder (``completed``: one
    completed run), sorted."""
    root = outputs_root()
    if not root.is_dir():
        return []

    def keep(folder: Path) -> bool:
        runs = folder.glob("*/metrics.json")
        if not completed:
            return any(True for _ in runs)
        return any((read_json(m) or {}).get("status") == "completed" for m in runs)

    return sorted(d.name for d in root.iterdir() if d.is_dir() and keep(d))


def ledger_columns(ledger: dict) -> dict:
    """The flat columns of a ``ledger.json`` (:func:`petl_kit.efficiency.run_ledger`); ledgers
    written before those columns existed give what their nested entries hold, else None."""
    flops = ledger.get("flops_per_example") or {}
    inference, merged = ledger.get("inference") or {}, ledger.get("merged") or {}
    derived = {
        "gflops": None if flops.get("total") is None else flops["total"] / 1e9,
        "method_mflops": None if flops.get("method") is None else flops["method"] / 1e6,
        "latency_ms": inference.get("ms_per_example"),
        "merged_latency_ms": merged.get("ms_per_example"),
        "merged_agree": merged.get("outputs_agree"),
    }
    return {k: ledger[k] if ledger.get(k) is not None else derived.get(k) for k in _LEDGER}


def load_runs(experiment: str) -> pd.DataFrame:
    """:func:`petl_kit.report.collect_results` plus the ledger columns (``gflops``,
    ``latency_ms``, ...) and ``num_classes`` (from ``weights/build_args.json``, None without) of
    each run; an experiment without runs gives an empty table."""
    runs = collect_results(experiment)
    if runs.empty:
        return runs
    ledgers = [ledger_columns(read_json(Path(d) / "ledger.json") or {}) for d in runs["run_dir"]]
    derived = pd.DataFrame(ledgers, index=runs.index, columns=list(_LEDGER))
    for col in _LEDGER:  # a run's own column wins; gaps (older ledgers) are derived
        runs[col] = runs[col].combine_first(derived[col]) if col in runs else derived[col]
    # the head's class count (the saved build arguments): the chance level of an accuracy
    runs["num_classes"] = [
        (read_json(Path(d) / "weights" / "build_args.json") or {}).get("num_classes")
        for d in runs["run_dir"]
    ]
    return runs


def _completed(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty or "status" not in runs:
        return runs.iloc[:0]
    return runs[runs["status"] == "completed"]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Numeric ``test_*`` then ``val_*`` metric columns with a value in a completed run."""
    done = _completed(runs)
    cols = [
        c
        for c in done.columns
        if c.startswith(("test_", "val_"))
        and not c.endswith(("_std", "_n"))
        and pd.to_numeric(done[c], errors="coerce").notna().any()
    ]
    return sorted(cols, key=lambda c: (not c.startswith("test_"), c))


def choices(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Options of each control for a table of runs: ``dataset`` and ``backbone`` (``ALL`` then
    the values among completed runs), ``metric`` (:func:`metric_columns`) and ``cost`` (the
    :data:`COSTS` columns with a value)."""
    done = _completed(runs)

    def values(col):
        return [ALL, *sorted(map(str, done[col].dropna().unique()))] if col in done else [ALL]

    costs = [
        c for c in COSTS if c in done and pd.to_numeric(done[c], errors="coerce").notna().any()
    ]
    return {"dataset": values("dataset"), "backbone": values("backbone"),
            "metric": metric_columns(runs), "cost": costs}  # fmt: skip


def select_runs(runs: pd.DataFrame, *, dataset: str = ALL, backbone: str = ALL) -> pd.DataFrame:
    """Completed runs of the chosen dataset and backbone (``ALL``: any). A rerun of one setting
    with the same seed (fold, episode) replaces the earlier run, as in the report."""
    done = _completed(runs)
    for col, value in (("dataset", dataset), ("backbone", backbone)):
        if value != ALL:
            done = done[done[col].astype(str) == value] if col in done else done.iloc[:0]
    same = [c for c in ("name", "config", "seed", "fold", "episode") if c in done]
    if not done.empty and same:
        done = done.sort_values("run_id").drop_duplicates(same, keep="last").sort_index()
    return done.reset_index(drop=True)


def _config(text) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _labels(runs: pd.DataFrame) -> pd.Series:
    """One label per setting (``name`` + ``config``): the run name, followed by the parameters
    that tell apart settings sharing it (``lora (lr=0.01)``, ``lora (lr=0.001)``); numbered
    (``lora (2)``) when the params do not say."""
    configs = runs["config"] if "config" in runs else pd.Series("", index=runs.index)
    keys = list(zip(runs["name"].astype(str), configs.astype(str), strict=True))
    by_name: dict[str, list[str]] = {}
    for name, config in dict.fromkeys(keys):
        by_name.setdefault(name, []).append(config)
    labels = {}
    for name, texts in by_name.items():
        parsed = [_config(t) for t in texts]
        differ = sorted({k for p in parsed for k in p if any(q.get(k) != p.get(k) for q in parsed)})
        for i, (text, p) in enumerate(zip(texts, parsed, strict=True)):
            extra = ", ".join(f"{k}={p.get(k)}" for k in differ if k not in ("name", "method"))
            labels[name, text] = f"{name} ({extra or i + 1})" if len(texts) > 1 else name
    return pd.Series([labels[k] for k in keys], index=runs.index)


def compare_table(
    selected: pd.DataFrame, metric: str, *, cost: str = "trainable_params"
) -> pd.DataFrame:
    """One row per setting of the selected runs, sorted by ``cost``.

    Columns: ``method`` (the setting's label), ``trainable_params``, ``<metric>`` (mean over its
    runs), ``<metric>_std`` (sample std, NaN for one run), ``n_runs``, the ledger's ``gflops``,
    ``latency_ms`` and ``stored_bytes`` (means), ``train_seconds``, and ``pareto`` (on the front
    of lower ``cost``, higher ``metric``: :func:`petl_kit.efficiency.pareto_front`).
    """
    extra = [c for c in ("gflops", "latency_ms", "stored_bytes", "train_seconds") if c != cost]
    columns = ["method", "trainable_params", metric, f"{metric}_std", "n_runs",
               *([cost] if cost != "trainable_params" else []), *extra, "pareto"]  # fmt: skip
    if selected.empty or metric not in selected:
        return pd.DataFrame(columns=columns)
    data = selected.assign(_label=_labels(selected))
    rows = []
    for label, group in data.groupby("_label", sort=False):
        values = pd.to_numeric(group[metric], errors="coerce")
        row = {"method": label, "trainable_params": group["trainable_params"].iloc[0],
               metric: values.mean(), f"{metric}_std": values.std(ddof=1),
               "n_runs": int(values.notna().sum())}  # fmt: skip
        for col in dict.fromkeys([cost, *extra]):
            if col != "trainable_params":
                have = pd.to_numeric(group[col], errors="coerce") if col in group else None
                row[col] = have.mean() if have is not None else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    table["pareto"] = pareto_front(table, cost=cost, score=metric)
    return table.sort_values([cost, "method"]).reset_index(drop=True)[columns]


def curve_column(metric: str, columns) -> str | None:
    """The ``history.csv`` column to draw for ``metric``: ``test_accuracy`` → ``val_accuracy``,
    else ``train_accuracy``; None when the history has neither."""
    base = metric.split("_", 1)[-1]
    return next((c for c in (f"val_{base}", f"train_{base}") if c in columns), None)


def histories(selected: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{label: history}`` of every selected run with a ``history.csv``: the setting's label
    (:func:`compare_table`), then ``seed`` / ``fold`` when a setting has several runs."""
    if selected.empty:
        return {}
    labels = _labels(selected)
    counts = labels.value_counts()
    out = {}
    for i, row in selected.iterrows():
        path = Path(row["run_dir"]) / "history.csv"
        if not path.is_file():
            continue
        label = labels[i]
        if counts[label] > 1:
            tags = [f"{k} {row[k]}" for k in ("seed", "fold") if k in row and pd.notna(row[k])]
            label = f"{label} · {', '.join(tags) or row['run_id']}"
        out[label] = pd.read_csv(path)
    return out


# ---------------------------------------------------------------------------- the widgets
def _empty_reason(c: dict, chosen: pd.DataFrame, metric: str | None) -> str | None:
    """Why nothing can be drawn for the controls' values ``c`` (None: something can)."""
    where = c["experiment"] or str(outputs_root())
    if metric is None:
        return f"no completed runs with scores in {where}: nothing to compare"
    if chosen.empty:
        return (f"no completed runs in {where} with dataset {c['dataset']} and backbone "
                f"{c['backbone']}: pick another dataset or backbone")  # fmt: skip
    return None


def _chance(chosen: pd.DataFrame, metric: str) -> float | None:
    """The guessing accuracy when every selected run has the same single-label task and class
    count (``num_classes``) and ``metric`` is an accuracy; else None."""
    from .plots import chance_level

    if not metric.endswith("_accuracy") or "num_classes" not in chosen or "task" not in chosen:
        return None
    tasks, counts = chosen["task"].dropna().unique(), chosen["num_classes"].dropna().unique()
    if len(tasks) != 1 or len(counts) != 1:
        return None
    return chance_level(str(tasks[0]), int(counts[0]))


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


class Dashboard:
    """ipywidgets controls (``controls``: experiment, dataset, backbone, metric, cost) over the
    functions above. ``runs``, ``table`` and ``figures`` (``'pareto'``, ``'curves'``) hold what
    is shown, ``images`` the PNG of each figure as displayed; display the dashboard itself in a
    notebook.

    ``experiment`` defaults to the first one with a completed run; ``metric`` and ``cost`` (None:
    the first choice) must be among the experiment's :func:`choices`.
    """

    def __init__(
        self, experiment: str | None = None, *, metric: str | None = None, cost: str | None = None
    ):
        import ipywidgets as w

        experiments = list_experiments()
        if experiment is not None and experiment not in experiments:
            raise ValueError(
                f"no runs for experiment {experiment!r} under {outputs_root()}; "
                f"experiments: {experiments}"
            )
        drop = {"layout": w.Layout(width="220px")}
        self.controls = {
            "experiment": w.Dropdown(options=experiments, description="experiment", **drop),
            **{k: w.Dropdown(description=k, **drop) for k in ("dataset", "backbone")},
            **{k: w.Dropdown(description=k, **drop) for k in ("metric", "cost")},
        }
        self.outputs = {k: w.Output() for k in ("table", "pareto", "curves")}
        self.runs, self.table, self.figures = pd.DataFrame(), pd.DataFrame(), {}
        self.images: dict[str, bytes] = {}  # the PNG each figure output shows
        self._busy = False
        if experiments:  # default: the first experiment with a completed run
            done = list_experiments(completed=True)
            self.controls["experiment"].value = experiment or (done or experiments)[0]
        self._load()
        self.controls["experiment"].observe(lambda _: self._load(), names="value")
        for key in ("dataset", "backbone", "metric", "cost"):
            self.controls[key].observe(lambda _: self.refresh(), names="value")
        for key, value in (("metric", metric), ("cost", cost)):
            if value is not None:
                if value not in self.controls[key].options:
                    raise ValueError(
                        f"{key} {value!r} is not in experiment "
                        f"{self.controls['experiment'].value!r}; choices: "
                        f"{list(self.controls[key].options)}"
                    )
                self.controls[key].value = value
        self.widget = w.VBox([
            w.HBox(list(self.controls.values())[:3]), w.HBox(list(self.controls.values())[3:]),
            self.outputs["table"], w.HBox([self.outputs["pareto"], self.outputs["curves"]]),
        ])  # fmt: skip

    def _load(self) -> None:
        """A new experiment: read its runs, reset every control's options, refresh once."""
        experiment = self.controls["experiment"].value
        self.runs = load_runs(experiment) if experiment else pd.DataFrame()
        options = choices(self.runs)
        self._busy = True  # one refresh for all the option changes
        try:
            for key, values in options.items():
                control = self.controls[key]
                keep = control.value if control.value in values else None
                control.options = values
                control.value = keep or (values[0] if values else None)
        finally:
            self._busy = False
        self.refresh()

    def refresh(self) -> None:
        """Recompute the table and figures for the current selection and draw them.

        Each figure is rendered to PNG once (``images``), closed, and shown in its own output,
        which is cleared first; an empty selection clears every output and says why."""
        from matplotlib import pyplot as plt

        from . import plots

        if self._busy:
            return
        c = {k: v.value for k, v in self.controls.items()}
        chosen = select_runs(self.runs, dataset=c["dataset"] or ALL, backbone=c["backbone"] or ALL)
        metric, cost = c["metric"], c["cost"] or "trainable_params"
        for fig in self.figures.values():
            plt.close(fig)
        self.figures, self.images = {}, {}
        why = _empty_reason(c, chosen, metric)
        if why:
            self.table = pd.DataFrame()
            self._show("table", text=why)
            for key in ("pareto", "curves"):
                self._show(key)
            return
        self.table = compare_table(chosen, metric, cost=cost)
        runs = histories(chosen)
        column = next((curve_column(metric, h.columns) for h in runs.values()), None)
        chance = _chance(chosen, metric)
        self.figures = {
            "pareto": plots.pareto_plot(
                self.table, cost=cost, score=metric, title=c["experiment"], chance=chance
            ),  # fmt: skip
            "curves": plots.overlaid_curves(runs, metric=column or metric, chance=chance),
        }
        self._show("table", table=self.table)
        for key, fig in self.figures.items():
            self.images[key] = _png(fig)
            plt.close(fig)  # drawn once, here: the inline backend does not show it again
            self._show(key, png=self.images[key])

    def _show(self, key: str, *, text=None, table=None, png=None) -> None:
        """Replace output ``key``'s content with one text, table or PNG (or nothing). The
        outputs are set, not captured from a ``with`` block: no race with the kernel's own
        display messages, and the same in a kernel, in a test and under ``voila``."""
        from IPython.display import Image

        out = self.outputs[key]
        out.outputs = ()
        if text is not None:
            out.append_stdout(text + "\n")
        if table is not None:
            out.append_display_data(table)
        if png is not None:
            out.append_display_data(Image(data=png, format="png"))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
