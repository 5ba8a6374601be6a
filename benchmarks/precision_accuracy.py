"""Benchmark: what mixed precision does to accuracy on the quickstart (issue "precision").

The quickstart sweep (``params/quickstart.yaml``: nine methods on the built-in tiny AST and a
linear probe of the built-in tiny wav2vec 2.0, each with its own ``params/quickstart/*.yaml``) run
at ``precision`` fp32 and bf16 over seeds 0, 1, 2 through the kit's sweep machinery: a sweep file
is generated from ``params/quickstart.yaml`` (the same shared params and params files, referenced,
not copied; the seeds as a grid axis; ``runner: inprocess``) and planned by
:func:`~petl_kit.experiments.sweep.plan_sweep`; each planned run is then given each precision
(``precision`` is a ``run_experiment`` parameter that the method notebooks do not declare, so a
sweep file cannot set it; the in-process runner passes it on) and run by
:func:`~petl_kit.experiments.executors.run_specs` (claims, submitit workers, resume), one seed at
a time, all in one experiment ``precision_accuracy`` under ``--outputs`` (``$PETL_KIT_OUTPUTS``),
so a rerun skips the runs already completed. ``--epochs`` / ``--no-speech`` shrink the sweep
(the results file says what ran).

The table: per method, test accuracy (the run's reported ``test``, ``select`` of the corrected
profile) mean ± std over the seeds at each precision, the difference bf16 − fp32, and whether
``|difference| <= seed spread``, where the seed spread is the LARGER of the two standard
deviations (population std, ``ddof=0``, as the kit's report aggregates seeds). Wall time per
precision is the sum of its runs' times (each run in one process, one thread).

    .venv/bin/python benchmarks/precision_accuracy.py --outputs /tmp/precision --workers 2 \
        --out benchmarks/results/precision_accuracy.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "params" / "quickstart.yaml"
EXPERIMENT = "precision_accuracy"


def _absolute(path: str) -> str:
    """A params file of the quickstart, as an absolute path (the sweep file lives elsewhere)."""
    return str((ROOT / path).resolve())


def write_sweep(folder: Path, seeds: list[int], *, epochs: int | None, speech: bool) -> Path:
    """The quickstart sweep over ``seeds``, in-process, as a file in ``folder``."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["experiment"] = EXPERIMENT
    data["runner"] = "inprocess"
    if epochs is not None:
        data["params"]["epochs"] = epochs
    runs = []
    for entry in data["runs"]:
        if "grid" in entry:
            grid = entry["grid"]
            grid["method"] = {m: _absolute(f) for m, f in grid["method"].items()}
            grid["seed"] = list(seeds)
            runs.append(entry)
        elif speech:  # the speech run: a grid of its own over the seeds
            runs.append({"grid": {"notebook": [_absolute(entry["notebook"])],
                                  "seed": list(seeds)},
                         "params_file": _absolute(entry["params_file"]),
                         "name": entry["name"] + "-s{seed}"})  # fmt: skip
    data["runs"] = runs
    path = folder / f"{EXPERIMENT}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_precision(spec, precision: str):
    """``spec`` (a planned run) at ``precision``: its resolved params, key and name say so."""
    return dataclasses.replace(
        spec, params={**spec.params, "precision": precision},
        resolved={**spec.resolved, "precision": precision}, name=f"{spec.name}-{precision}",
    )  # fmt: skip


def _label(row) -> str:
    """The run's setting: its name without the seed and precision parts (``lora-s1-bf16``)."""
    return re.sub(rf"(-s{int(row['seed'])})?-{row['precision']}$", "", row["name"])


