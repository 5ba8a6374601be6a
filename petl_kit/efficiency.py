"""Efficiency ledger: parameters by group, stored bytes, FLOPs, timing, latency, Pareto fronts.

Groups of :func:`count_parameters` (spec ``reference_numbers.md`` §3.0):

- ``head``: the classifier;
- ``final_norm``: the LayerNorm after the last block (AST ``layernorm``);
- ``norms``: per-block LayerNorms of the attention and FFN sub-layers;
- ``router``: injected parameters whose name contains ``router`` (mixture routers);
- ``method``: every other injected (``petl_``) parameter: adapters, LoRA, prompts, prefixes;
- ``backbone``: other backbone parameters (BitFit biases, full fine-tuning, ``masked_spec_embed``).

Every run writes :func:`run_ledger` to ``ledger.json``: the counts, stored bytes, FLOPs per
example (``torch.utils.flop_counter``), training time, throughput, peak memory, the median
inference latency per example and, for methods that merge, the merged latency and a check that
merged and unmerged outputs agree.
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import anatomy

GROUPS = ("head", "final_norm", "norms", "router", "method", "backbone")


# ---------------------------------------------------------------------------- parameters, bytes
def parameter_group(name: str, norm_names: dict[str, str]) -> str:
    """The group of a parameter of a :class:`~petl_kit.model.PetlModel` by its qualified name."""
    if name.startswith("head."):
        return "head"
    parts = name.split(".")
    if any(p.startswith("petl_") for p in parts):
        return "router" if "router" in name else "method"
    relative = name.removeprefix("backbone.")
    # wrapped sub-layers keep the original module under `.inner.`
    relative = ".".join(p for p in relative.split(".") if p != "inner")
    return norm_names.get(relative, "backbone")


def count_parameters(model: nn.Module) -> dict:
    """``{'total', 'trainable', 'frozen', 'groups': {group: trainable count}}``.

    ``trainable`` is Σ numel over parameters with ``requires_grad`` (the reference's "printed"
    count); BatchNorm running statistics are buffers and never counted.
    """
    norm_names = anatomy.norm_parameter_names(model.backbone) if hasattr(model, "backbone") else {}
    groups = dict.fromkeys(GROUPS, 0)
    total = trainable = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            groups[parameter_group(name, norm_names)] += p.numel()
    return {"total": total, "trainable": trainable, "frozen": total - trainable, "groups": groups}


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the trainable-only weights a run stores (parameters + injected buffers)."""
    state = model.trainable_state_dict() if hasattr(model, "trainable_state_dict") else {}
    return sum(t.numel() * t.element_size() for t in state.values())


# ---------------------------------------------------------------------------- FLOPs
def _forward(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None):
    return model(inputs) if mask is None else model(inputs, mask)


def _method_flops(counts: dict[str, dict]) -> int:
    """FLOPs inside injected modules: the outermost ``petl_`` module of each path (a parent's
    count already holds its children's)."""
    total = 0
    for name, ops in counts.items():
        parts = name.split(".")
        if parts[-1].startswith("petl_") and not any(p.startswith("petl_") for p in parts[:-1]):
            total += sum(ops.values())
    return total


def _sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention() -> dict:
    """Formulas for the CPU attention kernels torch's counter has none for (it counts the CUDA
    flash / efficient / cuDNN kernels only): QKᵀ and AV, as for those. Passed per counter, not
    registered globally."""
    aten = torch.ops.aten
    name = "_scaled_dot_product_flash_attention_for_cpu"
    pairs = ((name, _sdpa_flop), (f"{name}_backward", _sdpa_backward_flop))
    return {getattr(aten, name): f for name, f in pairs if hasattr(aten, name)}


def _counter():
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_cpu_attention())


