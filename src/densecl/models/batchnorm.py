"""Batch norm over groups of images: shuffle-BN's statistics in one process.

The authors pre-train on 8 GPUs with 32 images each: every BatchNorm
normalises 32 images, and shuffle-BN hands each key to another GPU's group
than its query (MoCo, Sec. 3.3). :class:`GroupedBatchNorm2d` gives one process
the same statistics: a batch of ``G x N`` images is normalised as ``G``
groups of ``N`` consecutive images, group ``g`` being what rank ``g`` of a
``G``-GPU run would hold. :class:`densecl.DenseCL` shuffles the key batch
across groups, so one GPU with batch 256 and groups of 32 trains as the
authors' eight did (tested against 4 gloo processes in float64).

Running statistics (what evaluation and export use): each group updates its
own copy of the running mean and variance exactly as ``nn.BatchNorm2d`` does,
and the layer keeps the mean of the copies. That is the mean of what the ``G``
GPUs of a distributed run would hold; the authors' checkpoints keep GPU 0's,
an estimate of the same quantity with more noise. In eval mode the layer is a
plain ``BatchNorm2d``; the state dict keys are ``BatchNorm2d``'s.

Why a loop over groups and not MoCo's SplitBatchNorm reshape
(``x.view(-1, C * G, H, W)``): that reshape is free only for NCHW memory. With
channels_last (the default, faster on CPUs and GPUs) no view puts a group
index next to the channels, so it costs two transposing copies per layer
(``benchmarks/step_speed.py`` times both: settings ``+gN`` and ``+splitN``). Here each group is a contiguous
slab of the batch in either layout, normalised in place into a slab of the
output: no copies, ``G`` calls of torch's own kernel forward and backward.
"""

from __future__ import annotations

import torch
from torch import nn

_aten = torch.ops.aten


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in training, normalises each group of ``group_size`` consecutive images on its own.

    Args:
        num_features: channels ``C``.
        group_size: images per group ``N``; the batch must be a multiple of it.
            A batch of at most ``N`` images is one group: plain batch norm.
    """

    def __init__(self, num_features: int, group_size: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> the same; ``B / group_size`` groups in training, running statistics in eval."""
        if not self.training or x.shape[0] <= self.group_size:
            return super().forward(x)
        if x.shape[0] % self.group_size:
            raise ValueError(f"a batch of {x.shape[0]} images does not split into groups of {self.group_size}")
        groups = x.shape[0] // self.group_size
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return _GroupedBatchNorm.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, groups, factor, self.eps
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


class _GroupedBatchNorm(torch.autograd.Function):
    """Batch norm of ``groups`` contiguous slabs of the batch, each into its slab of the output (no concatenation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, groups: int, momentum: float, eps: float):
        y = torch.empty_like(x)  # keeps x's memory format; a slab of it is contiguous in that format
        stat_dtype = torch.promote_types(x.dtype, torch.float32)  # float32 for half inputs, as torch's kernels keep it
        mean = x.new_empty((groups, x.shape[1]), dtype=stat_dtype)  # G x C, per group
        invstd = torch.empty_like(mean)
        running = (running_mean.expand(groups, -1).clone(), running_var.expand(groups, -1).clone())  # G x C each
        for g, (xs, ys) in enumerate(zip(x.chunk(groups), y.chunk(groups))):
            _aten.native_batch_norm.out(
                xs,
                weight,
                bias,
                running[0][g],
                running[1][g],
                True,
                momentum,
                eps,
                out=ys,
                save_mean=mean[g],
                save_invstd=invstd[g],
            )
        running_mean.copy_(running[0].mean(0))  # the mean of the groups' running statistics
        running_var.copy_(running[1].mean(0))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.groups, ctx.eps = groups, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        dy = dy.contiguous(memory_format=fmt)
        dx = torch.empty_like(x)
        d_weight = weight.new_empty((ctx.groups, weight.shape[0]))  # G x C: summed over groups below
        d_bias = torch.empty_like(d_weight)
        for g, (dys, xs, dxs) in enumerate(zip(dy.chunk(ctx.groups), x.chunk(ctx.groups), dx.chunk(ctx.groups))):
            _aten.native_batch_norm_backward.out(
                dys,
                xs,
                weight,
                None,
                None,
                mean[g],
                invstd[g],
                True,
                ctx.eps,
                [True, True, True],
                out0=dxs,
                out1=d_weight[g],
                out2=d_bias[g],
            )
        return dx, d_weight.sum(0), d_bias.sum(0), None, None, None, None, None


def group_batch_norms(module: nn.Module, group_size: int) -> nn.Module:
    """Replaces every ``nn.BatchNorm2d`` in ``module`` by a :class:`GroupedBatchNorm2d` sharing its tensors.

    Parameters and buffers are the same objects, so the state dict (keys and
    values) is unchanged. Returns ``module`` (or the replacement if ``module``
    is itself a batch norm).
    """
    if type(module) is nn.BatchNorm2d:
        if not (module.affine and module.track_running_stats):
            raise ValueError("grouped batch norm needs affine batch norms that track running statistics")
        grouped = GroupedBatchNorm2d(module.num_features, group_size, module.eps, module.momentum)
        grouped.weight, grouped.bias = module.weight, module.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(grouped, name, getattr(module, name))
        grouped.train(module.training)
        return grouped
    for name, child in module.named_children():
        setattr(module, name, group_batch_norms(child, group_size))
    return module
