"""Benchmark: one training step per PETL method on AST-base (issue "PETL methods", benchmark).

Every configuration is built with ``pk.build_model("ast", backbone_config={"max_length": 100},
num_classes=35, method=..., method_config=...)`` (random weights, corrected profile unless
``--kit-profile reference``) and trained with the kit's own optimiser
(:func:`petl_kit.training.train.make_optimizer`: AdamW 0.9/0.98, eps 1e-6, weight decay 0.1,
constant LR).
One step = ``zero_grad`` → forward → cross-entropy → backward → ``opt.step()`` on a random batch
``[8, 100, 128]`` (8 clips × 100 fbank frames: 110 tokens), on the CPU.

Precision (``--precision``, one or more of fp32 bf16 fp16 auto; default fp32): the forward runs
as ``fit`` runs it, through :func:`petl_kit.training.metrics.forward_batch` under the kit's
autocast (``training.precision``; ``auto`` resolved on this CPU), logits and loss in fp32, fp16
with the kit's loss scaler. Each configuration is timed at every precision with one model and
optimiser; fp32 is always timed, and ``× fp32`` is a configuration's step at that precision over
its own fp32 step in the same rounds. The report names the CPU's bf16 flags and what ``auto``
gives here: bf16 is fast only where the CPU multiplies bf16 natively (AMX-BF16, AVX-512-BF16).

Timing: process CPU time (``time.process_time``) with one intra-op thread (``--threads``): on
the shared 2-core machines it is the step's own work, far less sensitive to other jobs than wall
time (also reported); with 2 threads under load, OpenMP threads wait on each other and a step
took 3-4x longer. The configurations are interleaved (A B C ... A B C ..., each round starting
elsewhere in the list) so a change in machine load hits all of them alike; the first round is a
warm-up and is not timed; the table gives the median of the ``--repeats`` timed rounds, split
into forward, backward and optimiser, and the ratio to ``full_ft``'s median at the same
precision. About 5 minutes on an idle machine at fp32 (15 builds, 4 rounds of ~70 s of CPU),
more when it is shared or with more precisions.

Memory (what "peak MiB" means): the warm-up step runs under ``torch.profiler`` with
``profile_memory=True``; its allocation events (every tensor the CPU allocator hands out or takes
back) give the live tensor bytes over the step. Peak = bytes of every parameter and buffer + the
AdamW state (allocated before the profiled step by one zero-LR step) + the largest rise of live
bytes during forward/backward/step (activations kept for backward, gradients, temporaries). It
counts tensors only: not the Python heap, library code, allocator caching or oneDNN scratch. The
same profile gives the GEMM FLOPs (``mm``/``addmm``/``bmm``) of the backward pass against the
forward pass: ≈ 2 when weight gradients of the frozen projections are computed, ≈ 1 when only the
activation gradients are (what a PETL method inside the network needs).

    .venv/bin/python benchmarks/step_time.py --out benchmarks/results/step_time.md
    .venv/bin/python benchmarks/step_time.py --only full_ft lora-rr128 --repeats 5   # a subset
    .venv/bin/python benchmarks/step_time.py --only linear lora-rr128 bn-pf-par conf-pf soft-moa \
        --precision fp32 bf16 --out benchmarks/results/step_time_precision.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.config import build
from petl_kit.training.metrics import forward_batch
from petl_kit.training.precision import (
    PRECISIONS,
    cpu_summary,
    grad_scaler,
    resolve_precision,
)
from petl_kit.training.train import TrainConfig, make_optimizer

BATCH, MAX_LENGTH, CLASSES = 8, 100, 35
CPU = torch.device("cpu")
GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
PHASES = ("forward", "backward", "optimizer")


def _adapter(block: str, rr: int, kind: str = "Pfeiffer", mode: str = "parallel", **kw) -> dict:
    return {"adapter_block": block, "reduction_rate": rr, "adapter_type": kind,
            "seq_or_par": mode, **kw}  # fmt: skip


# (key, label, method, method_config, has a target)
CONFIGS = [
    ("linear", "linear probing", "linear", {}, False),
    ("full_ft", "full fine-tuning", "full_ft", {}, False),
    ("bitfit", "BitFit", "bitfit", {}, False),
    ("lora-rr128", "LoRA Q,V RR 128 (r 6)", "lora", {"reduction_rate": 128}, True),
    ("lora-rr64", "LoRA Q,V RR 64 (r 12)", "lora", {"reduction_rate": 64}, True),
    ("dpt25", "prompt DPT-25", "prompt_tuning", {"num_prompts": 25, "deep": True}, True),
    ("spt300", "prompt SPT-300", "prompt_tuning", {"num_prompts": 300, "deep": False}, True),
    ("prefix24", "prefix P 24", "prefix_tuning", {"num_tokens": 24}, True),
    ("bn-pf-par", "bottleneck Pfeiffer RR 64 parallel", "adapter",
     _adapter("bottleneck", 64), True),
    ("bn-pf-seq", "bottleneck Pfeiffer RR 64 sequential", "adapter",
     _adapter("bottleneck", 64, mode="sequential"), True),
    ("bn-hb", "bottleneck Houlsby RR 64 parallel", "adapter",
     _adapter("bottleneck", 64, "Houlsby"), True),
    ("conf-pf", "conformer Pfeiffer RR 96 k 31 parallel", "adapter",
     _adapter("conformer", 96, kernel_size=31), True),
    ("conf-hb", "conformer Houlsby RR 96 k 31 parallel", "adapter",
     _adapter("conformer", 96, "Houlsby", kernel_size=31), True),
    ("dense-moa", "Dense-MoA N 7 (bottleneck RR 128, Pfeiffer MHSA)", "dense_moa",
     {"num_adapters": 7}, False),
    ("soft-moa", "Soft-MoA N 7 (bottleneck RR 128, Pfeiffer MHSA)", "soft_moa",
     {"num_adapters": 7}, False),
]  # fmt: skip


@dataclass
class Bench:
    key: str
    label: str
    method: str
    config: dict
    target: bool
    precision: str = "fp32"  # as asked ('auto' too)
    model: torch.nn.Module = None
    opt: torch.optim.Optimizer = None
    scaler: torch.amp.GradScaler = None  # fit's: enabled for fp16 only
    trainable: int = 0
    times: dict = field(default_factory=lambda: {p: [] for p in (*PHASES, "step", "wall")})
    static_bytes: int = 0
    transient_bytes: int = 0
    gemm_flops: dict = field(default_factory=dict)
    frozen_with_grad: list = field(default_factory=list)
    top_ops: list = field(default_factory=list)
    shares: dict = field(default_factory=dict)
    tokens: int = 0  # sequence length entering block 1 (prompts included)

    def median(self, phase: str = "step") -> float:
        return statistics.median(self.times[phase])

    @property
    def runs(self) -> str:
        """The precision that runs: 'auto' resolved on this CPU."""
        return resolve_precision(self.precision, CPU)

    @property
    def shown(self) -> str:
        return f"auto → {self.runs}" if self.precision == "auto" else self.precision


def share(b: Bench, built: Bench) -> None:
    """Step ``b`` (another precision of ``built``'s configuration) with the same model."""
    for name in ("model", "opt", "trainable", "static_bytes"):
        setattr(b, name, getattr(built, name))


def make(b: Bench, profile_name: str) -> None:
    b.model = pk.build_model("ast", backbone_config={"max_length": MAX_LENGTH},
                             num_classes=CLASSES, method=b.method, method_config=b.config,
                             profile=profile_name, seed=0)  # fmt: skip
    cfg = build(TrainConfig, {"schedule": "constant"}, profile_name)
    b.opt, _ = make_optimizer(b.model, cfg)
    b.trainable = pk.count_parameters(b.model)["trainable"]
    # allocate the AdamW state now (one zero-LR step on zero gradients), so the profiled warm-up
    # step sees the steady state: params + optimiser state already live
    params = [p for g in b.opt.param_groups for p in g["params"]]
    lrs = [g["lr"] for g in b.opt.param_groups]
    for g in b.opt.param_groups:
        g["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    b.opt.step()
    for g, lr in zip(b.opt.param_groups, lrs, strict=True):
        g["lr"] = lr
    b.opt.zero_grad(set_to_none=True)
    tensors = [*b.model.parameters(), *b.model.buffers()]
    tensors += [t for s in b.opt.state.values() for t in s.values() if torch.is_tensor(t)]
    b.static_bytes = sum(t.numel() * t.element_size() for t in tensors)


def step(b: Bench, batch: dict, timed: bool) -> None:
    """One training step as ``fit`` takes it (autocast forward, fp32 loss, fp16 loss scaling);
    phases timed in process CPU seconds, the whole step also in wall."""
    w0, t0 = time.perf_counter(), time.process_time()
    b.opt.zero_grad(set_to_none=True)
    with record_function("forward"):
        logits, target = forward_batch(b.model, batch, CPU, b.runs)
        loss = F.cross_entropy(logits, target)
    t1 = time.process_time()
    with record_function("backward"):
        b.scaler.scale(loss).backward()
    t2 = time.process_time()
    with record_function("optimizer"):
        b.scaler.step(b.opt)
        b.scaler.update()
    t3, w1 = time.process_time(), time.perf_counter()
    if timed:
        phases = (*PHASES, "step", "wall")
        for phase, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0, w1 - w0), strict=True):
            b.times[phase].append(dt)