def flops_per_example(
    model: nn.Module,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    backward: bool = False,
) -> dict:
    """FLOPs per example of one forward (and backward) pass, by torch's ``FlopCounterMode``.

    Args:
        inputs: a batch ``[b, L, mel]`` (fbank) or ``[b, S]`` (waveform); ``attention_mask``
            ``[b, S]`` for padded waveform batches.
        backward: also count the backward pass of ``sum(logits)``.

    Counts matmuls, convolutions and attention (QKᵀ and AV, CPU kernels included); elementwise
    ops, softmax and norms are not counted. Returns ``{'total': ..., 'method': ...}``; ``method``
    is the forward FLOPs inside injected ``petl_`` modules (prompt and prefix tuning inject no
    compute of their own: their cost is the longer attention, in ``total`` only).
    """
    batch = inputs.shape[0]
    # grad stays on: the counter's module tracker fails under no_grad when a module is called on
    # a trainable leaf tensor (prompt tuning's dropout on its prompts)
    with _counter() as counter, torch.enable_grad():
        out = _forward(model, inputs, attention_mask)
        if backward:
            out.float().sum().backward()
    counts = counter.get_flop_counts()
    if backward:  # attribute forward FLOPs alone to the method
        with _counter() as fwd, torch.enable_grad():
            _forward(model, inputs, attention_mask)
        method = _method_flops(fwd.get_flop_counts())
    else:
        method = _method_flops(counts)
    return {"total": sum(counts.get("Global", {}).values()) / batch, "method": method / batch}


# ---------------------------------------------------------------------------- time
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> dict:
    """Median wall-clock latency of an eval-mode forward pass on one batch (``model`` device).

    Returns ``{'batch', 'repeats', 'ms_per_batch', 'ms_per_example', 'ms_all'}``; ``ms_all`` are
    the timed passes in order (after ``warmup`` untimed ones). The model's mode is restored.
    """
    if repeats < 1:
        raise ValueError(f"inference_latency: repeats = {repeats}; expected >= 1")
    device, was_training = inputs.device, model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            _forward(model, inputs, attention_mask)
            _sync(device)
            if i >= warmup:
                times.append(1e3 * (time.perf_counter() - t0))
    finally:
        model.train(was_training)
    median = statistics.median(times)
    return {"batch": inputs.shape[0], "repeats": repeats, "ms_per_batch": median,
            "ms_per_example": median / inputs.shape[0], "ms_all": times}  # fmt: skip


@torch.no_grad()
def merged_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    repeats: int = 5,
    warmup: int = 1,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> dict:
    """Latency of the merged model (:meth:`PetlModel.merge`) and whether its outputs agree.

    Returns :func:`inference_latency`'s dict plus ``max_abs_diff`` (merged vs unmerged logits)
    and ``outputs_agree`` (``torch.allclose`` with ``rtol``/``atol``). Afterwards the model is
    as it was, merged or not (LoRA ``merge_on_eval`` models are merged in eval mode): the
    weights merging touched are restored bit for bit (subtracting the update again would leave
    rounding errors in the frozen weights) and so is each module's ``merged`` flag. (A
    ``merge_on_eval`` model's eval outputs are merged already: then the check compares merged
    with merged.)
    """
    was_training = model.training
    # snapshot before eval(): a merge_on_eval model merges on that switch
    mergeable = [m for m in model.modules() if callable(getattr(m, "merge", None))]
    mergeable = [m for m in mergeable if m is not model]
    saved = {id(p): (p, p.detach().clone()) for m in mergeable for p in m.parameters(recurse=False)}
    flags = [(m, m.merged) for m in mergeable if hasattr(m, "merged")]
    model.eval()
    try:
        reference = _forward(model, inputs, attention_mask).float()
        model.merge()
        merged = _forward(model, inputs, attention_mask).float()
        out = inference_latency(model, inputs, attention_mask, repeats=repeats, warmup=warmup)
    finally:
        for m in mergeable:  # modules without a flag: their own unmerge resets them
            if not hasattr(m, "merged") and callable(getattr(m, "unmerge", None)):
                m.unmerge()
        for p, value in saved.values():
            p.copy_(value)
        for m, flag in flags:
            m.merged = flag
        model.train(was_training)
    out["max_abs_diff"] = float((merged - reference).abs().max())
    out["outputs_agree"] = bool(torch.allclose(merged, reference, rtol=rtol, atol=atol))
    return out


def step_seconds(
    models: dict[str, nn.Module],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    repeats: int = 10,
    warmup: int = 2,
    lr: float = 5e-3,
) -> dict[str, dict[str, list[float]]]:
    """Seconds of one training step (forward, cross-entropy, backward, AdamW) of each model.

    Returns ``{name: {'wall': [...], 'cpu': [...]}}``: wall-clock time and this process's CPU
    time per step (on a shared, loaded machine the CPU time is the steadier measure of the work
    done). Measurements are interleaved (A B C A B C ...) so load changes hit every model alike;
    take the median of each list. The models are trained in place.
    """
    opts = {
        k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
        for k, m in models.items()
    }
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in models}
    for i in range(warmup + repeats):
        for k, m in models.items():
            m.train()
            t0, c0 = time.perf_counter(), time.process_time()
            opts[k].zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(m(inputs), labels)
            loss.backward()
            opts[k].step()
            if i >= warmup:
                times[k]["wall"].append(time.perf_counter() - t0)
                times[k]["cpu"].append(time.process_time() - c0)
    return times


