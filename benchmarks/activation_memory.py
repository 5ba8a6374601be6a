"""Benchmark: peak memory and time of one training step with and without activation checkpointing
(``TrainConfig.activation_checkpointing``, :mod:`petl_kit.model.checkpointing`) on long inputs.

Cases (random weights, corrected profile, the kit's AdamW, cross-entropy on a random batch):

* ``ast-1024``: AST base config at AudioSet length (``max_length`` 1,024 fbank frames: 1,214
  tokens), batch 2, LoRA (rank 8 on q and v).
* ``musicfm-30s``: MusicFM at its real size (1,024 wide) with ``encoder_depth`` 6 (the music
  reference's), one 30-s clip at 24 kHz (750 frames), the music adapter.

Each case runs in a fresh Python process, so nothing one case allocated is counted in another.
Memory on the CPU is the process's resident set, read from ``/proc/self/status``: the model,
its input and the optimiser are built, the high-water mark is reset (``/proc/self/clear_refs``
``5``), then one step (zero_grad, forward, loss, backward, ``opt.step()``) runs; "step peak" is
the high-water mark minus the resident set before the step: what the step itself needed
(activations kept for backward, gradients, the optimiser state, temporaries); "kept after
forward" is the resident set once the loss is computed minus that before the step: the
activations autograd holds for backward, which is what checkpointing cuts. (MusicFM's step peak
comes from its frozen conv front end on 30 s of mel frames, a transient before the blocks run,
so there the step peak barely moves while the kept activations fall.) Large allocations
are handed back to the system when freed (``MALLOC_MMAP_THRESHOLD_``), so the resident set follows
the live tensors. On CUDA the same script reports ``torch.cuda.max_memory_allocated``.
Time: the step's wall time and process CPU time (one intra-op thread unless ``--threads``); one
step per process, so the times include first-call costs and are indicative only.

    .venv/bin/python benchmarks/activation_memory.py --out benchmarks/results/activation_memory.md
    .venv/bin/python benchmarks/activation_memory.py --only ast-1024          # one case
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "ast-1024": dict(
        backbone="ast",
        backbone_config={"max_length": 1024},
        method="lora",
        method_config={"rank": 8},
        input=("fbank", 2, 1024),
    ),
    "musicfm-30s": dict(
        backbone="musicfm",
        encoder_depth=6,
        preset="music_adapter",  # pk.method_preset: the adapter method in the music layout
        input=("waveform", 1, 30 * 24_000),
    ),
}
MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(name: str, checkpointed: bool, device: str) -> dict:
    """One step of case ``name`` in this process; returns the measurements."""
    import torch

    import petl_kit as pk
    from petl_kit.model.checkpointing import set_activation_checkpointing
    from petl_kit.training.train import TrainConfig, make_optimizer

    spec = dict(CASES[name])
    kind, batch, length = spec.pop("input")
    if "preset" in spec:
        spec.update(pk.method_preset(spec.pop("preset")))
    torch.manual_seed(0)
    model = pk.build_model(num_classes=10, **spec).to(device).train()
    set_activation_checkpointing(model, checkpointed)
    g = torch.Generator().manual_seed(0)
    shape = (batch, length, 128) if kind == "fbank" else (batch, length)
    x = torch.randn(*shape, generator=g).to(device)
    y = torch.arange(batch, device=device) % 10
    opt, _ = make_optimizer(model, pk.config.build(TrainConfig, {"schedule": "constant"}), 1)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM)
        before = _status_kib("VmRSS") * 1024
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    kept = (torch.cuda.memory_allocated() if cuda else _status_kib("VmRSS") * 1024) - before
    loss.backward()
    opt.step()
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    return {
        "case": name,
        "checkpointed": checkpointed,
        "loss": float(loss),
        "before_mib": before / MIB,
        "peak_mib": peak / MIB,
        "step_peak_mib": (peak - before) / MIB,
        "kept_mib": kept / MIB,
        "wall_s": wall,
        "cpu_s": cpu,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params": sum(p.numel() for p in model.parameters()),
    }


def machine(device: str) -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device}  # fmt: skip
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def table(rows: list[dict], info: dict, threads: int) -> str:
    gpu = f" ({info['gpu']})" if "gpu" in info else ""
    out = [
        "# Activation checkpointing: peak memory of one training step",
        "",
        "Written by `benchmarks/activation_memory.py` (its docstring says how memory is read). "
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"Python {info['python']}, device {info['device']}{gpu}, "
        f"{threads} intra-op thread(s). One step per fresh process; times include first-call "
        "costs and the load of a shared machine.",
        "",
        "| case | checkpointing | model + input + optimiser MiB | kept after forward MiB "
        "| step peak MiB | total peak MiB | step wall s | step CPU s | loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['case']} | {'on' if r['checkpointed'] else 'off'} | {r['before_mib']:,.0f} | "
            f"{r['kept_mib']:,.0f} | {r['step_peak_mib']:,.0f} | {r['peak_mib']:,.0f} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['loss']:.6f} |"
        )
    out += [
        "",
        "| case | kept after forward, on / off | step peak, on / off | step CPU time, on / off |",
        "|---|---:|---:|---:|",
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        on = next((r for r in rows if r["case"] == case and r["checkpointed"]), None)
        off = next((r for r in rows if r["case"] == case and not r["checkpointed"]), None)
        if on and off:
            out.append(
                f"| {case} | {on['kept_mib'] / off['kept_mib']:.2f} | "
                f"{on['step_peak_mib'] / off['step_peak_mib']:.2f} | "
                f"{on['cpu_s'] / off['cpu_s']:.2f} |"
            )
    out += [
        "",
        "*Kept after forward*: the activations autograd holds for backward (resident set once the "
        "loss is computed, minus that before the step): what checkpointing cuts, to about one "
        "block input per block. *Step peak*: the high-water mark of the whole step above the "
        "resident set before it. The losses are identical with and without. MusicFM's step peak "
        "is its frozen conv front end (512 channels over 30 s of mel frames), a transient before "
        "the first block runs, so it does not move; the blocks' kept activations do.",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # child process: one case
    parser.add_argument("--checkpointed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.case, args.checkpointed, args.device)))
        return
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
        "OMP_NUM_THREADS": str(args.threads),
    }
    rows = []
    for case in args.only:
        for checkpointed in (False, True):
            cmd = [sys.executable, __file__, "--case", case, "--device", args.device]
            cmd += ["--threads", str(args.threads)] + ["--checkpointed"] * checkpointed
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{case} (checkpointing {checkpointed}) failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            state = "on " if checkpointed else "off"
            print(f"{case:12s} ckpt={state} step peak {r['step_peak_mib']:8,.0f} MiB  "
                  f"wall {r['wall_s']:6.1f} s", flush=True)  # fmt: skip
    text = table(rows, machine(args.device), args.threads)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