def _phase(event) -> str | None:
    while event is not None:
        if event.name in PHASES:
            return event.name
        event = event.cpu_parent
    return None


def profiled_step(b: Bench, batch: dict, top: int) -> None:
    """The warm-up step, under the profiler: memory timeline, GEMM FLOPs per phase, top ops."""
    first = anatomy.layers(b.model.backbone)[0]
    hook = first.register_forward_pre_hook(
        lambda m, args, kwargs: setattr(
            b, "tokens", (args or [kwargs["hidden_states"]])[0].shape[1]
        ),
        with_kwargs=True,
    )
    # free the gradients of an earlier step (another precision of this model) before profiling,
    # else their release inside the step would lower the measured rise
    b.opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_flops=True) as prof:  # fmt: skip
        step(b, batch, timed=False)
    hook.remove()
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, n in mem:
        live += n
        peak = max(peak, live)
    b.transient_bytes = peak
    flops = dict.fromkeys(PHASES, 0)
    for e in prof.events():
        if e.name in GEMMS and e.flops:
            phase = _phase(e)
            if phase:
                flops[phase] += e.flops
    b.gemm_flops = flops
    b.frozen_with_grad = [n for n, p in b.model.named_parameters()
                          if not p.requires_grad and p.grad is not None]  # fmt: skip
    b.shares, b.top_ops = time_shares(prof.events(), top)