def mixture_costs(
    models: dict[str, nn.Module],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    repeats: int = 3,
    warmup: int = 1,
) -> pd.DataFrame:
    """Trainable parameters, FLOPs per example and median training-step time of each model.

    Returns a DataFrame indexed by the keys of ``models``: ``trainable``, ``gflops`` (forward),
    ``method_mflops`` (forward, inside the injected modules), ``step_ms`` and ``step_cpu_ms``
    (medians of interleaved steps, :func:`step_seconds`). The models are trained in place.
    """
    rows = {}
    for name, model in models.items():
        flops = flops_per_example(model.eval(), inputs)
        rows[name] = {
            "trainable": count_parameters(model)["trainable"],
            "gflops": flops["total"] / 1e9,
            "method_mflops": flops["method"] / 1e6,
        }
    times = step_seconds(models, inputs, labels, repeats=repeats, warmup=warmup)
    for name, t in times.items():
        rows[name]["step_ms"] = 1e3 * statistics.median(t["wall"])
        rows[name]["step_cpu_ms"] = 1e3 * statistics.median(t["cpu"])
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------- the run ledger
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
    ``inference`` (:func:`inference_latency`, fp32, eval mode), ``merged``
    (:func:`merged_latency` for methods that merge, else None), their flat copies ``gflops``
    (forward, per example), ``method_mflops``, ``latency_ms`` (per example), ``merged_latency_ms``
    and ``merged_agree`` (for tables of runs), ``errors`` and ``ledger_seconds`` (what measuring
    took). A measurement that raises is left None, its error kept in ``errors`` (with a warning):
    the run has trained, and its weights and metrics are still written.
    """
    from .methods import get_method

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
        "peak_memory_kind": fit.peak_memory_kind, "device": fit.device, "inference": latency,
        "merged": merged,
        # flat copies, so tables of runs get them as columns
        "gflops": flops_["total"] / 1e9 if flops else None,
        "method_mflops": flops_["method"] / 1e6 if flops else None,
        "latency_ms": latency_.get("ms_per_example"),
        "merged_latency_ms": merged_.get("ms_per_example"),
        "merged_agree": merged_.get("outputs_agree"),
        "errors": errors, "ledger_seconds": time.perf_counter() - t0,
    }  # fmt: skip


# ---------------------------------------------------------------------------- trade-offs
def pareto_front(
    table: pd.DataFrame, *, cost: str = "trainable_params", score: str = "test_accuracy"
) -> pd.Series:
    """Which rows of ``table`` are Pareto-optimal for lower ``cost`` and higher ``score``.

    Returns a boolean Series aligned with ``table.index`` (``table[pareto_front(table)]`` is the
    front). A row is on the front when no other row dominates it, i.e. has ``cost <=`` and
    ``score >=`` with at least one strict. Ties: rows with equal cost *and* equal score do not
    dominate each other, so all of them are on the front (or none); among rows of equal cost
    only those with the highest score can be; a row whose score only ties that of a cheaper row
    is dominated. Rows with a missing (NaN) cost or score are never on the front and dominate
    nothing.
    """
    for col in (cost, score):
        if col not in table:
            raise KeyError(f"pareto_front: no column {col!r}; columns: {list(table.columns)}")
    c = pd.to_numeric(table[cost], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(table[score], errors="coerce").to_numpy(dtype=float)
    on = np.zeros(len(table), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(c) | np.isnan(s)))
    order = valid[np.lexsort((-s[valid], c[valid]))]  # cost ascending, score descending
    best_cheaper, i = -np.inf, 0
    while i < len(order):  # one group of equal cost at a time
        j = i
        while j < len(order) and c[order[j]] == c[order[i]]:
            j += 1
        group_best = s[order[i]]
        if group_best > best_cheaper:
            on[order[i:j][s[order[i:j]] == group_best]] = True
        best_cheaper, i = max(best_cheaper, group_best), j
    return pd.Series(on, index=table.index, name="pareto")
