"""Training loop: ``fit`` / ``evaluate``, best-validation selection, schedule, timing and memory.

Defaults = the PETL_AST recipe (spec ``training.md`` §1.4): AdamW(0.9/0.98, eps 1e-6, wd 0.1) on
the trainable parameters, cosine from the method's reference LR to 0 stepped after every batch.
``optimizer='adam'`` is the music recipe's Adam with PyTorch's betas (0.9, 0.999) and eps 1e-8
(§2.2) unless ``betas`` / ``eps`` are given.

>>> cfg = build(TrainConfig, {"epochs": 5, "progress": False})
>>> result = fit(model, make_loaders(model, splits, cfg), cfg)
>>> result.test["accuracy"], result.history[-1]["val_loss"]
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import ConfigError, build, check_profile, option
from ..methods import get_method
from ..model.checkpointing import set_activation_checkpointing
from . import distributed
from .metrics import compute_metrics, evaluate, forward_batch, loss_fn, primary_metric
from .precision import grad_scaler, resolve_precision

# betas and eps of each optimiser's recipe, used where TrainConfig leaves them None
OPTIMIZER_DEFAULTS = {
    "adamw": {"betas": (0.9, 0.98), "eps": 1e-6},  # PETL_AST (training.md §1.4)
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8},  # music PETL: torch.optim.Adam's (§2.2)
}


@dataclass(frozen=True)
class TrainConfig:
    """Training options; build with ``config.build(TrainConfig, values, profile)``."""

    epochs: int = 10
    batch_size: int = 32  # read by make_loaders; fit takes its loaders as given
    lr: float | None = None  # None: the method's reference LR
    head_lr: float | None = None  # None: lr (the head is its own param group)
    optimizer: Literal["adamw", "adam"] = "adamw"  # 'adam': the music code
    weight_decay: float = 0.1
    # None: the recipe of the chosen optimiser (OPTIMIZER_DEFAULTS): AdamW (0.9, 0.98), 1e-6 as
    # PETL_AST (training.md §1.4); Adam PyTorch's (0.9, 0.999), 1e-8 as the music code (§2.2)
    betas: tuple[float, ...] | None = None
    eps: float | None = None
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine over every batch of every epoch
    min_lr: float = 0.0  # where the cosine ends
    warmup_steps: int = 0  # else lr × min(1, (step + 1) / warmup_steps), as the music code
    # R19: 'last' tests the last epoch (reference); 'best_val' a deep copy of the best-val weights
    select: Literal["last", "best_val"] = option("last", "best_val")
    seed: int = 10
    deterministic: bool = option(False, True)  # R33: False keeps cudnn.benchmark (reference)
    device: str = "auto"  # 'auto': cuda if available, else cpu
    # autocast of the forward on CPU and CUDA alike (training.precision); 'auto': bf16 where the
    # hardware multiplies bf16 natively, else fp32. fp32 under both profiles: PETL_AST's own;
    # 'auto' is opt-in (benchmarks/results/precision_accuracy.md: bf16 on the quickstart)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # recompute each transformer block in backward instead of keeping its activations
    # (model.checkpointing): less memory on long inputs, one more block forward per step; the
    # loss and gradients are those of a plain step, so it is no quirk and both profiles share it
    activation_checkpointing: bool = False
    grad_clip: float | None = None  # max global gradient norm
    wd_exclude_norm_bias: bool = False  # R29: True = no decay on 1-d tensors (biases, norms)
    progress: bool = True  # tqdm bars
    # segment protocol of the music tasks (data.segments), lengths in samples at the extractor's
    # rate, read by make_loaders: a random train crop, val/test segments (None: whole clips)
    train_crop: int | None = None
    eval_segment: int | None = None
    val_crop: Literal["random", "segments"] = option("random", "segments")  # M12
    # clip-level mean of the segment probabilities: the task's own, or sigmoid for all (M13)
    segment_aggregate: Literal["mean_prob", "mean_sigmoid"] = option("mean_sigmoid", "mean_prob")
    # tempo task (M17, a kit definition either way): CE vs normalised widened target | BCE
    tempo_loss: Literal["softmax_ce", "bce"] = option("bce", "softmax_ce")
    profile: str = "corrected"

    def __post_init__(self):
        check_profile(self.profile)
        for name, value in OPTIMIZER_DEFAULTS.get(self.optimizer, {}).items():
            if getattr(self, name) is None:  # the stored config says what ran
                object.__setattr__(self, name, value)
        for f in fields(self):  # direct construction: unset profile options take the profile's
            if getattr(self, f.name) is None and "profile" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["profile"][self.profile != "reference"])
        for name in ("epochs", "batch_size", "lr", "head_lr", "grad_clip", "train_crop",
                     "eval_segment"):  # fmt: skip
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected > 0")
        for name in ("weight_decay", "min_lr", "eps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"TrainConfig.betas = {self.betas!r}; expected two values in [0, 1)")


@dataclass
class FitResult:
    """What :func:`fit` returns; ``to_dict()`` is plain JSON."""

    history: list[dict] = field(default_factory=list)  # one row per epoch, see fit
    best_epoch: int | None = None  # 1-based epoch of the best val primary metric; None: no val
    selected_epoch: int | None = None  # the epoch whose weights the model now holds
    val: dict = field(default_factory=dict)  # val metrics at selected_epoch
    test: dict = field(default_factory=dict)  # what `select` reports
    test_last: dict = field(default_factory=dict)
    test_best_val: dict = field(default_factory=dict)  # {} without val or test
    select: str = "last"  # as applied ('best_val' falls back to 'last' without val, see notes)
    lr: float = 0.0
    head_lr: float = 0.0
    train_seconds: float = 0.0  # training phases only
    wall_seconds: float = 0.0  # the whole fit, evaluation included
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""  # 'cuda_max_allocated' (this fit) | 'process_peak_rss' (process)
    device: str = "cpu"
    precision: str = "fp32"  # as run ('auto' resolved on the device)
    processes: int = 1  # data-parallel processes (training.distributed); 1: this one alone
    examples_per_second: float = 0.0  # train examples (of every process) / train_seconds
    steps: int = 0  # optimiser steps
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, torch. ``deterministic``: deterministic algorithms (warn-only), no cuDNN
    benchmarking; False: the reference's ``cudnn.benchmark=True`` (R33), determinism off again
    (it is process-global: a deterministic run earlier in a notebook must not leak)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:  # cuBLAS reads this when its first handle is created
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def pick_device(name: str = "auto") -> torch.device:
    """``'auto'`` → ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device = {name!r} is not valid; use 'auto', 'cpu', 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return device