def _machine() -> list[str]:
    from petl_kit.training.precision import cpu_summary

    cpu = cpu_summary()
    return [
        f"- CPU: {cpu['model'] or platform.machine()}, {cpu['cores']} logical cores (shared with "
        "other jobs while this ran)",
        f"- AVX-512 / AMX / VNNI CPU flags: {', '.join(cpu['matrix_flags']) or 'none'} "
        f"(native bf16 matmul: {cpu['native_bf16']}; torch CPU capability {cpu['capability']}), "
        f"so `auto` resolves to {cpu['auto']} here; bf16 autocast still computes in bf16 "
        "(emulated), which is what the accuracy comparison needs",
        f"- torch {torch.__version__}, Python {platform.python_version()}, one thread per run",
    ]


def table(df, precisions: list[str]) -> tuple[list[str], list[str]]:
    """The Markdown table and the methods whose difference exceeds their seed spread (with
    the unrounded difference and spread)."""
    a, b = precisions
    head = (f"| method | {a} test acc. | {b} test acc. | {b} − {a} | per seed | seed spread "
            "| within |", "|---|---|---|---|---|---|---|")  # fmt: skip
    lines, outside, diffs = list(head), [], []
    df = df.assign(label=df.apply(_label, axis=1)).sort_values("started")  # the sweep's order
    for label in dict.fromkeys(df["label"]):
        cells, stats, by_seed = [], {}, {}
        for p in precisions:
            rows = df[(df.label == label) & (df.precision == p)]
            by_seed[p] = dict(zip(rows["seed"], 100 * rows["test_accuracy"], strict=True))
            values = list(by_seed[p].values())
            if not values:
                raise SystemExit(f"{label}: no completed run at {p}; run the benchmark again "
                                 "(it skips the runs already completed)")  # fmt: skip
            stats[p] = (statistics.fmean(values), statistics.pstdev(values))
            cells.append(f"{stats[p][0]:.1f} ± {stats[p][1]:.1f} (n={len(values)})")
        diff = stats[b][0] - stats[a][0]
        spread = max(stats[a][1], stats[b][1])
        diffs.append(diff)
        paired = ", ".join(f"{by_seed[b][seed] - by_seed[a][seed]:+.1f}"
                           for seed in sorted(set(by_seed[a]) & set(by_seed[b])))  # fmt: skip
        within = abs(diff) <= spread
        if not within:
            outside.append(f"{label}: |{diff:+.2f}| > {spread:.2f} points")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {diff:+.1f} | {paired} | "
                     f"{spread:.1f} | {'yes' if within else 'NO'} |")  # fmt: skip
    lines.append(f"| mean over the {len(diffs)} methods | | | {statistics.fmean(diffs):+.1f} | | "
                 f"| {len(diffs) - len(outside)} of {len(diffs)} |")  # fmt: skip
    return lines, outside


def _minutes(df, precision: str | None = None) -> tuple[float, float]:
    """(sum of the runs' wall time started → finished, sum of their train_seconds), minutes."""
    rows = df if precision is None else df[df.precision == precision]
    started = pd.to_datetime(rows["started"], format="%Y-%m-%dT%H:%M:%S%z")
    finished = pd.to_datetime(rows["finished"], format="%Y-%m-%dT%H:%M:%S%z")
    return (finished - started).dt.total_seconds().sum() / 60, rows["train_seconds"].sum() / 60


