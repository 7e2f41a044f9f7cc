"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

``torchrun --nproc_per_node=N scripts/train.py ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them. Without ``torchrun`` (or with one process) the returned context is a no-op, so
the training code is the same in both cases::

    ctx = init_distributed()
    model = ctx.wrap_ddp(model)               # DDP when world_size > 1, moved to ctx.device
    clips = ctx.shard(all_clip_indices)       # each rank streams different videos
    ...
    if ctx.is_main: manager.save(...)         # only rank 0 writes logs and checkpoints
    ctx.destroy()

What every rank must keep identical: the model parameters (DDP broadcasts rank 0's at wrap
time and all-reduces gradients at every backward) and the *number* of backward passes (a rank
that stops early leaves the others waiting in the all-reduce), hence the equal-length
:meth:`DistributedContext.shard`. Module buffers (BatchNorm statistics) are broadcast from
rank 0 at each forward by default; the Patchwork cell memories live in ``StreamState``, not
in buffers, so each rank keeps its own streams' memories.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

T = TypeVar("T")


def unwrap_model(module: nn.Module) -> nn.Module:
    """The user's module inside DDP and/or ``torch.compile`` wrappers (the one to checkpoint)."""
    while True:
        if isinstance(module, DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):  # torch.compile
            module = module._orig_mod
        else:
            return module


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this machine; selects the GPU.
        device: ``cuda:<local_rank>`` when CUDA is used, else ``cpu``.
        backend: ``"nccl"`` or ``"gloo"`` when a process group is initialised, else ``None``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes logs and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank arrives here (no-op in a single process)."""
        if self.is_distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def all_reduce_mean(self, value: Tensor | float) -> Tensor:
        """Mean of ``value`` over ranks, for logging and for checks every rank must agree on.

        Args:
            value: a tensor of any shape (same shape on every rank) or a Python number.
        Returns:
            A new detached floating tensor on ``value``'s device (on ``self.device`` for a
            number); not differentiable. In a single process: a copy of ``value``.
        """
        tensor = torch.as_tensor(value, device=self.device if not isinstance(value, Tensor) else None).detach()
        source_device = tensor.device
        if not tensor.is_floating_point():
            tensor = tensor.double()
        # NCCL reduces only CUDA tensors, gloo handles CPU ones; .to copies when devices differ.
        work = tensor.to(self.device, copy=True)
        if self.is_distributed:
            dist.all_reduce(work, op=dist.ReduceOp.SUM)
            work /= self.world_size
        return work.to(source_device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects, e.g. RNG states)."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def shard(self, items: Sequence[T], drop_last: bool = False) -> list[T]:
        """This rank's share of ``items``: ``items[rank::world_size]`` after evening out the length.

        Every rank gets the same number of items so they run the same number of steps:
        ``drop_last=False`` pads by wrapping around to the start (as ``DistributedSampler``
        does), ``drop_last=True`` drops the tail. Order is kept; shuffle before sharding.

        Args:
            items: e.g. clip indices or video ids, the same sequence on every rank.
        Returns:
            ``ceil(n / world_size)`` items (``floor`` with ``drop_last``).
        """
        items = list(items)
        n = len(items)
        if self.world_size == 1 or n == 0:
            return items
        if drop_last:
            items = items[: n - n % self.world_size]
        else:
            total = -(-n // self.world_size) * self.world_size
            items = (items * (-(-total // n)))[:total]
        return items[self.rank :: self.world_size]

    def sampler(
        self, dataset: Dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> DistributedSampler:
        """A ``DistributedSampler`` for this rank (works with ``world_size == 1`` as well).

        Call ``sampler.set_epoch(epoch)`` at every epoch, or each epoch repeats the same order.
        """
        return DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )

    def wrap_ddp(self, module: nn.Module, **ddp_kwargs: Any) -> nn.Module:
        """Move ``module`` to ``device`` and wrap it in ``DistributedDataParallel`` when distributed.

        Args:
            module: the model; parameters with ``requires_grad=False`` (e.g. the frozen backbone
                of stage 2) are ignored by DDP.
            ddp_kwargs: passed to ``DistributedDataParallel`` (e.g. ``find_unused_parameters``).
        Returns:
            The DDP wrapper, or ``module`` itself in a single process. Use :func:`unwrap_model`
            to reach the original module (checkpoints, attribute access).
        """
        module = module.to(self.device)
        if not self.is_distributed:
            return module
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **ddp_kwargs)

    def destroy(self) -> None:
        """Tear the process group down (no-op when none was created here)."""
        if self.backend is not None and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"WORLD_SIZE > 1 but {name} is not set; start the job with torchrun")
    return int(value)


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistributedContext:
    """Join the ``torchrun`` process group described by the environment, or run alone.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default ``nccl`` when the device is CUDA, else ``gloo``.
        device: ``"cpu"`` forces CPU even where CUDA exists; default ``cuda:LOCAL_RANK`` when CUDA
            is available, else ``cpu``.
    Returns:
        A :class:`DistributedContext`; a single-process one (no process group) when
        ``WORLD_SIZE`` is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world_size > 1 else 0
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} needs {device} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible; start at most that many processes per node"
            )
        torch.cuda.set_device(device)
    if world_size <= 1:
        return DistributedContext(device=device)
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=dist.get_backend()
    )
