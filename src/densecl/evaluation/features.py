"""Frozen-backbone features, and the check that a frozen backbone stayed frozen.

MoCo's habit: after a probe on frozen features, assert the backbone is
bit-identical to what was loaded. :func:`frozen` wraps a probe in that check;
:func:`snapshot` / :func:`assert_unchanged` are the two halves, reusable alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densecl.errors import InputError
from densecl.evaluation.datasets import ImageTensors, SegmentationSplit, as_list, segmentation_tensors
from densecl.inputs import input_of
from densecl.models.backbones import ResNetBackbone

STAGE_NAMES = ("c2", "c3", "c4", "c5")


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter and buffer (batch-norm statistics included)."""
    return {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raises ``AssertionError`` naming every tensor that is not bit-identical to ``before``."""
    after = module.state_dict()
    changed = sorted(
        name
        for name in before.keys() | after.keys()
        if name not in before or name not in after or not torch.equal(before[name], after[name].detach().cpu())
    )
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise AssertionError(f"the frozen backbone changed during evaluation: {shown}")


@contextmanager
def frozen(backbone: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no gradients, and a bit-identical check on exit.

    Batch-norm uses its stored statistics (eval mode), so nothing a probe does
    through the backbone's forward may change it; the check on exit proves it.
    ``requires_grad`` and the train/eval mode are restored afterwards.
    """
    before = snapshot(backbone)
    was_training = backbone.training
    grad_flags = {name: p.requires_grad for name, p in backbone.named_parameters()}
    backbone.eval().requires_grad_(False)
    try:
        yield backbone
    finally:
        backbone.train(was_training)
        for name, p in backbone.named_parameters():
            p.requires_grad_(grad_flags.get(name, True))
    assert_unchanged(backbone, before)


def parse_stages(spec: str) -> tuple[int, ...]:
    """``"c5"`` or ``"c4,c5"`` -> stage indices into ``forward_stages`` (0 = C2 ... 3 = C5)."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGE_NAMES]
    if bad or not names:
        raise InputError(f"unknown stage(s) {', '.join(bad) or repr(spec)}; choose from {', '.join(STAGE_NAMES)}")
    return tuple(sorted({STAGE_NAMES.index(s) for s in names}))


def parse_stage(spec: str) -> int:
    """One stage name (``"c5"``) -> its index into ``forward_stages``."""
    stages = parse_stages(spec)
    if len(stages) != 1:
        raise InputError(f"this protocol pools one stage (e.g. --stage c5), got {spec!r}")
    return stages[0]


def stage_channels(backbone: ResNetBackbone, stages: tuple[int, ...]) -> int:
    """Channels of the concatenation of ``stages``."""
    return sum(backbone.stage_channels[s] for s in stages)


@torch.no_grad()
def pooled_features(
    backbone: ResNetBackbone, batches: Iterable[list[torch.Tensor]], stage: int = 3, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Global-average-pooled, L2-normalised features of one stage.

    Args:
        backbone: in eval mode (see :func:`frozen`).
        batches: lists of normalised ``3 x H x W`` images; images of equal size
            are stacked into one forward, different sizes run separately.
        stage: 0..3 for C2..C5.

    Returns:
        ``N x C`` float32 on the CPU, rows of unit length, in input order.
    """
    out = []
    for images in batches:
        for group in same_size_runs(images):
            x = torch.stack(group).to(device)
            fmap = backbone.forward_stages(x)[stage]  # B x C x h x w
            out.append(F.normalize(fmap.mean(dim=(2, 3)).float(), dim=1).cpu())  # B x C
    if not out:
        raise ValueError("no image to extract features from")
    return torch.cat(out)


def image_features(
    backbone: ResNetBackbone,
    paths: list,
    image_size: int,
    stage: int,
    batch_size: int,
    workers: int,
    device: torch.device | str,
) -> torch.Tensor:
    """Pooled, L2-normalised features of image files (in order): ``N x C`` on the CPU."""
    loader = torch.utils.data.DataLoader(
        ImageTensors(paths, image_size, input_of(backbone)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=as_list,
    )
    return pooled_features(backbone, loader, stage, device)


def train_val_features(
    backbone: ResNetBackbone, data: tuple[Any, Any], config: Any, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of a classification protocol's two splits (``data``: splits with ``paths``) under
    :func:`frozen` (the bit-identical check included), as ``config`` says: ``image_size``, ``stage``,
    ``batch_size`` (or the one given), ``workers``, ``device``."""
    stage, batch_size = parse_stage(config.stage), batch_size or config.batch_size
    backbone.to(config.device)
    with frozen(backbone):
        return tuple(
            image_features(backbone, split.paths, config.image_size, stage, batch_size, config.workers, config.device)
            for split in data
        )


@torch.no_grad()
def dense_features(backbone: ResNetBackbone, images: torch.Tensor, stages: tuple[int, ...]) -> torch.Tensor:
    """Feature maps of ``stages``, upsampled bilinearly to the finest one and concatenated (not normalised).

    ``B x 3 x H x W`` -> ``B x C x h x w`` with ``h x w`` the size of the
    finest selected stage (e.g. C4 + C5 at H/16). The correspondence picture's
    unit-length C5 map is :func:`densecl.matches.unit_c5_features`.
    """
    maps = backbone.forward_stages(images)
    chosen = [maps[s] for s in stages]
    size = chosen[0].shape[-2:]
    return torch.cat(
        [
            m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in chosen
        ],
        dim=1,
    )


@torch.no_grad()
def segmentation_maps(
    backbone: ResNetBackbone,
    split: SegmentationSplit,
    stages: tuple[int, ...],
    image_size: int,
    batch_size: int,
    device: str,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image of ``split``: the frozen ``C x h x w`` float16 map of :func:`dense_features` and the
    ``H x W`` label, both on the CPU. Images of one size are batched; ``image_size`` as in
    :func:`densecl.evaluation.datasets.segmentation_tensors`.
    """
    maps, labels, inputs = [], [], input_of(backbone)
    for start in range(0, len(split), batch_size):
        batch = [
            segmentation_tensors(*split.load(i, inputs), image_size, inputs, split.images[i])
            for i in range(start, min(start + batch_size, len(split)))
        ]
        for run in same_size_runs(batch, shape=lambda item: item[0].shape):
            x = torch.stack([image for image, _ in run]).to(device)  # B x 3 x H x W
            maps.extend(dense_features(backbone, x, stages).to("cpu", torch.float16).unbind(0))
            labels.extend(label for _, label in run)
    return maps, labels


def frozen_segmentation_maps(
    backbone: ResNetBackbone, splits: Iterable[SegmentationSplit], config: Any
) -> list[tuple[list, list]]:
    """:func:`segmentation_maps` of each split, the backbone moved to ``config.device`` and frozen.

    ``config`` carries ``stages``, ``image_size``, ``batch_size`` and ``device``.
    """
    stages = parse_stages(config.stages)
    backbone.to(config.device)
    with frozen(backbone):
        return [
            segmentation_maps(backbone, s, stages, config.image_size, config.batch_size, config.device) for s in splits
        ]


def same_size_runs(items: list, shape: Callable[[Any], Any] = lambda t: t.shape) -> list[list]:
    """Splits a list into runs of consecutive items of equal ``shape(item)`` (order kept)."""
    runs: list[list] = []
    for item in items:
        if runs and shape(runs[-1][0]) == shape(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs
