"""Precise BatchNorm: running statistics recomputed as plain averages over training batches.

During fine-tuning a BatchNorm layer's running mean and variance are an
exponential average over iterations whose weights were still changing, so
they lag the final weights. detectron2's ``TEST.PRECISE_BN`` (on in MoCo's C4
VOC recipe, 200 batches) replaces them, after training and before evaluation,
by the mean over N batches of each batch's statistics, computed with the
final weights (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021):

    running_mean = (1 / N) sum_n mean_n        running_var = (1 / N) sum_n var_n

where ``mean_n`` and ``var_n`` (unbiased) are what the layer normalised batch
n with. Under SyncBatchNorm the batch statistics are those of all processes
together. Layers without running statistics and frozen ones (FrozenBatchNorm)
are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm (and SyncBatchNorm) of ``model`` that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]) -> int:
    """Sets each BatchNorm's running mean and variance to their average over ``batches``.

    Args:
        model: put in training mode for the passes (BatchNorm then normalises
            with each batch's statistics), its mode restored afterwards.
        batches: what ``forward`` takes, one item per pass.
        forward: runs ``model`` on one batch (a detector in training mode needs its targets).

    Returns:
        The number of batches averaged (0: there is no BatchNorm layer, nothing was run).

    Raises:
        ValueError: ``batches`` is empty while there are layers to update.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in layers]
    means = [torch.zeros_like(bn.running_mean) for bn in layers]
    variances = [torch.zeros_like(bn.running_var) for bn in layers]
    for bn in layers:
        bn.momentum = 1.0  # the running statistics become those of the last batch
    model.train()
    n = 0
    try:
        for batch in batches:
            forward(model, batch)
            n += 1
            for bn, mean, var in zip(layers, means, variances):
                mean += (bn.running_mean - mean) / n  # running average over the batches so far
                var += (bn.running_var - var) / n
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        model.train(was_training)
    if n == 0:
        raise ValueError("precise BN needs at least one batch")
    for bn, mean, var in zip(layers, means, variances):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return n