CATEGORIES = ("GEMM fwd", "GEMM bwd", "attention", "conv", "copy/cat", "elementwise/norm",
              "optimizer", "autograd/other")  # fmt: skip


def _category(name: str, phase: str | None) -> str:
    if phase == "optimizer":
        return "optimizer"
    if name in GEMMS:
        return "GEMM bwd" if phase == "backward" else "GEMM fwd"
    if "scaled_dot_product" in name:
        return "attention"
    if "conv" in name:
        return "conv"
    if name in ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous"):
        return "copy/cat"
    if name.startswith("aten::"):
        return "elementwise/norm"
    return "autograd/other"


def time_shares(events, top: int) -> tuple[dict, list]:
    """Shares of the profiled step's self CPU time by category, and the ``top`` operators
    ``(name, phase, calls, share)`` by self time (forward and backward counted apart)."""
    by_cat, by_op, calls = dict.fromkeys(CATEGORIES, 0.0), {}, {}
    for e in events:
        phase = _phase(e)
        if phase is None or e.name in PHASES:
            continue
        t = e.self_cpu_time_total
        by_cat[_category(e.name, phase)] += t
        key = (e.name, phase)
        by_op[key] = by_op.get(key, 0.0) + t
        calls[key] = calls.get(key, 0) + 1
    total = sum(by_cat.values()) or 1.0
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])[:top]
    shares = {k: v / total for k, v in by_cat.items()}
    return shares, [(name, phase, calls[(name, phase)], t / total) for (name, phase), t in ops]


