"""Command line: ``python -m petl_kit {run,sweep,report,demo,predict,export,methods,params}``.

    python -m petl_kit run notebooks/14_lora.ipynb -f params/quickstart/lora.yaml -p epochs 3
    torchrun --nproc-per-node 2 -m petl_kit run notebooks/14_lora.ipynb --inprocess -f ...
    python -m petl_kit sweep params/quickstart.yaml --workers 2     # submitit, 2 local workers
    python -m petl_kit sweep params/sweeps/paper1_table1_esc50.yaml -p data_path /data
    python -m petl_kit report quickstart --filter git_commit=1a2b3c --filter torch=2.11.0
    python -m petl_kit demo
    python -m petl_kit predict outputs/quickstart/lora-... clip.wav clips/ --out predictions.csv
    python -m petl_kit export outputs/quickstart/lora-... exported/ --format hf   # | peft | kit
    python -m petl_kit methods
    python -m petl_kit params notebooks/10_linear.ipynb     # the notebook's parameters

``-p KEY VALUE`` values are read as YAML: ``-p epochs 3`` is an int, ``-p lr null`` is None,
``-p checkpoint builtin:tiny-ast`` a string. User errors print one line and exit with 2; a run
that fails exits with 1 (its folder says why).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

EXIT_FAILED, EXIT_USAGE = 1, 2
QUICKSTART = "params/quickstart.yaml"


def _value(text: str):
    from .experiments.provenance import load_yaml

    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def parse_overrides(pairs: list[list[str]] | None) -> dict:
    return {key: _value(value) for key, value in (pairs or [])}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m petl_kit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute a notebook with papermill into a new run folder")
    run.add_argument("notebook", type=Path)
    run.add_argument("-f", "--params-file", type=Path, help="flat YAML of parameters")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                     help="override one parameter (value read as YAML); repeatable")  # fmt: skip
    run.add_argument("-e", "--experiment", help="experiment folder (default: the params')")
    run.add_argument("-n", "--name", help="run name (default: the method)")
    run.add_argument("--inprocess", action="store_true",
                     help="train in this process with the notebook's parameters, without "
                     "executing it (what torchrun's data-parallel processes need)")  # fmt: skip

    sweep = sub.add_parser("sweep", help="run a sweep file; completed runs are skipped")
    sweep.add_argument("file", type=Path)
    sweep.add_argument("--fresh", action="store_true", help="rerun runs that already completed")
    _sweep_options(sweep)

    report = sub.add_parser("report", help="write the tables and plots of an experiment")
    report.add_argument("experiment")
    report.add_argument("--filter", action="append", metavar="COLUMN=VALUE", default=[],
                        help="only runs whose results column equals VALUE (e.g. git_commit=1a2b, "
                        "torch=2.11.0, method=lora); repeatable")  # fmt: skip

    demo = sub.add_parser("demo", help="quickstart sweep on the synthetic task, then the report")
    demo.add_argument("--sweep", type=Path, default=None, help=f"sweep file (default {QUICKSTART})")
    demo.add_argument("--fresh", action="store_true", help="rerun runs that already completed")
    _sweep_options(demo)

    crossval = sub.add_parser(
        "crossval",
        add_help=False,
        help="cross-validation folds or few-shot episodes of one params file",
    )
    crossval.add_argument("args", nargs=argparse.REMAINDER)

    predict = sub.add_parser("predict", help="classify audio files with a finished run")
    predict.add_argument("run_dir", type=Path, help="a run folder or a kit export")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_FOLDER")
    predict.add_argument("--out", type=Path, help="write the table as CSV (default: print it)")
    predict.add_argument("--batch-size", type=int, default=16, help="segments per forward pass")
    predict.add_argument("--threshold", type=float, default=0.5, help="multi-label tag threshold")
    export = sub.add_parser("export", help="export a run: transformers (hf), PEFT or kit folder")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out", type=Path, help="a new (or empty) folder")
    export.add_argument("--format", choices=["hf", "peft", "kit"], default="kit")
    export.add_argument("--overwrite", action="store_true", help="replace what OUT holds")

    sub.add_parser("methods", help="list the registered PETL methods")
    params = sub.add_parser("params", help="show a notebook's parameters (types, defaults, help)")
    params.add_argument("notebook", type=Path)
    return parser


def _sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at a time through submitit (default: the file's, else 1)",
    )
    parser.add_argument(
        "--executor",
        choices=["none", "local", "slurm", "debug"],
        default=None,
        help="submitit executor, or none: in this process, one run after another (default: the "
        "file's; local when --workers > 1)",
    )
    parser.add_argument(
        "--runner",
        choices=["papermill", "inprocess"],
        default=None,
        help="execute the notebooks (papermill) or call run_experiment directly",
    )
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="train each run data-parallel on N devices: one job of N tasks "
                        "(local or slurm executor, --runner inprocess)")  # fmt: skip
    parser.add_argument("--slurm-partition", default=None, metavar="NAME",
                        help="Slurm partition of every job (--executor slurm)")  # fmt: skip
    parser.add_argument("--slurm-time-min", type=int, default=None, metavar="MINUTES",
                        help="Slurm time limit of every job; --executor slurm needs it here or "
                        "as timeout_min in the sweep's executor block")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                        help="override a parameter of every run (value read as YAML)")  # fmt: skip


def _sweep_kwargs(args) -> dict:
    slurm = {"slurm_partition": args.slurm_partition, "timeout_min": args.slurm_time_min}
    return dict(resume=not args.fresh, workers=args.workers, executor=args.executor,
                runner=args.runner, progress=not args.no_progress,
                overrides=parse_overrides(args.param), devices=args.devices,
                executor_params={k: v for k, v in slurm.items() if v is not None})  # fmt: skip


def parse_filters(items: list[str]) -> dict:
    """``["git_commit=1a2b", "seed=0"]`` → ``{"git_commit": "1a2b", "seed": "0"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter {item!r}: expected COLUMN=VALUE, e.g. torch=2.11.0")
        out.setdefault(key, []).append(value)
    return out


def _cmd_run(args) -> int:
    from .config import ConfigError
    from .experiments.runs import load_params_file, run_notebook
    from .training import distributed

    params, source = {}, "-p"
    if args.params_file:
        params = load_params_file(args.params_file)
        source = str(args.params_file)
    overrides = parse_overrides(args.param)
    if overrides:
        from .experiments.runs import validate_params

        validate_params(args.notebook, overrides, source="-p overrides")
        source += " + -p overrides" if args.params_file else ""
    if distributed.launched() > 1 and not args.inprocess:
        raise ConfigError(f"launched as {distributed.launched()} processes (WORLD_SIZE): add "
                          "--inprocess; a notebook's kernel cannot join their process "
                          "group")  # fmt: skip
    if args.inprocess:
        run_dir = _run_inprocess(args, {**params, **overrides}, source)
    else:
        run_dir = run_notebook(args.notebook, {**params, **overrides},
                               experiment=args.experiment, name=args.name,
                               source=source)  # fmt: skip
    if distributed.is_main():
        print(f"completed: {run_dir}")
    return 0


def _run_inprocess(args, params: dict, source: str) -> Path:
    """``run --inprocess``: ``run_experiment`` on the notebook's resolved parameters."""
    from .experiments.claims import new_run_dir
    from .experiments.runs import inprocess_params, resolve_params, run_experiment, validate_params
    from .training import distributed

    if args.experiment is not None:
        params["experiment"] = args.experiment
    validate_params(args.notebook, params, source=source)
    run_params = inprocess_params(resolve_params(args.notebook, params))
    run_dir = None
    if args.name and distributed.is_main():  # the folder's name; the other processes get it
        run_dir = new_run_dir(run_params.get("experiment") or "scratch", args.name)
    return run_experiment(run_params, run_dir).run_dir


def _cmd_sweep(args) -> int:
    from .experiments.sweep import run_sweep

    records = run_sweep(args.file, **_sweep_kwargs(args))
    return EXIT_FAILED if any(r["status"] in ("failed", "cancelled") for r in records) else 0


def _cmd_report(args) -> int:
    from .experiments.report import write_report

    paths = write_report(args.experiment, **parse_filters(args.filter))
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _quickstart_file() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / QUICKSTART).is_file():
            return root / QUICKSTART
    raise FileNotFoundError(f"{QUICKSTART} not found; run the demo from the petl_kit checkout")


