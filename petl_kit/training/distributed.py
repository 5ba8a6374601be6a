"""Data-parallel training: one process per device, joined by ``torch.distributed``.

Launch the same run once per device — ``torchrun --nproc-per-node N -m petl_kit run NOTEBOOK
--inprocess ...``, or a sweep's Slurm job with ``devices: N`` (``submitit`` starts one task per
device and :func:`export_submitit_env` turns its Slurm variables into torchrun's) — and
:func:`setup` joins the processes (``gloo`` on CPUs, ``nccl`` on CUDA devices).

What :func:`~petl_kit.training.train.fit` then does differently:

- every process holds the whole model; ``DistributedDataParallel`` all-reduces the gradients of
  the trainable tensors only (a frozen backbone has ``requires_grad=False``, which DDP leaves out);
- the run's ``batch_size`` is the **global** batch: each global batch of the single-process train
  loader (same sampler, same seeded generator) is split across the processes, process ``r``
  taking items ``r, r + N, r + 2N, ...`` (:class:`ShardedBatchSampler`), and each process's loss
  is weighted by its share of the batch, so the averaged gradient is the gradient of the global
  batch's mean loss: the same steps as one process with that batch (up to float summation order;
  dropout, SpecAugment and batch-norm statistics are drawn per process);
- validation and test run on process 0, which broadcasts the metrics: every process selects the
  same epoch, and only process 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections import deque
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from ..config import ConfigError

# torchrun's variables (also what export_submitit_env writes)
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True in process 0, the one that writes files: of the process group, else of the
    launcher's ``RANK`` (before joining), else this lone process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def launched() -> int:
    """The world size the launcher asked for (``WORLD_SIZE``; 1 when not launched by one)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError as err:
        raise ConfigError(f"WORLD_SIZE = {text!r} in the environment; expected an int") from err
    if size < 1:
        raise ConfigError(f"WORLD_SIZE = {size} in the environment; expected >= 1")
    return size


def setup(device: torch.device) -> torch.device:
    """Join the launcher's process group (once) and return this process's device.

    Without a launcher (``WORLD_SIZE`` unset or 1) nothing happens and ``device`` comes back.
    On CUDA each process takes ``cuda:LOCAL_RANK``; CPU processes share the CPU.
    """
    if launched() == 1:
        return device
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE = {os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                          "not set; launch with torchrun (or a sweep's devices: N)")  # fmt: skip
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        # long enough for process 0 to evaluate a large test set while the others wait
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return device


def export_submitit_env() -> None:
    """In a task of a multi-task submitit job: torchrun's variables from the job's own
    (``submitit.helpers.TorchDistributedEnvironment``: rank, world size, the first node's
    address and a port derived from the job id)."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Process 0 runs the block first, the others after it: what it writes once (the feature
    cache, a built-in checkpoint) the others then read instead of building it again."""
    rank, size = world()
    if size > 1 and rank != 0:
        dist.barrier()
    yield
    if size > 1 and rank == 0:
        dist.barrier()


def broadcast(value):
    """Process 0's ``value`` (any picklable object) in every process."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run by process 0 only; its result in every process."""
    return broadcast(fn(*args, **kwargs) if is_main() else None)


def gather(value) -> list:
    """Every process's ``value``, in rank order (``[value]`` without a process group)."""
    if world()[1] == 1:
        return [value]
    out = [None] * world()[1]
    dist.all_gather_object(out, value)
    return out


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """The element-wise sum over the processes of a few numbers (one all-reduce)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def global_mean(loss: torch.Tensor, real: int, device: torch.device) -> float:
    """The mean loss over the global batch: each process's mean ``loss`` × its ``real`` items,
    summed over the processes (one all-reduce), over all of them."""
    local = loss.item() * real if real else 0.0  # a stand-in item (weight 0) counts nothing
    total, items = all_sum([local, real], device)
    return total / items


def gather_cat(pieces: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` of every process's ``pieces`` (rank order), this process's alone without
    a process group: ``[sum of rows, ...]``."""
    return torch.cat([torch.cat(p) for p in gather(pieces)])


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of each batch of ``batch_sampler`` (the single-process sampler).

    Process ``rank`` of ``size`` takes items ``rank, rank + size, ...`` of every global batch, so
    the shares of one step together are exactly that global batch. A process whose share is empty
    (a last batch shorter than ``size``) gets the batch's first item as a stand-in of weight 0:
    every process must run the step. :attr:`shares` queues ``(real items, global items)`` per
    yielded batch for the training loop (the loader draws indices in this process, in order).

    Shapes: yields ``list[int]`` of length ⌈len(batch) / size⌉ or ⌊len(batch) / size⌋.
    """

    def __init__(self, batch_sampler, rank: int, size: int):
        self.batch_sampler, self.rank, self.size = batch_sampler, rank, size
        self.shares: deque[tuple[int, int]] = deque()

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        self.shares.clear()
        for batch in self.batch_sampler:
            share = list(batch)[self.rank :: self.size]
            self.shares.append((len(share), len(batch)))
            yield share or list(batch)[:1]


def shard_loader(loader: DataLoader) -> DataLoader:
    """``loader`` split across the process group (:class:`ShardedBatchSampler`); the same
    loader without one. Reuses ``loader``'s batch sampler and generator, so the global batches
    follow the single-process order."""
    rank, size = world()
    if size == 1:
        return loader
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatchSampler(loader.batch_sampler, rank, size),
        collate_fn=loader.collate_fn,
        num_workers=workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        **({"persistent_workers": loader.persistent_workers,
            "prefetch_factor": loader.prefetch_factor} if workers else {}),
    )  # fmt: skip


def share_weight(loader: DataLoader) -> tuple[int, float]:
    """``(real items, loss weight)`` of the batch just drawn from a :func:`shard_loader`: the
    weight ``real × size / global`` makes DDP's mean of the processes' gradients the gradient of
    the global batch's mean loss (0 for a stand-in item). Only for a sharded loader (more than
    one process); a lone process's weight is 1."""
    real, total = loader.batch_sampler.shares.popleft()
    return real, real * world()[1] / total


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` (the gradient all-reduce); itself alone.

    ``static_graph``: every step has the same graph, so DDP learns in the first step which
    trainable tensors sit outside it (a method's unused branch) instead of waiting for their
    gradients for ever, and it holds with activation checkpointing's recomputation.
    """
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, static_graph=True)
