"""Cross-validation and few-shot drivers: one call runs every fold / episode through
``runs.run_experiment`` and writes the aggregate ``metrics.json`` (spec
``datasets_and_protocols.md`` §6 and §9).

Folder of one call (``out_dir``, default ``<outputs>/<experiment>/cv-<method>-<time>-<hex>/``)::

    metrics.json        status, protocol switches, folds: [...], mean, std (population), std_sample
    fold<i>/            one ordinary run folder per fold (params.yaml, metrics.json, ...)
    k<k>/ep<e>/fold<i>/ few-shot: one run per k, episode and fold

>>> summary = run_folds(params, dataset_options={"val_fraction": 0.1})
>>> summary["mean"], summary["std"], [f["test"]["accuracy"] for f in summary["folds"]]

Command line (``params`` = a flat YAML of the method notebook's keys, e.g. ``params/paper1/``)::

    python -m petl_kit.crossval folds params/paper1/table1/esc50/conformer_pfeiffer.yaml \\
        -p data_path /data
    python -m petl_kit.crossval few-shot params/paper1/table2/esc50/lora.yaml -p data_path /data \\
        --k 1 2 4 8 --episodes 5
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..data import DATASETS, load_dataset, register_dataset
from ..data.protocols import dataset_folds, few_shot, protocol, summarize
from ..training import distributed
from .claims import new_run_dir
from .provenance import write_json, write_yaml
from .runs import dataset_options

__all__ = ["run_folds", "run_few_shot", "protocol_run", "aggregate", "main"]

_KEEP = ("test", "test_last", "test_best_val", "val", "select", "sizes", "trainable_params")
_SWITCHES = ("esc50_protocol", "us8k_protocol", "iemocap_protocol", "few_shot_sampler", "profile")


def _load(params: dict, fold: int | None, options: dict):
    opts = dict(options)
    if params["dataset"] in ("esc50", "us8k", "gsc", "fsc", "iemocap"):
        opts.setdefault("profile", params["profile"])
    for key, value in dataset_options(params).items():  # as run_experiment loads it
        opts.setdefault(key, value)
    if fold is not None and not (fold == 0 and not _takes_fold(params["dataset"])):
        opts["fold"] = fold  # fold 0 of a single-split set (synthetic) is that split
    return load_dataset(params["dataset"], params["data_path"], **opts)


def _takes_fold(dataset: str) -> bool:
    entry = DATASETS.get(dataset)
    return entry is not None and "fold" in inspect.signature(entry.fn).parameters


def protocol_run(
    params: dict[str, Any],
    run_dir: Path,
    *,
    fold: int | None = None,
    shots: int | None = None,
    episode: int = 0,
    dataset_options: dict | None = None,
) -> dict:
    """One ordinary run (``run_experiment`` into ``run_dir``) on fold ``fold`` of
    ``params["dataset"]`` and, with ``shots``, on few-shot episode ``episode`` of it (k-shot
    training set drawn with seed ``episode``, the profile's sampler; val and test complete).

    The grid sweeps' protocol axes (``petl_kit.sweep``) run through here; ``dataset.json`` in the
    run folder records the split. Returns the run's metrics.
    """
    options = dict(dataset_options or {})
    splits = _load(params, fold, options)
    call = dict(name=params["dataset"], data_path=params["data_path"], fold=fold, **options)
    if shots is not None:
        splits = few_shot(splits, shots, seed=episode, profile=params["profile"])
        call.update(few_shot=splits.info["few_shot"], episode=episode)
    return _run_one(params, splits, Path(run_dir), call)


@contextlib.contextmanager
def _registered(splits):
    """Expose ``splits`` to ``run_experiment`` as a temporary registered dataset."""
    name = f"{splits.name}@{time.monotonic_ns()}"
    register_dataset(name, lambda **_: splits, requires_path=False)
    try:
        yield name
    finally:
        DATASETS.pop(name, None)


def _run_one(params: dict, splits, run_dir: Path, call: dict) -> dict:
    """One ordinary run on ``splits``; its metrics (``run_experiment`` writes the folder)."""
    from .runs import run_experiment

    if distributed.is_main():  # a data-parallel run's other processes write nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            run_dir / "dataset.json",
            {"load_dataset": call, "info": splits.info, "sizes": splits.sizes()},
        )
    if "splits" in inspect.signature(run_experiment).parameters:
        result = run_experiment(params, run_dir, splits=splits)
    else:
        with _registered(splits) as name:
            result = run_experiment({**params, "dataset": name, "data_path": None}, run_dir)
    return result.metrics


def _primary(test: dict) -> str:
    return "accuracy" if "accuracy" in test else next(k for k in test if k not in ("n", "loss"))


def aggregate(results: Sequence[dict], key: str = "test") -> dict[str, dict]:
    """``{metric: summarize(values)}`` over runs for every numeric metric of ``results[i][key]``
    present in all of them (sample counts ``n`` left out)."""
    dicts = [r.get(key) or {} for r in results]
    if not dicts or not all(dicts):
        return {}
    names = [
        m for m in dicts[0] if m != "n" and all(isinstance(d.get(m), (int, float)) for d in dicts)
    ]
    return {m: summarize([d[m] for d in dicts]) for m in names}


def _headline(s: dict, std_key: str, what: str) -> str:
    std = s[std_key]
    kind = "population" if std_key == "std" else "sample"
    std_text = "n/a" if math.isnan(std) else f"{100 * std:.2f}"
    return f"{100 * s['mean']:.2f} ± {std_text} (% mean ± {kind} std over {s['n']} {what})"


def _begin(params: dict, out_dir, kind: str, extra: dict) -> tuple[Path, dict]:
    from ..methods import get_method

    method = get_method(params["method"]).name
    out = Path(out_dir) if out_dir else new_run_dir(params["experiment"], f"{kind}-{method}")
    out.mkdir(parents=True, exist_ok=True)
    base = dict(
        kind=kind, method=method, **{k: params[k] for k in ("dataset", "backbone", "profile")}
    )
    base.update(extra)
    write_yaml(out / "params.yaml", {**params, **{f"crossval_{k}": v for k, v in extra.items()}})
    write_json(out / "metrics.json", {"status": "running", **base})
    return out, base


def _guarded(out: Path, base: dict, body):
    try:
        summary = body()
    except BaseException as err:
        error = dict(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        write_json(out / "metrics.json", {"status": "failed", **base, **error})
        raise
    summary = {"status": "completed", **base, **summary, "out_dir": str(out)}
    write_json(out / "metrics.json", summary)
    return summary


def run_folds(
    params: dict[str, Any],
    *,
    folds: Sequence[int] | None = None,
    dataset_options: dict | None = None,
    out_dir=None,
) -> dict:
    """Train and test once per fold of ``params["dataset"]``; aggregate like paper 1.

    Args:
        params: flat run parameters (``runs.COMMON_KEYS`` + training and method keys).
        folds: fold indices (default: every fold of the dataset's protocol; for a csv manifest
            with a ``fold`` column its own fold labels, e.g. 1..5).
        dataset_options: more loader options (``val_fraction``, ``esc50_protocol``, ``cache``...);
            ``fold`` and ``profile`` come from the call and ``params``.

    Returns (and writes as ``metrics.json``): ``folds`` (per fold: ``fold``, ``run_dir``, ``test``,
    ``test_last``, ``test_best_val``, ``val``, ``select``, ``sizes``, ``protocol``), ``metric`` (the
    primary one), its ``values``/``mean``/``std`` (population, ddof 0, as paper 1)/``std_sample``,
    ``metrics`` (that summary for every test metric, e.g. IEMOCAP WA = accuracy and UA =
    balanced_accuracy), ``metrics_last`` / ``metrics_best_val``, and a ``summary`` line.
    """
    options = dict(dataset_options or {})
    if folds is None:  # every fold of the protocol: a csv manifest's own fold labels
        folds = dataset_folds(params["dataset"], params["data_path"], **options)
    folds = list(folds)
    out, base = _begin(params, out_dir, "cv", {"folds_run": folds, "dataset_options": options})

    def body():
        rows = []
        for fold in folds:
            splits = _load(params, fold, options)
            call = dict(name=params["dataset"], data_path=params["data_path"], fold=fold, **options)
            m = _run_one(params, splits, out / f"fold{fold}", call)
            row = dict(fold=fold, run_dir=str(out / f"fold{fold}"))
            row.update({k: m.get(k) for k in _KEEP})
            row["protocol"] = {k: splits.info[k] for k in _SWITCHES if k in splits.info}
            rows.append(row)
        metric = _primary(rows[0]["test"])
        stats = aggregate(rows)
        summary = dict(folds=rows, metric=metric, **stats[metric], metrics=stats)
        summary.update(metrics_last=aggregate(rows, "test_last"), protocol=rows[0]["protocol"])
        summary.update(metrics_best_val=aggregate(rows, "test_best_val"))
        return {**summary, "summary": _headline(stats[metric], "std", "folds")}

    return _guarded(out, base, body)


def run_few_shot(
    params: dict[str, Any],
    k: int | Sequence[int],
    *,
    episodes: int | None = None,
    base_seed: int = 0,
    sampler: str | None = None,
    folds: Sequence[int] | None = None,
    dataset_options: dict | None = None,
    out_dir=None,
) -> dict:
    """k-shot training: for each k, episode and fold, a run from scratch on a k-per-class subset
    of the fold's training set; val and test stay complete (spec §6).

    ``sampler`` (None: the profile's ``few_shot_sampler``): ``"random_episodes"`` draws episode e
    with seed ``base_seed + e`` (``episodes`` default 5); ``"first_k"`` (reference) is
    deterministic, so it runs one episode. Every run uses ``params["seed"]`` for the model and the
    schedule, identical across episodes. An episode's value is the fold-averaged test metric.

    Returns / writes, per k: ``k``, ``E``, ``seeds``, ``sampler``, ``episodes`` (per episode:
    ``episode``, ``seed``, ``value``, ``folds`` [...]), ``values``, ``mean``, ``std_sample``
    (the headline, spec §6), ``std`` (population); several k: ``shots: [...]`` at the top.
    """
    options = dict(dataset_options or {})
    sampler = sampler or protocol(params["profile"]).few_shot_sampler
    ks = [k] if isinstance(k, int) else list(k)
    n_ep = 1 if sampler == "first_k" else (5 if episodes is None else int(episodes))
    if folds is None:  # every fold of the protocol: a csv manifest's own fold labels
        folds = dataset_folds(params["dataset"], params["data_path"], **options)
    folds = list(folds)
    extra = dict(k=ks if len(ks) > 1 else ks[0], E=n_ep, sampler=sampler, base_seed=base_seed)
    extra.update(folds_run=folds, dataset_options=options)
    out, base = _begin(params, out_dir, "fewshot", extra)

    def one_k(kk: int) -> dict:
        seeds = [base_seed + e for e in range(n_ep)]
        eps, metric = [], "accuracy"
        for e, seed in enumerate(seeds):
            rows = []
            for fold in folds:
                splits = few_shot(_load(params, fold, options), kk, sampler=sampler, seed=seed)
                run_dir = out / f"k{kk}" / f"ep{e}" / f"fold{fold}"
                shot = splits.info["few_shot"]
                call = dict(name=params["dataset"], fold=fold, few_shot=shot, **options)
                m = _run_one(params, splits, run_dir, call)
                metric = _primary(m["test"])
                row = dict(fold=fold, run_dir=str(run_dir), value=m["test"][metric], test=m["test"])
                row.update(
                    select=m.get("select"), n_train=shot["n_train"], warnings=shot["warnings"]
                )
                rows.append(row)
            value = sum(r["value"] for r in rows) / len(rows)
            seed = seed if sampler != "first_k" else None
            eps.append(dict(episode=e, seed=seed, value=value, folds=rows))
        stats = summarize([ep["value"] for ep in eps])
        selects = {r["select"] for ep in eps for r in ep["folds"]}
        note = "validation split is complete: best-val selection is not strictly few-shot"
        out_k = dict(k=kk, E=n_ep, seeds=seeds if sampler != "first_k" else [], sampler=sampler)
        out_k.update(metric=metric, episodes=eps, **stats)
        out_k.update(note=note if "best_val" in selects else None)
        return {**out_k, "summary": _headline(stats, "std_sample", "episodes")}

    def body():
        shots = [one_k(kk) for kk in ks]
        for s in shots:
            write_json(out / f"k{s['k']}" / "metrics.json", {"status": "completed", **base, **s})
        return shots[0] if len(shots) == 1 else {"shots": shots}

    return _guarded(out, base, body)


def _parse(argv):
    ap = argparse.ArgumentParser("python -m petl_kit crossval", description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["folds", "few-shot"])
    ap.add_argument("params", type=Path, help="flat YAML of run parameters")
    pair = dict(nargs=2, action="append", metavar=("KEY", "VALUE"))
    ap.add_argument("-p", **pair, help="override a run parameter")
    ap.add_argument("-o", **pair, help="a dataset loader option (val_fraction, cache, ...)")
    ap.add_argument("--folds", type=int, nargs="+")
    ap.add_argument("--k", type=int, nargs="+", help="few-shot: examples per class")
    ap.add_argument("--episodes", type=int)
    ap.add_argument("--base-seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from .runs import load_params_file

    args = _parse(argv)
    params = load_params_file(args.params)
    params.update({k: yaml.safe_load(v) for k, v in args.p or []})
    options = {k: yaml.safe_load(v) for k, v in args.o or []}
    if args.mode == "folds":
        s = run_folds(params, folds=args.folds, dataset_options=options, out_dir=args.out_dir)
        print(s["summary"], "\n", s["out_dir"])
        return 0
    if not args.k:
        raise SystemExit("few-shot needs --k (examples per class), e.g. --k 1 2 4 8")
    kw = dict(episodes=args.episodes, base_seed=args.base_seed, folds=args.folds)
    s = run_few_shot(params, args.k, **kw, dataset_options=options, out_dir=args.out_dir)
    for shot in s.get("shots", [s]):
        print(f"k={shot['k']}: {shot['summary']}")
    print(s["out_dir"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
