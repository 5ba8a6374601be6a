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

from .counts import (
    GROUPS,
    count_parameters,
    flops_per_example,
    parameter_group,
    pareto_front,
    stored_bytes,
)
from .ledger import ledger_batch, run_ledger
from .timing import inference_latency, merged_latency, mixture_costs, step_seconds

__all__ = [
    "GROUPS",
    "count_parameters",
    "flops_per_example",
    "inference_latency",
    "ledger_batch",
    "merged_latency",
    "mixture_costs",
    "pareto_front",
    "parameter_group",
    "run_ledger",
    "step_seconds",
    "stored_bytes",
]
