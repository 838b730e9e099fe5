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

Which layers are grouped: every batch norm class a backbone uses has an entry
in :func:`groupers` (torch's ``BatchNorm2d``; timm's ``BatchNormAct2d``, whose
dropout and activation follow the grouped normalisation as in timm's
forward). Any other batch norm (a subclass with a forward of its own,
``SyncBatchNorm``, 1-d or 3-d) stops :func:`group_batch_norms` with one line
naming it: never left normalising the whole batch while the run says groups.
A backbone without batch norm (ConvNeXt's LayerNorm) has nothing to group and
its keys need no shuffle (:func:`has_batch_norm`).

Why a loop over groups and not MoCo's SplitBatchNorm reshape
(``x.view(-1, C * G, H, W)``): that reshape is free only for NCHW memory. With
channels_last (the default, faster on CPUs and GPUs) no view puts a group
index next to the channels, so it costs two transposing copies per layer
(``benchmarks/step_speed.py`` times both: settings ``+gN`` and ``+splitN``). Here each group is a contiguous
slab of the batch in either layout, normalised in place into a slab of the
output: no copies, ``G`` calls of torch's own kernel forward and backward.

Under ``torch.compile`` the batch is instead viewed as ``G x N x C x H x W``
(a view in either layout) and batch norm is written out per group
(:func:`_batch_norm_by_group`): inductor cannot functionalise a kernel writing
into views of the running statistics' copies, and it fuses the written-out
form into one reduction and one elementwise pass per layer. On a 2-core Xeon
the compiled grouped ResNet-18 step measured within 5 % of the compiled plain
one, where one ``F.batch_norm`` per group and a concatenation cost 9-18 %.
Eagerly the written-out form would run each step as a kernel of its own and
keep its intermediates for the backward, so the eager step keeps the slabs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from densecl.errors import InputError

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
        args = (x, self.weight, self.bias, self.running_mean, self.running_var, groups, factor, self.eps)
        if torch.compiler.is_compiling():  # the eager path's writes into slabs cannot be functionalised
            return _batch_norm_by_group(*args)
        return _GroupedBatchNorm.apply(*args)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


class GroupedBatchNormAct2d(GroupedBatchNorm2d):
    """timm's ``BatchNormAct2d`` with grouped statistics: the normalisation of :class:`GroupedBatchNorm2d`, then
    the layer's own dropout and activation (``drop``, ``act``), as ``BatchNormAct2d.forward`` applies them."""

    def __init__(
        self,
        num_features: int,
        group_size: int,
        drop: nn.Module,
        act: nn.Module,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__(num_features, group_size, eps, momentum)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


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


def _batch_norm_by_group(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    groups: int,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """:class:`_GroupedBatchNorm`'s result written out for ``torch.compile``: ``B x C x H x W`` -> the same.

    Each group's biased mean and variance over its images and positions
    normalise it; the running statistics move by the mean over groups of what
    each group's ``BatchNorm2d`` would add (the unbiased variance), which is the
    mean of the groups' updated copies. Half inputs are normalised in float32
    and returned in their dtype, as torch's kernels do.
    """
    n = x.shape[0] // groups
    count = n * x.shape[2] * x.shape[3]  # values per channel in a group
    xg = x.unflatten(0, (groups, n)).to(torch.promote_types(x.dtype, torch.float32))  # G x N x C x H x W, a view
    var, mean = torch.var_mean(xg, dim=(1, 3, 4), correction=0, keepdim=True)  # G x 1 x C x 1 x 1 each
    y = (xg - mean) * torch.rsqrt(var + eps) * weight[:, None, None] + bias[:, None, None]
    with torch.no_grad():
        running_mean.copy_((1 - momentum) * running_mean + momentum * mean.mean(0).flatten())  # G x 1 x C x 1 x 1 -> C
        running_var.copy_((1 - momentum) * running_var + momentum * var.mean(0).flatten() * (count / (count - 1)))
    return y.flatten(0, 1).to(x.dtype)


def _grouped(bn: nn.BatchNorm2d, group_size: int) -> GroupedBatchNorm2d:
    return GroupedBatchNorm2d(bn.num_features, group_size, bn.eps, bn.momentum)


def _grouped_act(bn: nn.BatchNorm2d, group_size: int) -> GroupedBatchNormAct2d:
    return GroupedBatchNormAct2d(bn.num_features, group_size, bn.drop, bn.act, bn.eps, bn.momentum)


def groupers() -> dict[type, Callable[[nn.BatchNorm2d, int], GroupedBatchNorm2d]]:
    """Batch norm class -> function that builds its grouped twin (the tensors are attached by the caller)."""
    table: dict[type, Callable[[nn.BatchNorm2d, int], GroupedBatchNorm2d]] = {nn.BatchNorm2d: _grouped}
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:  # without timm no model holds timm's layers
        return table
    table[BatchNormAct2d] = _grouped_act
    return table


def has_batch_norm(module: nn.Module) -> bool:
    """Whether any layer of ``module`` normalises with batch statistics in training (a torch ``_BatchNorm``)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def group_batch_norms(module: nn.Module, group_size: int) -> nn.Module:
    """Replaces every batch norm in ``module`` by its grouped twin (:func:`groupers`), sharing its tensors.

    Parameters and buffers are the same objects, so the state dict (keys and
    values) is unchanged. Returns ``module`` (or the replacement if ``module``
    is itself a batch norm).

    Raises:
        InputError: a batch norm :func:`groupers` has no entry for, or one without
            affine parameters or running statistics (one line: its name and type).
    """
    table = groupers()
    replaced = _group(module, "", group_size, table)
    return module if replaced is None else replaced


def _group(module: nn.Module, name: str, group_size: int, table: dict) -> nn.Module | None:
    """The grouped twin of ``module`` if it is a batch norm (None otherwise), its children replaced in place."""
    if isinstance(module, GroupedBatchNorm2d):
        return None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        where = (
            f"batch norm layer '{name or type(module).__name__}' ({type(module).__module__}.{type(module).__name__})"
        )
        if type(module) not in table:
            raise InputError(
                f"cannot group {where}: grouped batch norm knows {', '.join(t.__name__ for t in table)}; "
                "use --bn-group-size none"
            )
        if not (module.affine and module.track_running_stats):
            raise InputError(
                f"cannot group {where}: it needs affine parameters and running statistics; use --bn-group-size none"
            )
        grouped = table[type(module)](module, group_size)
        grouped.weight, grouped.bias = module.weight, module.bias
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(grouped, buffer, getattr(module, buffer))
        grouped.train(module.training)
        return grouped
    for child_name, child in module.named_children():
        replaced = _group(child, f"{name}.{child_name}" if name else child_name, group_size, table)
        if replaced is not None:
            setattr(module, child_name, replaced)
    return None
