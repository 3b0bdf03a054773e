"""Training data plumbing that makes a run resumable to the exact batch.

- ``ResumableSampler`` is a ``DistributedSampler`` (same shuffling and rank sharding, seeded per epoch) that can
  start part-way through an epoch, so a resumed run sees exactly the batches the interrupted one would have seen.
- ``EpochSeeded`` fixes the dataset's augmentation randomness to (seed, epoch, index): the same sample in the same
  epoch is augmented identically whether the run was interrupted or not, and in any DataLoader worker.
- ``MicroBatches`` streams micro-batches across epoch boundaries from a global micro-batch counter.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose iteration skips the first ``start`` indices of this rank's share of the epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class EpochSeeded(Dataset):
    """Wraps the project's SegmentationDataset so its augmentation generator depends on (seed, epoch, index) only.

    SegmentationDataset seeds its numpy generator with [seed, index, call count]; the call count differs between an
    interrupted-and-resumed run and an uninterrupted one, so this wrapper sets it from the epoch before each call.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if hasattr(self.dataset, "_calls"):
            self.dataset._calls = self.epoch  # _rng() increments it first: generator [seed, index, epoch + 1]
        return self.dataset[index]


class MicroBatches:
    """Endless micro-batches: micro-batch ``k`` of the run is batch ``k % per_epoch`` of epoch ``k // per_epoch``."""

    def __init__(self, dataset: EpochSeeded, batch_size: int, rank: int, world: int, seed: int, num_workers: int,
                 collate_fn: Callable, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = ResumableSampler(dataset, world, rank, shuffle=True, seed=seed)
        self.per_epoch = self.sampler.num_samples // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"training set: {len(dataset)} frames give no full batch of {batch_size} per process "
                             f"({world} process(es)); lower batch_size or add frames")
        self.seed, self.rank, self.num_workers = seed, rank, num_workers
        self.collate_fn, self.pin_memory = collate_fn, pin_memory

    def loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * self.batch_size
        self.dataset.set_epoch(epoch)
        # a private generator: creating the iterator never draws from the global RNG (which resume restores)
        gen = torch.Generator().manual_seed(self.seed * 1000003 + epoch * 101 + self.rank)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=self.num_workers, collate_fn=self.collate_fn, generator=gen,
                          pin_memory=self.pin_memory)

    def stream(self, start_micro: int) -> Iterator[tuple[int, Any]]:
        """(epoch, batch) pairs from global micro-batch ``start_micro`` on."""
        k = start_micro
        while True:
            epoch, offset = divmod(k, self.per_epoch)
            for batch in self.loader(epoch, offset):
                yield epoch, batch
                k += 1
