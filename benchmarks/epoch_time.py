"""Benchmark: whole training epochs, end to end, with and without the feature cache (issue
"Speed and scale", benchmarks).

Data: a generated folder in ESC-50's own layout (what :func:`petl_kit.data.esc50.load_esc50`
reads): ``ESC-50/audio/<fold>-<source>-<take>-<target>.wav`` (5 s, 44.1 kHz mono, PCM_16: a
class-dependent tone in noise) and ``ESC-50/meta/esc50.csv`` (``filename,fold,target,category,
esc10,src_file,take``), ``--clips-per-class`` clips of each of the 50 classes, clip i in fold
i mod 5 + 1 (ESC-50 has 40 per class, 8 per fold; the default 10, 2 per fold, keeps the run to
minutes on a small machine and the 4:1 split of train to test).

Each run goes through the steps of a kit run (:mod:`petl_kit.experiments.steps`: ``load_data`` →
``build`` → ``make_loaders`` → ``fit``; the run folder's artefacts are left out) with ESC-50's
recipe: L = 500 frames, SpecAugment F24/T80, corrected profile (protocol 4-1, run 0: train on
folds 2-5, test on fold 1, no val split), batch ``--batch-size``, ``num_workers=0`` as runs use.
So an epoch is reading the WAVs, resampling to 16 kHz, the fbank, SpecAugment, the model's
forward and backward and the AdamW step; ``fit``'s ``epoch_seconds`` is the training epoch alone
(no val split), the test pass after the last epoch is in the run's wall time only.

``cache`` off: every epoch computes the features. ``cache`` on: a fresh feature-cache folder per
run (``$PETL_KIT_CACHE``); ``make_loaders`` computes the features of the train and test clips
*before* the first epoch (the ``cache fill`` column, once per dataset and feature setting, reused
by every later run), and every epoch, the first included, reads them; SpecAugment stays on the fly.

Methods: the quickstart's settings (``params/quickstart/<method>.yaml``) on the built-in tiny AST
(``builtin:tiny-ast``; the linear probe without its backbone-output cache, so that every epoch
runs the frozen backbone), or with ``--ast-base`` AST-base with random weights and each method's
profile defaults. Examples per second = training clips / epoch wall seconds; process CPU seconds
per epoch are reported too (they move less when other jobs share the cores). One untimed
one-epoch run comes first: the process's first pass pays one-off costs that no run's epoch 1
would.

    .venv/bin/python benchmarks/epoch_time.py --out benchmarks/results/epoch_time.md
    .venv/bin/python benchmarks/epoch_time.py --clips-per-class 40   # ESC-50's size
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from petl_kit.backbones.pretrained import builtin_checkpoint
from petl_kit.data.esc50 import ESC50_CLASSES
from petl_kit.efficiency import count_parameters
from petl_kit.experiments import steps
from petl_kit.experiments.notebook_params import load_params_file
from petl_kit.experiments.runs import RunResult
from petl_kit.training.precision import cpu_summary
from petl_kit.training.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("linear", "lora", "adapter")
RATE, SECONDS = 44100, 5.0
HEADER = "filename,fold,target,category,esc10,src_file,take"


def make_esc50(root: Path, per_class: int) -> int:
    """Write ``root/ESC-50`` (module docstring); returns the number of clips."""
    audio, meta = root / "ESC-50" / "audio", root / "ESC-50" / "meta"
    audio.mkdir(parents=True)
    meta.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * RATE)) / RATE
    rows = [HEADER]
    for target, category in enumerate(ESC50_CLASSES):
        for i in range(per_class):
            fold, source, take = i % 5 + 1, 100000 + 100 * target + i, "ABC"[i // 5 % 3]
            name = f"{fold}-{source}-{take}-{target}.wav"
            wave = 0.3 * np.sin(2 * np.pi * (100 + 40 * target) * t)
            wave += 0.05 * rng.standard_normal(t.size)
            sf.write(audio / name, wave.astype(np.float32), RATE, subtype="PCM_16")
            rows.append(f"{name},{fold},{target},{category},False,{source},{take}")
    (meta / "esc50.csv").write_text("\n".join(rows) + "\n")
    return per_class * len(ESC50_CLASSES)


def run_params(args, method: str, data: Path, cache: bool, checkpoint: str | None) -> dict:
    """A run's parameters: the ESC-50 recipe, and the quickstart's method settings on tiny AST."""
    params = {
        "experiment": "epoch_time", "method": method, "dataset": "esc50", "data_path": str(data),
        "backbone": "ast", "checkpoint": checkpoint, "max_length": 500, "freq_mask": 24,
        "time_mask": 80, "cache": cache, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": None, "seed": 0, "profile": "corrected", "device": "cpu", "select": "last",
        "progress": False,
    }  # fmt: skip
    if not args.ast_base:
        quick = load_params_file(ROOT / "params" / "quickstart" / f"{method}.yaml")
        quick.pop("probe_cache", None)  # the frozen backbone runs every epoch (module docstring)
        params.update(quick)
        params["pooling"] = "CLS"  # as the quickstart: the token tiny AST was pretrained to read
    return params


def timed_run(params: dict) -> dict:
    """The steps of a run, timed: wall and CPU seconds of the loaders (the cache fill) and of
    every epoch; examples per epoch."""
    result = RunResult(params=params, run_dir=Path(os.devnull))
    keys = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "profile")
    cfg = steps.train_config(result, keys)
    w0 = time.perf_counter()
    steps.load_data(result, {})
    steps.build(result, params["method"])
    w1, c1 = time.perf_counter(), time.process_time()
    steps.make_loaders(result, cfg)  # with the cache on: computes the missing features
    w2, c2 = time.perf_counter(), time.process_time()
    cpu = [c2]
    fr = fit(
        result.model, result.loaders, cfg, on_epoch=lambda row: cpu.append(time.process_time())
    )
    return {
        "setup": w1 - w0,
        "fill": w2 - w1,
        "fill_cpu": c2 - c1,
        "epochs": [row["epoch_seconds"] for row in fr.history],
        "epochs_cpu": [b - a for a, b in zip(cpu, cpu[1:], strict=False)],
        "examples": len(result.loaders["train"].dataset),
        "wall": time.perf_counter() - w0,
        "trainable": count_parameters(result.model)["trainable"],
    }


def machine(args, load: tuple) -> list[str]:
    cpu = cpu_summary()
    return [
        f"`benchmarks/epoch_time.py --clips-per-class {args.clips_per_class} --epochs "
        f"{args.epochs} --batch-size {args.batch_size} --threads {args.threads}"
        f"{' --ast-base' if args.ast_base else ''}` ({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
        f"Machine: {cpu['model'] or platform.machine()}, {cpu['cores']} cores shared with other "
        f"jobs (load average {load[0][0]:.2f} / {load[0][1]:.2f} / {load[0][2]:.2f} at the start, "
        f"{load[1][0]:.2f} / {load[1][1]:.2f} / {load[1][2]:.2f} at the end); AVX-512 / AMX / "
        f"VNNI flags: {', '.join(cpu['matrix_flags']) or 'none'} (native bf16: "
        f"{'yes' if cpu['native_bf16'] else 'no'}); `torch.backends.cpu.get_cpu_capability()` = "
        f"`{cpu['capability']}`; torch {torch.__version__}, **{args.threads} intra-op "
        f"thread(s)**; Python {platform.python_version()}; no GPU; fp32.",
    ]


def _rate(x: float) -> str:
    """Examples per second with three significant digits up to 100 (AST-base: below 1)."""
    return f"{x:.1f}" if x >= 100 else f"{x:.3g}"


def report(args, n_clips: int, rows: list[dict], load: tuple, wall: float) -> str:
    model = (
        "AST-base, random weights" if args.ast_base else "built-in tiny AST (`builtin:tiny-ast`)"
    )
    ex = rows[0]["examples"]
    lines = [
        "# Whole training epochs with and without the feature cache (ESC-50-shaped, CPU)",
        "",
        *machine(args, load),
        "",
        f"Data: a generated ESC-50 folder in the real layout, {n_clips} clips "
        f"({args.clips_per_class} per class; ESC-50 has 40) of 5 s at 44.1 kHz; run 0 of the "
        f"corrected protocol (4-1): {ex} training clips, {n_clips - ex} test clips, no val. "
        f"Model: {model}, L = 500, SpecAugment F24/T80, batch {args.batch_size}, AdamW; the steps "
        "of a kit run (`experiments.steps`: load_data → build → make_loaders → fit). An epoch = "
        "reading and resampling the WAVs, fbank, SpecAugment, forward, backward, optimiser.",
        "",
        "**Cache on**: a fresh cache folder per run; the features of the train and test clips are "
        "computed *before* the first epoch, when the loaders are made (`cache fill`; once per "
        "dataset and feature setting, then reused by every later run), so every epoch, the "
        "first included, reads them. **Cache off**: every epoch computes them. `epoch 1` and "
        f"`later` (median of epochs 2-{args.epochs}) are wall-clock examples per second (fit's "
        "`epoch_seconds`), `CPU` the same from process CPU time; `run wall` = from loading the "
        "dataset to the end of the test pass (cache fill included). Total "
        f"{wall:.0f} s.",
        "",
        "| method | trainable | cache | cache fill (s) | epoch 1 (ex/s) | later (ex/s) | "
        "later, CPU (ex/s) | later epoch (s) | run wall (s) | cached speed-up, later epochs "
        "(wall; CPU) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        later, later_cpu = (
            statistics.median(r["epochs"][1:]),
            statistics.median(r["epochs_cpu"][1:]),
        )
        off = next(o for o in rows if o["method"] == r["method"] and not o["cache"])
        speed = statistics.median(off["epochs"][1:]) / later
        speed_cpu = statistics.median(off["epochs_cpu"][1:]) / later_cpu
        fill = f"{r['fill']:.1f}" if r["cache"] else "–"
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | {'on' if r['cache'] else 'off'} | "
            f"{fill} | "
            f"{_rate(ex / r['epochs'][0])} | {_rate(ex / later)} | "
            f"{_rate(ex / later_cpu)} | {later:.2f} | {r['wall']:.1f} | "
            f"{'–' if not r['cache'] else f'{speed:.1f}×; {speed_cpu:.1f}×'} |"
        )
    fills = [r["fill"] for r in rows if r["cache"]]
    lines += ["", (
        f"Filling the cache took {1e3 * statistics.median(fills) / n_clips:.1f} ms per clip "
        f"(median over the {len(fills)} cached runs: read, resample, fbank, write). With the "
        "cache, what is left of an epoch is reading the stored features, SpecAugment, the "
        "model and the optimiser."
    )]  # fmt: skip
    lines += ["", "Epoch wall seconds, in order: " + "; ".join(
        f"{r['method']} cache {'on' if r['cache'] else 'off'}: "
        + ", ".join(f"{s:.2f}" for s in r["epochs"]) for r in rows
    ) + ".", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips-per-class", type=int, default=10,
                    help="ESC-50 has 40; a multiple of 5 fills the folds evenly")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=4, help="at least 2: epoch 1 and later ones")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--ast-base", action="store_true", help="AST-base, random weights")
    ap.add_argument("--out", type=Path, help="write the Markdown here")
    args = ap.parse_args(argv)
    if args.epochs < 2 or args.clips_per_class < 2:
        raise SystemExit(
            f"--epochs {args.epochs} / --clips-per-class {args.clips_per_class}: need >= 2 epochs "
            "(epoch 1 and later ones) and >= 2 clips per class (clip i goes to fold i mod 5 + 1; "
            "fold 1 is the test fold, the others train)"
        )
    torch.set_num_threads(args.threads)
    # resolved before the cache folder moves: the built-in checkpoint lives in the user's cache
    checkpoint = None if args.ast_base else str(builtin_checkpoint("tiny-ast"))
    start, load0, rows = time.perf_counter(), os.getloadavg(), []
    user_cache = os.environ.get("PETL_KIT_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        n_clips = make_esc50(Path(tmp), args.clips_per_class)
        print(f"{time.perf_counter() - start:5.0f} s  wrote {n_clips} clips", flush=True)
        # one untimed epoch first: the process's first pass over the data path and the model
        # pays one-off costs (measured: 11 s instead of 4 s) that are no run's epoch 1
        warm = run_params(args, args.methods[0], Path(tmp), False, checkpoint)
        timed_run({**warm, "epochs": 1})
        print(f"{time.perf_counter() - start:5.0f} s  warm-up run (not reported)", flush=True)
        for method in args.methods:
            for cache in (False, True):
                os.environ["PETL_KIT_CACHE"] = tempfile.mkdtemp(dir=tmp)  # a fresh cache
                r = timed_run(run_params(args, method, Path(tmp), cache, checkpoint))
                rows.append({"method": method, "cache": cache, **r})
                print(f"{time.perf_counter() - start:5.0f} s  {method} cache {cache}: fill "
                      f"{r['fill']:.1f} s, epochs {[round(s, 2) for s in r['epochs']]} s",
                      flush=True)  # fmt: skip
    if user_cache is None:
        os.environ.pop("PETL_KIT_CACHE")
    else:
        os.environ["PETL_KIT_CACHE"] = user_cache
    text = report(args, n_clips, rows, (load0, os.getloadavg()), time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
