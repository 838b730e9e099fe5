"""Linear segmentation probe on frozen dense features (mIoU).

The fastest dense signal at small scale: nothing of the backbone is trained,
so what the probe reads off is what pre-training put into the feature map.

1. Frozen backbone (eval mode). Every train and val image goes through it
   once; the C5 map (or C4 + C5: C5 bilinearly upsampled to C4's grid and
   concatenated) is stored in float16 on the CPU. Images keep their size
   unless ``image_size`` > 0 resizes the shorter side (labels: nearest).
2. Each channel is standardised with the train maps' mean and standard
   deviation (a fixed affine map, so one learning rate suits any backbone).
3. The probe is one ``1 x 1`` convolution (C -> K classes). Its logits are
   bilinearly upsampled to the label's size; cross-entropy over labelled
   pixels (255 ignored). SGD, momentum 0.9, cosine learning rate, ``epochs``
   passes over the stored maps.
4. mIoU on the val split from a confusion matrix; classes with no val pixel
   are left out of the mean, with a warning.

The backbone is checked bit-identical afterwards. The seed moves the probe's
initialisation and the batch order. Memory: N images x C x h x w x 2 bytes
(ResNet-50 C5 at 512 px: about 1 MB an image).

CPU example (exported scenes)::

    densecl eval seg-probe --weights runs/demo/checkpoint.pt --data runs/scenes-voc --stages c4,c5

VOC 2012 (GPU)::

    densecl eval seg-probe --weights ckpt.pt --data VOCdevkit/VOC2012 --image-size 512 --device cuda
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densecl.evaluation import options
from densecl.evaluation.datasets import IGNORE_INDEX, SegmentationSplit, describe_segmentation, read_segmentation_splits
from densecl.evaluation.features import frozen_segmentation_maps, parse_stages
from densecl.evaluation.metrics import confusion_matrix, iou_from_confusion
from densecl.evaluation.options import option
from densecl.evaluation.probe import train_probe
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn_absent_classes
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class SegProbeConfig(options.SegmentationData):
    stages: str = option("c5", "stage(s) to read: c5, or c4,c5 (C5 upsampled to C4 and concatenated)")
    image_size: int = options.image_size(0)
    epochs: int = options.epochs(30)
    lr: float = options.lr(0.1)
    weight_decay: float = options.weight_decay(0.0)
    batch_size: int = options.batch_size(16)
    device: str = options.device()


def load_data(config: SegProbeConfig) -> tuple[SegmentationSplit, SegmentationSplit]:
    parse_stages(config.stages)
    train, val = read_segmentation_splits(config, config.train_split, config.val_split)
    return train, val


def evaluate(
    backbone: ResNetBackbone,
    data: tuple[SegmentationSplit, SegmentationSplit],
    config: SegProbeConfig,
    seeds: list[int],
) -> Evaluation:
    train, val = data
    (train_maps, train_labels), (val_maps, val_labels) = frozen_segmentation_maps(backbone, data, config)
    mean, std = _channel_stats(train_maps)
    k = train.num_classes
    per_seed, details = [], []
    for seed in seeds:
        probe = _train_probe(train_maps, train_labels, mean, std, k, config, seed)
        cm = torch.zeros(k, k, dtype=torch.int64)
        with torch.no_grad():
            for fmap, label in zip(val_maps, val_labels):
                logits = _logits(probe, fmap[None], config.device, label.shape)  # 1 x K x H x W
                cm += confusion_matrix(logits.argmax(dim=1)[0].cpu(), label, k, IGNORE_INDEX)
        iou = iou_from_confusion(cm)
        if seed == seeds[0]:
            warn_absent_classes(train.classes, iou.present, config.val_split)
        per_seed.append({"mIoU": iou.mean, "pixel_acc": iou.pixel_accuracy})
        details.append({"seed": seed, "iou": dict(zip(train.classes, iou.per_class))})
    data_info = describe_segmentation(
        config,
        train,
        val,
        absent_in_val=[c for c, p in zip(train.classes, iou.present) if not p],
        feature_channels=int(train_maps[0].shape[0]),
        feature_size=list(train_maps[0].shape[1:]),
    )
    return Evaluation(headline=["mIoU"], per_seed=per_seed, details=details, data=data_info)


def _channel_stats(maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over every position of every map (float64 sums)."""
    total = sum(m.double().sum(dim=(1, 2)) for m in maps)
    squares = sum(m.double().pow(2).sum(dim=(1, 2)) for m in maps)
    count = sum(m.shape[1] * m.shape[2] for m in maps)
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp(min=0).sqrt().clamp(min=1e-6)
    return mean.float(), std.float()


def _logits(probe: nn.Module, fmaps: torch.Tensor, device: str, size: tuple[int, int]) -> torch.Tensor:
    """``B x C x h x w`` stored maps -> ``B x K x H x W`` logits at label size."""
    return F.interpolate(probe(fmaps.to(device, torch.float32)), size=tuple(size), mode="bilinear", align_corners=False)


def _train_probe(
    maps: list[torch.Tensor],
    labels: list[torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    num_classes: int,
    config: SegProbeConfig,
    seed: int,
) -> nn.Module:
    """Fits ``standardise -> 1x1 conv``: pixel cross-entropy, averaged over the batch's labelled pixels."""

    def batch_loss(probe: nn.Module, idx: torch.Tensor) -> torch.Tensor | None:
        loss_sum, labelled = 0.0, 0
        for items in _same_shapes([(maps[i], labels[i]) for i in idx.tolist()]):
            target = torch.stack([t for _, t in items]).to(config.device).long()  # B x H x W
            logits = _logits(probe, torch.stack([m for m, _ in items]), config.device, target.shape[1:])
            loss_sum = loss_sum + F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
            labelled += int((target != IGNORE_INDEX).sum())
        return loss_sum / labelled if labelled else None

    return train_probe(
        nn.Conv2d(maps[0].shape[0], num_classes, kernel_size=1),
        mean,
        std,
        len(maps),
        batch_loss,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=seed,
        device=config.device,
    )


def _same_shapes(items: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Groups (map, label) pairs whose map and label shapes agree, so each group stacks."""
    groups: dict[tuple, list] = {}
    for m, t in items:
        groups.setdefault((tuple(m.shape), tuple(t.shape)), []).append((m, t))
    return list(groups.values())


PROTOCOL = Protocol("seg-probe", SegProbeConfig, load_data, evaluate, description=__doc__)