def resolve_lrs(model: nn.Module, cfg: TrainConfig) -> tuple[float, float]:
    """``(lr, head_lr)``: cfg.lr or the method's reference LR; cfg.head_lr or that lr."""
    lr = cfg.lr if cfg.lr is not None else get_method(model.method).lr
    return lr, cfg.head_lr if cfg.head_lr is not None else lr


def lr_factor(step: int, total_steps: int, cfg: TrainConfig, base_lr: float) -> float:
    """Multiplier of ``base_lr`` used by optimiser step ``step`` (0-based).

    cosine: ``(min_lr + ½ (base − min_lr)(1 + cos(π t / T))) / base`` for t < T, min_lr after;
    warm-up multiplies by ``min(1, (t + 1) / warmup_steps)`` (music code, spec §2.2).
    """
    factor = 1.0
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
        progress = min(step / max(total_steps, 1), 1.0)
        factor = floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * progress))
    if cfg.warmup_steps:
        factor *= min(1.0, (step + 1) / cfg.warmup_steps)
    return factor


def make_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int | None = None):
    """``(optimizer, LambdaLR scheduler)`` over the trainable parameters only.

    Param groups, named by their ``'name'`` key (empty ones dropped): ``'body'`` (lr) and
    ``'head'`` (head_lr), each with a ``'*_no_decay'`` twin when ``wd_exclude_norm_bias``.
    ``total_steps`` (batches per epoch × epochs) is required by the cosine schedule; step the
    scheduler after every batch.
    """
    lr, head_lr = resolve_lrs(model, cfg)
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = "head" if name.startswith("head.") else "body"
            key += "_no_decay" if cfg.wd_exclude_norm_bias and p.ndim <= 1 else ""
            groups.setdefault(key, []).append(p)
    if not groups:
        raise ValueError(f"model (method {getattr(model, 'method', '?')}) has no trainable tensor")
    if cfg.schedule == "cosine" and not total_steps:
        raise ValueError("make_optimizer: schedule='cosine' needs total_steps (batches × epochs)")
    param_groups = [
        {"name": key, "params": params, "lr": head_lr if key.startswith("head") else lr,
         "weight_decay": 0.0 if key.endswith("no_decay") else cfg.weight_decay}
        for key, params in sorted(groups.items())
    ]  # fmt: skip
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(param_groups, betas=tuple(cfg.betas), eps=cfg.eps)
    factors = [lambda t, b=g["lr"]: lr_factor(t, total_steps or 0, cfg, b) for g in param_groups]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factors)


