"""The model card (``README.md``) every export writes: what was trained, on what, how well,
at what cost, with which versions — read from the run folder, nothing typed by hand.

Spread: a run folder holds one training run. Sibling runs in the same experiment folder whose
parameters differ only in ``seed`` (a sweep's seeds) give the mean ± std the card reports; with
no sibling the card says there is one value and no spread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

# params that differ between the seeds of one setting (everything else must match)
SEED_KEYS = ("seed", "run_dir")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def seed_siblings(folder: Path, params: dict) -> list[dict]:
    """``metrics.json`` of the completed runs beside ``folder`` (itself included) whose params
    equal ``params`` but for :data:`SEED_KEYS`."""
    same = {k: v for k, v in params.items() if k not in SEED_KEYS}
    out = []
    for run in sorted(folder.parent.iterdir()) if folder.parent.is_dir() else []:
        metrics = _json(run / "metrics.json")
        if metrics.get("status") != "completed" or not (run / "params.yaml").is_file():
            continue
        other = yaml.safe_load((run / "params.yaml").read_text()) or {}
        if {k: v for k, v in other.items() if k not in SEED_KEYS} == same:
            out.append(metrics)
    return out


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def metric_lines(metrics: dict, siblings: list[dict]) -> list[str]:
    """Markdown rows ``| split | metric | value |`` with mean ± std over ``siblings``."""
    rows = []
    for split in ("test", "val"):
        for name, value in (metrics.get(split) or {}).items():
            if name in ("loss", "n", "segments") or not isinstance(value, (int, float)):
                continue
            values = [m[split][name] for m in siblings
                      if isinstance((m.get(split) or {}).get(name), (int, float))]  # fmt: skip
            if len(values) > 1:
                mean = sum(values) / len(values)
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                text = f"{mean:.4f} ± {std:.4f} (mean ± std over {len(values)} seeds)"
            else:
                text = f"{value:.4f} (one run: no spread)"
            rows.append(f"| {split} | {name} | {text} |")
    return rows


def ledger_lines(ledger: dict) -> list[str]:
    """The ledger's headline figures as markdown bullets (missing measurements say so)."""
    params = ledger.get("parameters") or {}
    figures = {
        "trainable parameters": params.get("trainable"),
        "total parameters": params.get("total"),
        "stored bytes (trainable only)": ledger.get("stored_bytes"),
        "forward GFLOPs per example": ledger.get("gflops"),
        "method MFLOPs per example": ledger.get("method_mflops"),
        "inference latency per example (ms)": ledger.get("latency_ms"),
        "merged latency per example (ms)": ledger.get("merged_latency_ms"),
        "training seconds": ledger.get("train_seconds"),
        "peak memory (MB)": ledger.get("peak_memory_mb"),
        "device": ledger.get("device"),
    }
    return [f"- {k}: {_number(v) if v is not None else 'not measured'}"
            for k, v in figures.items()]  # fmt: skip


def model_card(run, fmt: str, usage: str, notes: list[str] | None = None) -> str:
    """The ``README.md`` of an export of ``run`` (a :class:`~.run.LoadedRun`) in format ``fmt``.

    ``usage``: a fenced snippet that loads the export; ``notes``: format-specific facts.
    """
    args, p, m = run.model.build_args, run.params, run.metrics
    ledger = _json(run.folder / "ledger.json")
    versions = _json(run.folder / "versions.json")
    siblings = seed_siblings(run.folder, p) or [m]
    groups = m.get("param_groups") or (ledger.get("parameters") or {}).get("groups") or {}
    labels = ", ".join(run.labels[:30]) + (f", … ({len(run.labels)} in all)"
                                            if len(run.labels) > 30 else "")  # fmt: skip
    segment = (f"{run.segment} samples per segment, clip = {run.aggregate} of its segments"
               if run.segment else "whole clips")  # fmt: skip
    lines = [
        "---",
        "library_name: " + {"hf": "transformers", "peft": "peft"}.get(fmt, "petl_kit"),
        "pipeline_tag: audio-classification",
        "tags: [petl_kit, parameter-efficient-transfer-learning, " + f"{args['method']}]",
        "---",
        "",
        f"# {args['method']} on {args['backbone']} — {p.get('dataset')}",
        "",
        f"Exported by petl_kit from run `{run.folder.name}` (format `{fmt}`).",
        "",
        "## Model",
        "",
        f"- backbone: `{args['backbone']}`, checkpoint `{args['checkpoint']}`",
        f"- method: `{args['method']}`, config `{json.dumps(args['method_config'])}`",
        f"- pooling `{args['pooling']}`, head `{args['head']}`, layers "
        f"`{args['layer_aggregation']}`, profile `{args['profile']}`",
        f"- trainable parameters: {_number(m.get('trainable_params', '?'))} of "
        f"{_number(m.get('total_params', '?'))}"
        + (
            " (" + ", ".join(f"{k} {_number(v)}" for k, v in groups.items()) + ")" if groups else ""
        ),  # fmt: skip
        "",
        "## Data and protocol",
        "",
        f"- data set: `{p.get('dataset')}` (task `{run.task}`, {len(run.labels)} classes: "
        f"{labels}); split sizes {m.get('sizes', 'not recorded')}",
        f"- input: {run.extractor}; evaluation on {segment}",
        f"- training: epochs {p.get('epochs')}, batch {p.get('batch_size')}, lr "
        f"{m.get('lr', p.get('lr'))}, seed {p.get('seed')}, selection `{m.get('select')}`",
        "",
        "## Metrics",
        "",
        "| split | metric | value |",
        "|---|---|---|",
        *(metric_lines(m, siblings) or ["| - | - | no metrics recorded |"]),
        "",
        "## Efficiency (the run's ledger)",
        "",
        *(ledger_lines(ledger) if ledger else ["- no ledger.json in the run folder"]),
        "",
        "## Use",
        "",
        usage,
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    keep = ("petl_kit", "git", "python", "torch", "transformers", "peft", "device", "time")
    git = versions.get("git")
    if isinstance(git, dict):  # {'commit': ..., 'dirty': ...}
        versions = {
            **versions,
            "git": git.get("commit", "?") + (" (uncommitted changes)" if git.get("dirty") else ""),
        }
    lines += ["## Versions", "", *[f"- {k}: {versions[k]}" for k in keep if k in versions], ""]
    return "\n".join(lines)
