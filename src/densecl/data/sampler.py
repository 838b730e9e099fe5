"""Which images each rank sees, in which order, with which augmentation seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from densecl.seeding import sample_seed


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles once per epoch, shards the global batch over ranks, drops the last partial batch.

    Yields ``(index, seed)`` pairs: the seed is a pure function of ``(seed,
    epoch, position)``, so the augmentation of every sample is reproducible.
    ``start_batch`` skips the batches a resumed run has already trained on.

    Args:
        length: images in the data set.
        batch_size: per-rank batch size ``B``; the global batch is ``B * world_size``.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
    ) -> None:
        self.length, self.batch_size, self.rank, self.world_size = length, batch_size, rank, world_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.length, generator=g).tolist()
        global_batch = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch):
            start = b * global_batch + self.rank * self.batch_size
            for position in range(start, start + self.batch_size):
                yield perm[position], sample_seed(self.seed, self.epoch, position)