def reading(args, benches: list[Bench]) -> list[str]:
    """The paragraph that reads the table: the floor of a method inside the network."""
    got = {b.key: b for b in benches}
    if not {"linear", "full_ft", "bitfit"} <= set(got):
        return []
    lin, ft, bit = got["linear"], got["full_ft"], got["bitfit"]
    # the plain network's forward pass, measured three times over (the same computation)
    f = statistics.median(b.median("forward") for b in (lin, ft, bit))
    t = ft.median()
    floor = 2 * f / t
    targets = [b for b in benches if b.target]
    plain = [b for b in targets if b.tokens == lin.tokens]
    lines = [
        "**Reading the table.** Linear probing is a forward pass only "
        f"({lin.median() / t:.2f} × full_ft). A method with trainable tensors in the first block "
        "needs the activation gradients through every frozen block, so its step is at least "
        "forward + activation backward, ≈ 2 forward passes; it skips only the weight-gradient "
        "GEMMs of the frozen projections (`bwd/fwd GEMM` ≈ 1 for every such method, 2 for "
        "full_ft) and the optimiser update of the frozen weights. Full fine-tuning adds both: "
        f"its backward is {ft.median('backward') / f:.1f} forward passes and its AdamW update "
        f"of {ft.trainable / 1e6:.0f} M parameters takes {ft.median('optimizer'):.2f} s. So on "
        f"this machine the floor for any method inside the network is ≈ 2 × {f:.2f} s (the "
        f"plain forward: median of the linear, full_ft and BitFit forwards) / {t:.2f} s = "
        f"**{floor:.2f} × full_ft**; BitFit, which adds no compute at all, sits at "
        f"{bit.median() / t:.2f}.",
    ]
    if plain:
        lo, hi = min(b.median() / t for b in plain), max(b.median() / t for b in plain)
        rel = [b.median() / bit.median() - 1 for b in plain]
        spread = max((max(b.times["step"]) - min(b.times["step"])) / b.median() for b in plain)
        lines[-1] += (
            f" The LoRA, prefix and adapter configurations take {lo:.2f}–{hi:.2f} × full_ft, "
            f"{100 * min(rel):+.0f} % to {100 * max(rel):+.0f} % of BitFit's step, while one "
            f"configuration's rounds differ by up to {100 * spread:.0f} %: they sit at the floor, "
            "their own modules being a few per cent of the step. The "
            f"{args.target} target lies below what the frozen forward and backward alone cost "
            "here."
        )
    longer = [b for b in targets if b.tokens > lin.tokens]
    if longer:
        lines[-1] += (
            " Prompt tuning also lengthens the sequence: "
            + ", ".join(
                f"{b.label} runs {b.tokens} tokens instead of {lin.tokens} "
                f"({b.tokens / lin.tokens:.2f}×, {b.median() / t:.2f} × full_ft)"
                for b in longer
            )
            + "; the cost scales with the tokens (attention quadratically), not with the "
            "method's code."
        )
    return [*lines, ""]


def _at(benches: list[Bench], key: str, precision: str) -> Bench:
    return next(b for b in benches if b.key == key and b.precision == precision)


