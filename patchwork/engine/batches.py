"""Deterministic, resumable, shardable batch streams.

Batch ``k`` of a run is a pure function of ``(seed, k, rank, world_size)``: epoch ``e``
shuffles the dataset with a generator seeded by ``(seed, e)``, every rank takes its own
stride of that order, and the dataset itself draws each item's augmentation from
``(seed, epoch, item)``. A run killed after step ``k`` therefore resumes by asking for the
stream from ``k``; no loader state needs saving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class ResumableBatches:
    """Infinite batches of a ``patchwork.data`` dataset (one with ``collate`` and ``set_epoch``).

    Args:
        dataset: the dataset.
        batch_size: samples per batch on this rank.
        seed: shuffling seed.
        rank, world_size: this process's share (each rank sees disjoint samples of an epoch).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_workers = int(num_workers)
        self.batches_per_epoch = len(dataset) // (self.batch_size * self.world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"dataset of {len(dataset)} samples is smaller than one batch of {self.batch_size} "
                f"on each of {self.world_size} rank(s)"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches (lists of dataset indices) of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        mine = order[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]
        return mine.view(self.batches_per_epoch, self.batch_size).tolist()

    def stream(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Collated batches from global batch index ``start`` on, forever."""
        epoch, offset = divmod(start, self.batches_per_epoch)
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.epoch_batches(epoch)[offset:],
                collate_fn=self.dataset.collate,
                num_workers=self.num_workers,
                # Its own generator: a loader draws its workers' base seed from it, which
                # would otherwise shift the global RNG when a resumed run makes a new loader.
                generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch),
            )
            yield from loader
            epoch, offset = epoch + 1, 0