def _builtins_of(specs) -> list[str]:
    """The built-in checkpoints (``'tiny-ast'``...) that planned runs (``RunSpec``) load, sorted."""
    checkpoints = {str(s.resolved.get("checkpoint")) for s in specs}
    return sorted(c.removeprefix("builtin:") for c in checkpoints if c.startswith("builtin:"))


def _ensure_builtin(name: str = "tiny-ast") -> None:
    from .backbones import pretrained

    # the folder pretrained.builtin_checkpoint caches into (complete once pretraining.json is in)
    if name not in pretrained.BUILTINS:
        pretrained.builtin_checkpoint(name)  # the ConfigError naming the valid built-ins
    folder = pretrained.cache_dir() / f"{name}-v{pretrained.BUILTINS[name].version}"
    if (folder / "pretraining.json").is_file():
        print(f"Reusing the built-in checkpoint builtin:{name} ({folder})")
        return
    print(f"Pre-training the built-in checkpoint builtin:{name} once on the synthetic source task "
          f"(cached in {folder} for later runs) ...", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    pretrained.builtin_checkpoint(name)
    print(f"  done in {time.perf_counter() - t0:.0f} s")


def _cmd_demo(args) -> int:
    from .experiments.report import write_report
    from .experiments.sweep import plan_sweep, run_sweep

    t0 = time.perf_counter()
    # tiny models: one thread per process is as fast, and far faster on a shared, busy CPU
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sweep_file = args.sweep or _quickstart_file()
    specs = plan_sweep(sweep_file)
    # every built-in the sweep's runs load (tiny-ast, tiny-wav2vec2), pretrained before any run
    # starts, so parallel workers find them cached instead of waiting on one another's lock
    for name in _builtins_of(specs):
        _ensure_builtin(name)
    experiment = specs[0].experiment
    records = run_sweep(sweep_file, **_sweep_kwargs(args))
    paths = write_report(experiment)
    print()
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"demo took {time.perf_counter() - t0:.0f} s")
    return EXIT_FAILED if any(r["status"] == "failed" for r in records) else 0


