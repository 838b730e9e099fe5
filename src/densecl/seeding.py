"""What makes a run repeatable: the global seeds, and one seed per sample that never repeats.

Pre-training and every fine-tuning protocol call :func:`seed_everything` once
before building their model, with the same seed on every rank (identical
initial weights; DDP also broadcasts rank 0's). Draws made during training
from the global generators (a detector's random image size, its anchor and
RoI sampling) then take :func:`rank_seed`, so ranks draw apart. Each sample's augmentation is
drawn from :func:`sample_seed` of ``(seed, epoch, position)``, so a resumed
run sees exactly the views an uninterrupted one would.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_MASK = (1 << 64) - 1


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels.

    Without ``deterministic`` cuDNN picks the fastest convolution per shape
    (``benchmark``), which may differ from run to run in the last bits.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s training-time draws: ``seed + rank``, as detectron2 seeds its ranks apart.

    Rank 0 keeps ``seed``, so a one-process run draws what it drew before.
    """
    return seed + rank


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of ``epoch``'s order: a signed 64-bit integer.

    (Signed, so that it fits a long tensor on its way through a data loader;
    ``torch.manual_seed`` takes it.)

    ``seed``, ``epoch`` and ``position`` pass in turn through SplitMix64's
    finaliser, a bijection of 64-bit integers: within an epoch every position
    gets its own seed, and two epochs share one only if two 64-bit hashes
    differ by less than the data set's size (odds about n / 2**64 per pair of
    epochs). An affine formula such as ``(seed * a + epoch) * b + position``
    repeats as soon as ``position`` reaches ``b``.
    """
    h = 0
    for value in (seed, epoch, position):
        h = _splitmix64((h ^ value) & _MASK)
    return h - (1 << 64) if h >= 1 << 63 else h


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)
