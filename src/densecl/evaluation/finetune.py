"""What the fine-tuning protocols share: batches split over ranks, DDP and SyncBN wrapping.

Every rank walks the same seeded stream of ``(image index, augmentation seed)``
pairs and takes its own slice of each global batch, so a run is reproducible
for a seed and world size, and the augmentation of a sample does not depend
on which data-loader worker draws it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from densecl import distributed
from densecl.errors import InputError, NonFiniteLossError


def per_rank_batch(global_batch: int) -> int:
    world = distributed.world_size()
    if global_batch % world:
        raise InputError(f"--batch-size {global_batch} is not divisible by the {world} processes; make it a multiple")
    return global_batch // world


class BatchStream:
    """``iters`` batches for this rank: lists of ``(index, sample_seed)`` for a Dataset.

    Indices follow seeded epoch permutations of ``range(n)``; sample seeds are
    drawn from the same generator, so they differ between epochs.
    Usable as a DataLoader ``batch_sampler``.
    """

    def __init__(self, n: int, global_batch: int, iters: int, seed: int) -> None:
        self.n, self.global_batch, self.iters, self.seed = n, global_batch, iters, seed
        self.per_rank = per_rank_batch(global_batch)
        self.rank = distributed.rank()

    def __len__(self) -> int:
        return self.iters

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, 7919])
        pool: list[tuple[int, int]] = []
        for _ in range(self.iters):
            while len(pool) < self.global_batch:
                order = rng.permutation(self.n)
                seeds = rng.integers(0, 2**31 - 1, size=self.n)
                pool.extend(zip(order.tolist(), seeds.tolist()))
            batch, pool = pool[: self.global_batch], pool[self.global_batch :]
            yield batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]


def prepare_model(model: nn.Module, device: str, sync_bn: bool) -> nn.Module:
    """Moves to ``device``; under torchrun converts BatchNorm to SyncBatchNorm (CUDA only) and wraps in DDP."""
    if distributed.world_size() > 1 and sync_bn:
        if device.startswith("cuda"):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif distributed.rank() == 0:
            print("densecl eval: warning: SyncBatchNorm needs CUDA; on CPU each process normalises its own batch", file=sys.stderr)
    model.to(device)
    if distributed.world_size() > 1:
        device_ids = [torch.device(device).index] if device.startswith("cuda") else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def check_finite(loss: torch.Tensor, protocol: str, step: int, advice: str) -> None:
    """Stops fine-tuning at the first NaN or infinite loss with one line for the user (the CLI exits with status 1)."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(f"{protocol}: loss is {value} at iteration {step}; {advice}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def seed_everything(seed: int) -> None:
    """Same initialisation on every rank (DDP also broadcasts rank 0's weights)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
