"""The probe trainer the frozen-feature protocols share: standardise, seeded init, SGD with a cosine rate.

A probe is ``Standardise -> head``: each channel is shifted and scaled by
fixed statistics of the training features (a frozen, non-affine BatchNorm, as
in MAE's linear probe), so one learning rate suits any backbone; the head is
a linear map (``nn.Linear`` on pooled features, a ``1 x 1`` ``nn.Conv2d`` on
feature maps). The seed fixes the head's initialisation and the batch order,
both drawn from one generator in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from densecl.schedules import cosine_lr

# the loss of one batch of sample indices, or None when the batch has nothing to learn from
BatchLoss = Callable[[nn.Module, torch.Tensor], "torch.Tensor | None"]


class Standardise(nn.Module):
    """``(x - mean) / std`` per channel; channels are dimension 1 (``N x C`` or ``N x C x h x w``)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)  # C
        self.register_buffer("std", std)  # C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.ndim - 2)  # C, or C x 1 x 1 for maps
        return (x - self.mean.view(shape)) / self.std.view(shape)


def train_probe(
    head: nn.Linear | nn.Conv2d,
    mean: torch.Tensor,
    std: torch.Tensor,
    n: int,
    batch_loss: BatchLoss,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> nn.Sequential:
    """Fits ``Standardise(mean, std) -> head`` and returns it in eval mode.

    The head's weight is drawn uniformly from ``+-1/sqrt(C_in)`` and its bias
    zeroed; then ``epochs`` passes over ``n`` samples in seeded random batches,
    SGD with momentum 0.9 and the cosine rate of
    :func:`~densecl.schedules.cosine_lr`, updated every batch.

    Args:
        head: the probe's only trained module (``C_in`` input channels).
        mean, std: ``C_in`` each, the training features' statistics.
        n: number of training samples; batches are index tensors into them.
        batch_loss: ``(probe, indices) -> loss`` (a mean over the batch), or
            ``None`` to skip the update (the step still counts).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bound = 1 / math.sqrt(head.weight[0].numel())  # C_in for Linear and for a 1 x 1 conv
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.zero_()
    probe = nn.Sequential(Standardise(mean, std), head).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    total = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total, lr)
            loss = batch_loss(probe, idx)
            if loss is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            step += 1
    return probe.eval()
