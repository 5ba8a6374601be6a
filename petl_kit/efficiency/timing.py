"""Time: inference latency (plain and merged, with an output check) and training-step time
(see :mod:`petl_kit.efficiency`)."""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch
from torch import nn

from .counts import _forward, count_parameters, flops_per_example


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