def _snapshot(model) -> dict[str, torch.Tensor]:
    # clone: trainable_state_dict() aliases the live tensors (the reference's R19 bug)
    return {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_peak_rss"


def make_loaders(model, splits, cfg: TrainConfig, *, spec_augment=None, num_workers: int = 0):
    """``splits.loaders(...)`` with the model's own feature extractor, cfg.batch_size, seed and
    segment protocol (``train_crop``, ``eval_segment``, ``val_crop``)."""
    return splits.loaders(model.feature_extractor(), batch_size=cfg.batch_size, seed=cfg.seed,
                          spec_augment=spec_augment, num_workers=num_workers,
                          **segment_options(cfg))  # fmt: skip


def segment_options(cfg: TrainConfig) -> dict[str, Any]:
    """The ``DatasetSplits.loaders`` keywords of the segment protocol in ``cfg``."""
    return {"train_crop": cfg.train_crop, "eval_segment": cfg.eval_segment,
            "val_crop": cfg.val_crop}  # fmt: skip


def fit(model, loaders: dict[str, DataLoader], cfg: TrainConfig | None = None, *,
        on_epoch: Callable[[dict], Any] | None = None) -> FitResult:  # fmt: skip
    """Train ``model`` (a :class:`~petl_kit.model.PetlModel`) in place, then test it.

    Args:
        loaders: ``'train'`` and optionally ``'val'`` / ``'test'`` (batches of ``data.collate``).
            A reused train loader continues its shuffling generator: build fresh loaders for two
            bit-identical runs.
        cfg: :class:`TrainConfig` (None = corrected defaults).
        on_epoch: called with each history row as soon as its epoch ends (live plots).

    History row: ``epoch``, ``lr`` (first group's LR at the epoch's first step), ``train_loss``
    (mean batch loss), ``train_<primary metric>`` (running, over the epoch's train-mode outputs),
    ``val_loss`` and ``val_<metric>`` for every metric (with val), ``epoch_seconds`` (train + val).

    Data parallel (launched by ``torchrun`` or a sweep's ``devices: N``; see
    :mod:`.distributed`): each process trains on its share of every global batch of
    ``loaders['train']``, DDP averages the trainable gradients, process 0 evaluates; the result
    (``processes`` = N) is the same in every process.

    Selection: with val, a deep copy of ``trainable_state_dict()`` is kept at the best val primary
    metric (ties keep the earlier epoch). Test runs on the last weights and on that copy;
    ``cfg.select`` says which is reported and which weights the model keeps.
    """
    cfg = cfg or build(TrainConfig, {})
    if "train" not in loaders or set(loaders) - {"train", "val", "test"}:
        raise ValueError(f"fit: loaders must be 'train' [+ 'val', 'test']; got {sorted(loaders)}")
    seed_everything(cfg.seed, cfg.deterministic)
    device = distributed.setup(pick_device(cfg.device))  # this process's under torchrun
    task, metric = model.task, primary_metric(model.task)
    model.to(device)
    if cfg.activation_checkpointing:  # stays on: it acts only while autograd records
        set_activation_checkpointing(model, True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # more than one process: DDP's gradient all-reduce, this process's share of each batch
    trainer, sharded = distributed.wrap(model, device), distributed.world()[1] > 1
    train_loader, val_loader = distributed.shard_loader(loaders["train"]), loaders.get("val")
    opt, sched = make_optimizer(model, cfg, len(train_loader) * cfg.epochs)
    criterion, (lr, head_lr) = loss_fn(task, tempo_loss=cfg.tempo_loss), resolve_lrs(model, cfg)
    precision = resolve_precision(cfg.precision, device)
    scaler = grad_scaler(precision, device)  # fp16 only: scaled loss, unscaled before clipping
    scoring = {"precision": precision, "aggregate": cfg.segment_aggregate, "criterion": criterion}
    result = FitResult(select=cfg.select, device=str(device), lr=lr, head_lr=head_lr,
                       precision=precision, processes=distributed.world()[1])  # fmt: skip
    best_score, best_state, examples, start = -math.inf, None, 0, time.perf_counter()
    quiet = not cfg.progress or not distributed.is_main()  # one process draws the bars
    epochs = tqdm(range(1, cfg.epochs + 1), desc="epochs", disable=quiet)
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        losses, outs, targets = [], [], []
        bar = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=quiet)
        for batch in bar:
            logits, target = forward_batch(trainer, batch, device, precision)
            loss = criterion(logits, target)
            real, weight = distributed.share_weight(train_loader) if sharded else (len(logits), 1)
            # the global batch's mean loss, in every process (a NaN anywhere stops them all)
            step_loss = distributed.global_mean(loss, real, device) if sharded else loss.item()
            if not math.isfinite(step_loss):
                raise _nonfinite_loss(step_loss, batch, train_loader, epoch, result.steps, opt)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * weight if sharded else loss).backward()
            if cfg.grad_clip is not None:  # frozen tensors have no grad and are skipped
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            result.steps, examples = result.steps + 1, examples + real
            losses.append(step_loss)
            outs.append(logits.detach()[:real].cpu())
            targets.append(batch["labels"][:real].cpu())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        result.train_seconds += time.perf_counter() - t0
        row["train_loss"] = float(np.mean(losses))
        outs, targets = distributed.gather_cat(outs), distributed.gather_cat(targets)
        row[f"train_{metric}"] = compute_metrics(task, outs, targets)[metric]
        if val_loader is not None:  # process 0 evaluates, every process selects alike
            val = distributed.on_main(evaluate, model, val_loader, task, device, **scoring)
            row.update({f"val_{k}": v for k, v in val.items() if k not in ("n", "segments")})
            if val[metric] > best_score:  # strict: ties keep the earlier epoch
                best_score, best_state, result.best_epoch = val[metric], _snapshot(model), epoch
        row["epoch_seconds"] = time.perf_counter() - t0
        result.history.append(row)
        epochs.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k.endswith(("loss", metric))})
        if on_epoch is not None:
            on_epoch(dict(row))
    _test_and_select(model, loaders, scoring, cfg, result, best_state, device)
    result.wall_seconds = time.perf_counter() - start
    examples = int(distributed.all_sum([examples], device)[0]) if sharded else examples
    result.examples_per_second = examples / result.train_seconds if result.train_seconds else 0.0
    result.peak_memory_mb, result.peak_memory_kind = _peak_memory(device)
    return result


