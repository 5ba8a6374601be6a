"""The efficiency ledger every run writes (``ledger.json``; see :mod:`petl_kit.efficiency`)."""

from __future__ import annotations

import time
import warnings

from .counts import count_parameters, flops_per_example, stored_bytes
from .timing import inference_latency, merged_latency


def ledger_batch(loaders: dict, max_examples: int = 8):
    """``(inputs, attention_mask | None)``: the first batch of the test (else val, else train)
    loader, cut to ``max_examples`` — what a run measures FLOPs and latency on."""
    for split in ("test", "val", "train"):
        if loaders.get(split) is not None:
            batch = next(iter(loaders[split]), None)
            if batch is not None:
                mask = batch.get("attention_mask")
                inputs = batch["input_values"][:max_examples]
                return inputs, None if mask is None else mask[:max_examples]
    raise ValueError(f"ledger_batch: no non-empty loader among {sorted(loaders)}")


def run_ledger(model, fit, loaders: dict, *, max_examples: int = 8, repeats: int = 5) -> dict:
    """The efficiency ledger of a trained run (``ledger.json``).

    Args:
        model: the trained :class:`~petl_kit.model.PetlModel` (on its training device).
        fit: the :class:`~petl_kit.train.FitResult` of its training.
        loaders: the run's loaders; FLOPs and latency use :func:`ledger_batch`.

    Keys: ``parameters`` (:func:`count_parameters`), ``stored_bytes``, ``flops_per_example``
    (forward: ``total``, ``method``), ``train_seconds``, ``wall_seconds``, ``examples_per_second``
    (training throughput), ``steps``, ``peak_memory_mb`` and ``peak_memory_kind``, ``device``,
    ``precision`` (the training's autocast as run: ``'fp32'`` | ``'bf16'`` | ``'fp16'``),
    ``processes`` (data-parallel processes that trained it; the peak memory is process 0's),
    ``inference`` (:func:`inference_latency`, fp32, eval mode), ``merged``
    (:func:`merged_latency` for methods that merge, else None), their flat copies ``gflops``
    (forward, per example), ``method_mflops``, ``latency_ms`` (per example), ``merged_latency_ms``
    and ``merged_agree`` (for tables of runs), ``errors`` and ``ledger_seconds`` (what measuring
    took). A measurement that raises is left None, its error kept in ``errors`` (with a warning):
    the run has trained, and its weights and metrics are still written.
    """
    from ..methods import get_method

    t0, errors = time.perf_counter(), {}

    def attempt(name, measure):
        try:
            return measure()
        except Exception as err:  # a measurement must not fail a run that trained
            errors[name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"efficiency ledger: {name} not measured ({errors[name]})", stacklevel=3)
            return None

    device = next(model.parameters()).device
    batch = attempt("batch", lambda: ledger_batch(loaders, max_examples))
    flops = latency = merged = None
    if batch is not None:
        inputs, mask = batch[0].to(device), None if batch[1] is None else batch[1].to(device)
        was_training = model.training
        model.eval()
        try:
            # the FLOP-counting pass (and merged_latency's output check) warm up: no extra passes
            flops = attempt("flops", lambda: flops_per_example(model, inputs, mask))
            latency = attempt("inference", lambda: inference_latency(
                model, inputs, mask, repeats=repeats, warmup=0))  # fmt: skip
            if getattr(model, "method", None) and get_method(model.method).merges:
                merged = attempt("merged", lambda: merged_latency(
                    model, inputs, mask, repeats=repeats, warmup=0))  # fmt: skip
        finally:
            model.train(was_training)
    flops_, latency_, merged_ = flops or {}, latency or {}, merged or {}
    return {
        "parameters": count_parameters(model), "stored_bytes": stored_bytes(model),
        "flops_per_example": flops, "train_seconds": fit.train_seconds,
        "wall_seconds": fit.wall_seconds, "examples_per_second": fit.examples_per_second,
        "steps": fit.steps, "peak_memory_mb": fit.peak_memory_mb,
        "peak_memory_kind": fit.peak_memory_kind, "device": fit.device,
        "precision": fit.precision, "processes": fit.processes, "inference": latency,
        "merged": merged,
        # flat copies, so tables of runs get them as columns
        "gflops": flops_["total"] / 1e9 if flops else None,
        "method_mflops": flops_["method"] / 1e6 if flops else None,
        "latency_ms": latency_.get("ms_per_example"),
        "merged_latency_ms": merged_.get("ms_per_example"),
        "merged_agree": merged_.get("outputs_agree"),
        "errors": errors, "ledger_seconds": time.perf_counter() - t0,
    }  # fmt: skip
