"""Mixed precision as a run parameter: ``precision = 'fp32' | 'bf16' | 'fp16' | 'auto'``.

- ``'fp32'``: no autocast; the default under both profiles. PETL_AST trained in fp32, the music
  paper's reference in bf16-mixed (spec ``training.md`` §2.3). ``'auto'`` stays opt-in: over
  three seeds of the quickstart, bf16 moved one method's test accuracy (Dense-MoA, -1.0 points)
  past its seed spread (``benchmarks/results/precision_accuracy.md``).
- ``'bf16'`` / ``'fp16'``: ``torch.autocast`` of the model's forward on the run's device, CPU and
  CUDA alike; the weights and the optimiser stay fp32. ``'fp16'`` also scales the loss
  (``torch.amp.GradScaler``) so small gradients do not underflow.
- ``'auto'``: ``'bf16'`` where the hardware has native bf16 matrix multiplies — a CUDA device
  that supports bf16, a CPU with AMX-BF16 or AVX-512-BF16 — else ``'fp32'``.

Logits leave the autocast region as fp32 (``forward_batch``), so losses and metrics are always
computed in fp32. :func:`resolve_precision` gives the precision that actually ran; the fit records
it (``FitResult.precision``), and with it the run's metrics and ledger.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..config import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo() -> str:
    """The text of ``/proc/cpuinfo`` ('' where there is none: not Linux, or unreadable)."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        return cpuinfo.read_text() if cpuinfo.is_file() else ""
    except OSError:
        return ""


def _cpuinfo_field(text: str, key: str) -> str:
    """The value of the first ``key : value`` line of ``/proc/cpuinfo`` text ('' if none)."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return ""


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX-512-BF16).

    Reads ``torch.backends.cpu.get_cpu_capability()`` (``'AMX...'`` / ``'..._BF16'``
    levels where torch reports them) and the flags of ``/proc/cpuinfo`` on Linux.
    """
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    flags = _cpuinfo_field(_cpuinfo(), "flags").split()
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def cpu_summary() -> dict:
    """What decides whether bf16 is fast on this CPU, for benchmark reports.

    Returns ``{'model', 'cores', 'capability', 'matrix_flags', 'native_bf16', 'auto'}``: the CPU
    model name ('' where ``/proc/cpuinfo`` does not give one), ``os.cpu_count()``, torch's
    vectorisation level (``torch.backends.cpu.get_cpu_capability()``), the AVX-512 / AMX / VNNI
    flags that ``/proc/cpuinfo`` lists (sorted), :func:`cpu_has_native_bf16`, and the
    precision that ``precision='auto'`` runs on the CPU.
    """
    text = _cpuinfo()
    flags = _cpuinfo_field(text, "flags").split()
    matrix = sorted({f for f in flags if f.startswith(("avx512", "amx", "avx_vnni"))})
    return {
        "model": _cpuinfo_field(text, "model name"),
        "cores": os.cpu_count(),
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "matrix_flags": matrix,
        "native_bf16": cpu_has_native_bf16(),
        "auto": resolve_precision("auto", torch.device("cpu")),
    }


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` has native bf16 matrix multiplies (see :func:`cpu_has_native_bf16`)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run on ``device`` uses: ``precision`` itself, or for ``'auto'``
    ``'bf16'`` where :func:`native_bf16`, else ``'fp32'``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision = {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved ``precision`` on ``device`` (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ConfigError(f"precision = {precision!r}; resolve 'auto' first (resolve_precision)")
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