def batch_sources(loader: DataLoader, batch: dict, limit: int = 3) -> list[str]:
    """The files (or in-memory clip places) of the first ``limit`` items of ``batch``: its
    ``index`` [B] points into the clips of the loader's dataset (an ``AudioDataset``, or one
    wrapped by ``SegmentDataset`` / the probe cache)."""
    dataset, clips = loader.dataset, None
    for _ in range(4):  # AudioDataset.clips, SegmentDataset.base, probe cache _Pooled.src
        clips = getattr(dataset, "clips", None)
        if clips is not None:
            break
        dataset = getattr(dataset, "base", None) or getattr(dataset, "src", None)
    if clips is None or "index" not in batch:
        return []
    out = []
    for i in batch["index"][:limit].tolist():
        clip = clips[i]
        source = clip.source if isinstance(clip.source, (str, os.PathLike)) else None
        out.append(str(source) if source is not None else f"train[{i}] (in-memory array)")
    return out


def _nonfinite_loss(loss: float, batch, loader, epoch: int, step: int, opt) -> FloatingPointError:
    """The error of a NaN / Inf training loss: the step and the first files of its batch."""
    files = batch_sources(loader, batch)
    where = f"; first files of the batch: {', '.join(files)}" if files else ""
    return FloatingPointError(
        f"fit: loss is {loss} at epoch {epoch}, step {step}{where}. Check those clips "
        f"(petl_kit.data.load_audio refuses NaN / Inf samples), else lower the lr (now "
        f"{opt.param_groups[0]['lr']:.3g}) or set grad_clip"
    )


def _test_and_select(model, loaders, scoring, cfg: TrainConfig, result: FitResult, best_state,
                     device):  # fmt: skip
    """Fill test_last / test_best_val / test / val / selected_epoch; load the selected weights."""
    task, test_loader, select = model.task, loaders.get("test"), cfg.select
    if test_loader is not None:
        result.test_last = distributed.on_main(evaluate, model, test_loader, task, device,
                                               **scoring)  # fmt: skip
    if best_state is None:
        if select == "best_val":
            why = "the val metric was never finite" if "val" in loaders else "no 'val' loader"
            result.notes.append(f"{why}: select='best_val' fell back to the last epoch")
        select = "last"
    elif test_loader is not None:
        last_state = _snapshot(model) if select == "last" else None
        model.load_state_dict(best_state, strict=False)
        result.test_best_val = distributed.on_main(evaluate, model, test_loader, task, device,
                                                   **scoring)  # fmt: skip
        if last_state is not None:
            model.load_state_dict(last_state, strict=False)
    elif select == "best_val":
        model.load_state_dict(best_state, strict=False)
    result.select = select
    result.selected_epoch = result.best_epoch if select == "best_val" else len(result.history)
    result.test = dict(result.test_best_val if select == "best_val" else result.test_last)
    row = result.history[result.selected_epoch - 1]
    result.val = {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