def machine_line() -> str:
    """The CPU and what decides its bf16 speed (``training.precision.cpu_summary``)."""
    cpu = cpu_summary()
    native = (
        "native bf16" if cpu["native_bf16"] else "no native bf16: amx_bf16 / avx512_bf16 absent"
    )
    return (
        f"CPU: {cpu['model'] or platform.machine()}; AVX-512 / AMX / VNNI flags in /proc/cpuinfo: "
        f"{', '.join(cpu['matrix_flags']) or 'none'} (**{native}**); "
        f"`torch.backends.cpu.get_cpu_capability()` = `{cpu['capability']}`; "
        f"`resolve_precision('auto', cpu)` = `{cpu['auto']}`."
    )


def gemm_seconds(dtype: torch.dtype, repeats: int = 20) -> float:
    """CPU seconds of one ``[880, 768] @ [768, 768]`` product in ``dtype`` (an AST-base
    projection of this batch: 8 clips × 110 tokens), median of ``repeats`` after a warm-up."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(BATCH * 110, 768, generator=gen).to(dtype)
    w = torch.randn(768, 768, generator=gen).to(dtype)
    a @ w
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        a @ w
        times.append(time.process_time() - t0)
    return statistics.median(times)


def precision_reading(args, benches: list[Bench]) -> list[str]:
    """Each lower precision against fp32, and whether PETL steps reached 2x (× fp32 ≤ 0.5)."""
    lower = [p for p in args.precision if p != "fp32"]
    if not lower:
        return []
    native = cpu_summary()["native_bf16"]
    lines = ["## Precision", "", machine_line(), ""]
    for prec in lower:
        rows = [b for b in benches if b.precision == prec]
        petl = [b for b in rows if b.method not in ("full_ft", "linear")]
        vs = {b.key: b.median() / _at(benches, b.key, "fp32").median() for b in rows}
        reached = [b.key for b in petl if vs[b.key] <= 0.5]
        text = (
            f"**{rows[0].shown}** step over the fp32 step of the same configuration: "
            + ", ".join(f"{k} {v:.2f}" for k, v in vs.items())
            + "."
        )
        if petl:
            text += (
                " The 2× target (a PETL step at ≤ 0.50 × its fp32 step) was reached by "
                f"{len(reached)} of {len(petl)} PETL configurations here"
                + (f" ({', '.join(reached)})." if reached else ".")
            )
        if rows[0].runs == "fp32":
            text += (
                " `auto` runs fp32 on this CPU: the same computation as the fp32 rows, so its "
                "ratios show the noise of the measurement."
            )
        elif rows[0].runs == "bf16" and not native:
            fp32, bf16 = gemm_seconds(torch.float32), gemm_seconds(torch.bfloat16)
            text += (
                " bf16 autocast is fast only where the CPU multiplies bf16 natively (AMX-BF16, "
                "AVX-512-BF16) or on a GPU. This CPU has neither flag, and its bf16 matrix "
                "multiplies are slower than fp32's: one `[880, 768] @ [768, 768]` product (a "
                f"projection of this batch), one thread, took {1e3 * fp32:.1f} ms in fp32 and "
                f"{1e3 * bf16:.1f} ms in bf16 ({bf16 / fp32:.1f}×); the GEMMs are most of the "
                "bf16 step (see the shares below). **The 2× needs native-bf16 hardware and was "
                "not reached on this machine.**"
            )
        lines += [text, ""]
    return lines


def report(args, benches: list[Bench], load: tuple, wall: float) -> str:
    mib = 2**20
    lines = [
        "# One training step per method: time and memory (AST-base, CPU)",
        "",
        f"`benchmarks/step_time.py --repeats {args.repeats}"
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + (f" --precision {' '.join(args.precision)}" if args.precision != ["fp32"] else "")
        + f"` ({time.strftime('%Y-%m-%d %H:%M')})."
        f" Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(load average {load[0][0]:.2f} / {load[0][1]:.2f} / {load[0][2]:.2f} at the start, "
        f"{load[1][0]:.2f} / {load[1][1]:.2f} / {load[1][2]:.2f} at the end), torch "
        f"{torch.__version__}, **{args.threads} intra-op thread(s)**, no GPU; "
        f"{wall:.0f} s in all. {machine_line()}",
        "",
        f"AST-base (12 layers, d = 768), random weights, `max_length` {MAX_LENGTH} (110 tokens), "
        f"{CLASSES} classes, batch {BATCH}, profile `{args.kit_profile}`. One step = zero_grad, "
        "forward, cross-entropy, backward, AdamW step (the kit's `make_optimizer`). "
        "`precision`: the forward under the kit's autocast as `fit` runs it (`forward_batch`; "
        "logits and loss in fp32; fp16 with the loss scaler), one model per configuration for "
        "every precision; `× full_ft` is at the same precision, `× fp32` is the configuration's "
        "step over its own fp32 step in the same rounds.",
        "",
        "**Time** is process CPU time (`time.process_time`): with one intra-op thread it is the "
        "work of the step and grows far less than wall time when other jobs share the cores "
        "(its median is the `wall` column; with 2 threads on the shared cores, OpenMP threads "
        f"wait on each other and a step took 3–4× longer). Medians of {args.repeats} "
        "interleaved rounds after a warm-up round (order rotated every round); `fwd`/`bwd`/`opt` "
        "are the medians of each phase; `spread` = (max − min) / median of the step's CPU time "
        "over the rounds; `tokens` = the sequence length entering block 1. `bwd/fwd GEMM`: "
        "matrix-multiply FLOPs in backward over those in forward (profiler): 2 when every "
        "weight gradient is computed, ≈ 1 when only activation gradients flow through frozen "
        "weights. **Peak** = parameters + buffers + AdamW state + the largest rise of live "
        "tensor bytes during the step (torch profiler allocation events, warm-up step; tensors "
        "only: no Python heap or allocator cache).",
        "",
        "| configuration | precision | trainable | tokens | step CPU (s) | spread | × full_ft | "
        "× fp32 | fwd (s) | bwd (s) | opt (s) | wall (s) | bwd/fwd GEMM | peak (MiB) | "
        "step-transient (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in benches:
        ratio = b.median() / _at(benches, "full_ft", b.precision).median()
        vs_fp32 = b.median() / _at(benches, b.key, "fp32").median()
        flag = " ✗" if b.target and ratio > args.target else ""
        gf = b.gemm_flops
        gemm = f"{gf['backward'] / gf['forward']:.2f}" if gf.get("forward") else "–"
        spread = (max(b.times["step"]) - min(b.times["step"])) / b.median()
        lines.append(
            f"| {b.label} | {b.shown} | {b.trainable:,} | {b.tokens} | {b.median():.2f} | "
            f"{100 * spread:.0f} % | {ratio:.2f}{flag} | {vs_fp32:.2f} | "
            f"{b.median('forward'):.2f} | {b.median('backward'):.2f} | "
            f"{b.median('optimizer'):.3f} | {b.median('wall'):.2f} | {gemm} | "
            f"{(b.static_bytes + b.transient_bytes) / mib:,.0f} | {b.transient_bytes / mib:,.0f} |"
        )
    bad = [f"{b.key}: {b.frozen_with_grad[:3]}" for b in benches if b.frozen_with_grad]
    lines.append("")
    lines.append(
        f"Target: every LoRA, prompt, prefix and adapter configuration ≤ {args.target} × full_ft "
        "(✗ marks a miss). Every frozen parameter had `requires_grad=False` and no `.grad` after "
        "the step: " + ("yes." if not bad else "NO: " + "; ".join(bad) + ".")
    )
    lines.append("")
    lines += reading(args, [b for b in benches if b.precision == "fp32"])
    lines += precision_reading(args, benches)
    lines += [
        "## Where the time goes",
        "",
        "Share of the self CPU time of the profiled warm-up step by kind of operator (profiler "
        "timings are wall-clock per operator, so they carry the machine's load; read them as "
        "proportions). `GEMM bwd` holds the activation gradients (and, for full_ft, the weight "
        "gradients too).",
        "",
        "| configuration | precision | " + " | ".join(CATEGORIES) + " |",
        "|---|---|" + "---:|" * len(CATEGORIES),
    ]
    for b in benches:
        cells = " | ".join(f"{100 * b.shares.get(c, 0):.0f} %" for c in CATEGORIES)
        lines.append(f"| {b.label} | {b.shown} | {cells} |")
    lines.append("")
    if args.top:
        lines += [f"### Top {args.top} operators by self CPU time", ""]
        for b in benches:
            if b.key in args.top_keys:
                lines += [f"**{b.label}, {b.shown}**", "", "| operator | phase | calls | share |",
                          "|---|---|---:|---:|"]  # fmt: skip
                lines += [
                    f"| `{n}` | {ph} | {c} | {100 * sh:.1f} % |" for n, ph, c, sh in b.top_ops
                ]
                lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--only", nargs="*", help="configuration keys (full_ft is always added)")
    ap.add_argument("--top", type=int, default=12, help="rows of each top-operator table")
    ap.add_argument("--top-keys", nargs="*", default=None,
                    help="configurations whose top operators are reported (default: full_ft and "
                    "the three slowest with a target)")  # fmt: skip
    ap.add_argument("--target", type=float, default=0.53)
    ap.add_argument("--kit-profile", default="corrected", choices=("corrected", "reference"))
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
                    help="precisions to time each configuration at (fp32 is always added: "
                    "the reference of the × fp32 column)")  # fmt: skip
    args = ap.parse_args(argv)
    args.precision = ["fp32", *dict.fromkeys(p for p in args.precision if p != "fp32")]
    torch.set_num_threads(args.threads)
    methods = set(pk.list_methods())
    chosen = [c for c in CONFIGS if c[2] in methods]
    if args.only:
        unknown = set(args.only) - {c[0] for c in CONFIGS}
        if unknown:
            raise SystemExit(f"unknown --only keys {sorted(unknown)}; valid: "
                             + ", ".join(c[0] for c in CONFIGS))  # fmt: skip
        chosen = [c for c in chosen if c[0] in {*args.only, "full_ft"}]
    start, load0 = time.perf_counter(), os.getloadavg()
    gen = torch.Generator().manual_seed(0)
    batch = {"input_values": torch.randn(BATCH, MAX_LENGTH, 128, generator=gen),
             "labels": torch.randint(0, CLASSES, (BATCH,), generator=gen)}  # fmt: skip
    benches = [Bench(*c, precision=p) for c in chosen for p in args.precision]
    built: dict[str, Bench] = {}
    for b in benches:
        if b.key in built:
            share(b, built[b.key])
        else:
            make(b, args.kit_profile)
            built[b.key] = b
            print(f"{time.perf_counter() - start:5.0f} s  built {b.key}: {b.trainable:,} "
                  "trainable", flush=True)  # fmt: skip
        b.scaler = grad_scaler(b.runs, CPU)
    for b in benches:  # round 0: warm-up, profiled
        profiled_step(b, batch, args.top)
        print(f"{time.perf_counter() - start:5.0f} s  warm-up {b.key} {b.shown}", flush=True)
    for r in range(args.repeats):
        shift = r * len(benches) // args.repeats  # each round starts elsewhere in the list
        for b in benches[shift:] + benches[:shift]:
            step(b, batch, timed=True)
        last = " ".join(f"{b.key}/{b.runs} {b.times['step'][-1]:.2f}" for b in benches)
        print(f"{time.perf_counter() - start:5.0f} s  round {r + 1}/{args.repeats}: load "
              f"{os.getloadavg()[0]:.2f}; step CPU s: {last}", flush=True)  # fmt: skip
    if args.top_keys is None:
        fp32 = [b for b in benches if b.target and b.precision == "fp32"]
        worst = sorted(fp32, key=lambda b: -b.median())[:3]
        args.top_keys = ["full_ft", *(b.key for b in worst)]
    text = report(args, benches, (load0, os.getloadavg()), time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