def _span(df) -> float:
    """Minutes from the first run's start to the last run's end."""
    started = pd.to_datetime(df["started"], format="%Y-%m-%dT%H:%M:%S%z")
    finished = pd.to_datetime(df["finished"], format="%Y-%m-%dT%H:%M:%S%z")
    return (finished.max() - started.min()).total_seconds() / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--outputs",
        type=Path,
        required=True,
        help="the outputs folder the experiment goes in (not your outputs/)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--precisions", nargs=2, default=["fp32", "bf16"])
    parser.add_argument("--epochs", type=int, default=None, help="default: the quickstart's")
    parser.add_argument("--no-speech", action="store_true", help="drop the wav2vec2 run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()  # fmt: skip
    args.outputs.mkdir(parents=True, exist_ok=True)
    os.environ["PETL_KIT_OUTPUTS"] = str(args.outputs.resolve())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    from petl_kit.experiments.executors import completed_runs, executor_options, run_specs
    from petl_kit.experiments.results import collect_results
    from petl_kit.experiments.sweep import plan_sweep

    file = write_sweep(args.outputs, args.seeds, epochs=args.epochs, speech=not args.no_speech)
    planned = plan_sweep(file)
    # submitit's local executor kills a job after 2 min unless told otherwise
    options = executor_options({"timeout_min": 240}, file, workers=args.workers)
    for i, seed in enumerate(args.seeds):
        specs = [with_precision(s, p) for s in planned if s.resolved["seed"] == seed
                 for p in args.precisions]  # fmt: skip
        t0 = time.perf_counter()
        records = run_specs(specs, completed_runs(EXPERIMENT), options, progress=False)
        took = time.perf_counter() - t0
        failed = [r["name"] for r in records if r["status"] == "failed"]
        left = (len(args.seeds) - i - 1) * took
        print(f"seed {seed}: {took / 60:.1f} min, failed: {failed or 'none'}; "
              f"about {left / 60:.0f} min left", flush=True)  # fmt: skip

    df = collect_results(EXPERIMENT)
    df = df[(df.status == "completed") & df.seed.isin(args.seeds)]
    df = df[df.precision.isin(args.precisions)]
    lines, outside = table(df, args.precisions)
    shared = yaml.safe_load(QUICKSTART.read_text())["params"]
    epochs = args.epochs or shared["epochs"]
    what = (f"{len(df)} completed runs: the quickstart sweep (`params/quickstart.yaml`, its params "
            f"files unchanged; {epochs} epochs"
            f"{'' if args.epochs is None else ' instead of the quickstart' + chr(39) + 's'}"
            f"{', without the wav2vec2 run' if args.no_speech else ''}) at precision "
            f"{' and '.join(args.precisions)}, seeds {', '.join(map(str, args.seeds))}; "
            f"`runner: inprocess`, {args.workers} worker(s).")  # fmt: skip
    if outside:
        verdict = (
            f"{len(outside)} method(s) differ by more than their seed spread "
            f"({'; '.join(outside)}): fp32 stays the default under both profiles. The rule is "
            "strict by design (three seeds' stds, every method); `per seed` (the same seed at both "
            "precisions) shows whether a difference is the same on every seed"
        )
    else:
        verdict = ("every method's difference is within its seed spread: `auto` becomes the "
                   "corrected profile's default (the reference profile and the paper presets "
                   "keep fp32)")  # fmt: skip
    times = {p: _minutes(df, p) for p in args.precisions}
    out = [
        "# Mixed precision and accuracy on the quickstart",
        "",
        "`python benchmarks/precision_accuracy.py --outputs DIR --workers "
        f"{args.workers}{' --no-speech' if args.no_speech else ''}"
        f"{f' --epochs {args.epochs}' if args.epochs else ''}`",
        "",
        what,
        "Test accuracy (%) of each run's reported `test` split, mean ± population std over seeds.",
        "Per seed: the difference at each seed, in seed order. Seed spread: the larger of the two "
        "stds; `within`: |difference| <= seed spread. "
        f"One test clip is {100 / df['test_n'].max():.2f} points "
        f"({int(df['test_n'].max())} test clips).",
        "",
        *lines,
        "",
        "Time per precision, summed over its runs (each run one process, one thread; "
        f"{args.workers} run(s) at a time on a machine shared with other jobs, so only the ratio "
        "means much): "
        + ", ".join(
            f"{p} {w:.1f} min ({t:.1f} min of it training)" for p, (w, t) in times.items()
        )  # fmt: skip
        + f"; {_span(df):.1f} min from the first run's start to the last run's end.",
        "",
        *_machine(),
        "",
        f"Verdict: {verdict}.",
    ]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