def _cmd_crossval(args) -> int:
    from .experiments import crossval

    return crossval.main(args.args)


def _cmd_predict(args) -> int:
    from .share import load_run

    table = load_run(args.run_dir).predict(
        list(args.inputs), batch_size=args.batch_size, threshold=args.threshold
    )
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"{len(table)} predictions: {args.out}")
    else:
        print(table.to_string(index=False, max_cols=12))
    return 0


def _cmd_export(args) -> int:
    from .share import export_run

    out = export_run(args.run_dir, args.out, args.format, overwrite=args.overwrite)
    print(f"exported ({args.format}): {out}  (model card: {out / 'README.md'})")
    return 0


def _cmd_methods(args) -> int:
    import petl_kit as pk

    for name in pk.list_methods():
        spec = pk.get_method(name)
        keys = ", ".join(pk.methods.config_keys(name)) or "-"
        print(f"{name:16s} lr {spec.lr:<8g} keys: {keys}   [{spec.paper}]")
    return 0


def _cmd_params(args) -> int:
    from .experiments.runs import notebook_parameters

    for name, p in notebook_parameters(args.notebook).items():
        print(
            f"{name}: {p['type']} = {p['default']!r}" + (f"   # {p['help']}" if p["help"] else "")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from .backbones.registry import CheckpointError
    from .config import ConfigError
    from .experiments.runs import RunFailed

    args = build_parser().parse_args(argv)
    handlers = {"run": _cmd_run, "sweep": _cmd_sweep, "report": _cmd_report, "demo": _cmd_demo,
                "crossval": _cmd_crossval, "predict": _cmd_predict, "export": _cmd_export,
                "methods": _cmd_methods,
                "params": _cmd_params}  # fmt: skip
    try:
        return handlers[args.command](args)
    except RunFailed as err:
        print(f"run failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
