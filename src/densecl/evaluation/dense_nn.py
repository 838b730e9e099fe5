"""In-context dense nearest-neighbour segmentation (mIoU), with no training at all.

Balazevic et al., "Towards In-context Scene Understanding" (NeurIPS 2023):

1. Memory: every patch (feature-map cell) of the labelled train images, its
   frozen feature and its label, the class histogram of the pixels it covers
   (255 ignored; a patch with no labelled pixel is left out).
2. Each val patch takes its ``k`` nearest memory patches by cosine (k = 30),
   weights them by a softmax of their similarities over a temperature
   (0.02), and sums their histograms: a class distribution per patch.
3. The distributions are upsampled bilinearly to the label's size; argmax;
   mIoU from a confusion matrix.

Scored at several memory sizes (a seeded random subset of the patches; 0 =
all of them): how fast the labels become usable as the memory grows.
Nearest neighbours are searched exactly, in chunks of val patches, so the
similarity matrix never exceeds ``chunk_mb``; the memory itself is
``M x C`` float32 plus ``M x K`` histograms, reported as ``memory_mb``.

    densecl eval dense-nn --weights runs/a/checkpoint.pt --data scenes-voc --memory-sizes 1000,10000,0
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from densecl.config import stage_side
from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.datasets import IGNORE_INDEX, SegmentationSplit, describe_segmentation, read_segmentation_splits
from densecl.evaluation.features import frozen_segmentation_maps, parse_stages
from densecl.evaluation.metrics import confusion_matrix, iou_from_confusion
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn
from densecl.inputs import InputSpec, input_of
from densecl.inputs.files import preview, probe
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class DenseNNConfig(options.SegmentationData):
    stages: str = option("c5", "stage(s) to read: c5, c4, or c4,c5 (C5 upsampled to C4 and concatenated)")
    image_size: int = options.image_size(0)
    k: int = option(30, "nearest memory patches per val patch")
    temperature: float = option(0.02, "softmax temperature over the k cosines")
    memory_sizes: str = option("0", "comma-separated memory sizes in patches, each scored; 0 = all patches")
    chunk_mb: int = option(64, "largest block of val-by-memory similarities, in MiB")
    masks_out: str = option(
        "", "also write the first 4 val images, labels and predicted masks (all the memory, first seed) to this .npz"
    )
    batch_size: int = options.batch_size(16)
    device: str = options.device()


def load_data(config: DenseNNConfig) -> tuple[SegmentationSplit, SegmentationSplit]:
    """Both splits, every label read once, the memory sizes checked against the patches there are."""
    stages = parse_stages(config.stages)
    sizes = parse_sizes(config.memory_sizes)
    if config.k < 1 or config.temperature <= 0:
        raise InputError(
            f"dense-nn needs k >= 1 and temperature > 0, got k {config.k} and temperature {config.temperature}"
        )
    train, val = read_segmentation_splits(config, config.train_split, config.val_split)
    check_val_classes(val)
    available = check_patches(max(sizes), "memory size", "--memory-sizes", train, config.train_split, stages[0], config)
    if config.masks_out and Path(config.masks_out).exists():
        raise InputError(f"--masks-out {config.masks_out} exists; this command never replaces a file: give a new path")
    if config.k > min((s or available) for s in sizes):
        raise InputError(
            f"k {config.k} is larger than the smallest memory ({min((s or available) for s in sizes)} patches)"
        )
    return train, val


def evaluate(
    backbone: ResNetBackbone, data: tuple[SegmentationSplit, SegmentationSplit], config: DenseNNConfig, seeds: list[int]
) -> Evaluation:
    train, val = data
    (train_maps, train_labels), (val_maps, val_labels) = frozen_segmentation_maps(backbone, data, config)
    k_classes = train.num_classes
    keys, values = build_memory(train_maps, train_labels, k_classes)
    sizes = memory_sizes(parse_sizes(config.memory_sizes), len(keys))
    per_seed, details = [], []
    for seed in seeds:
        scores, per_class = {}, {}
        for size in sizes:
            pick = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))[:size]
            cm = torch.zeros(k_classes, k_classes, dtype=torch.int64)
            predictions = []
            for fmap, label in zip(val_maps, val_labels):
                probs = transfer_labels(fmap, keys[pick], values[pick], config.k, config.temperature, config.chunk_mb)
                pred = upsampled_argmax(probs, label.shape)
                cm += confusion_matrix(pred, label, k_classes, IGNORE_INDEX)
                if len(predictions) < PICTURED:
                    predictions.append(pred.to(torch.uint8))
            if config.masks_out and seed == seeds[0] and size == sizes[-1]:
                _write_masks(config.masks_out, val, val_labels, predictions, input_of(backbone))
            iou = iou_from_confusion(cm)
            scores[f"mIoU@{size}"] = iou.mean
            per_class[size] = dict(zip(train.classes, iou.per_class))
        per_seed.append({"mIoU": scores[f"mIoU@{sizes[-1]}"], **scores})
        details.append({"seed": seed, "iou": per_class})
    data_info = describe_segmentation(
        config,
        train,
        val,
        memory_patches=len(keys),
        memory_sizes=sizes,
        memory_mb=round(keys.numel() * 4 / 2**20 + values.numel() * 4 / 2**20, 2),
        feature_channels=int(keys.shape[1]),
        feature_size=list(train_maps[0].shape[1:]),
    )
    return Evaluation(headline=["mIoU"], per_seed=per_seed, details=details, data=data_info)


# --------------------------------------------------------------------------- pieces


PICTURED = 4  # val images whose masks --masks-out keeps


def _write_masks(
    path: str,
    val: SegmentationSplit,
    labels: list[torch.Tensor],
    predictions: list[torch.Tensor],
    inputs: InputSpec,
) -> None:
    """``images`` (N x H x W x 3 uint8, at the labels' size; bands as an 8-bit picture,
    :func:`densecl.inputs.files.preview`), ``labels`` and ``predictions`` (N x H x W uint8), ``classes`` and
    ``names``; images of another size than the first are left out (one picture, one size)."""
    keep = [i for i, p in enumerate(predictions) if p.shape == predictions[0].shape]
    height, width = predictions[0].shape
    images = [np.asarray(preview(val.load(i, inputs)[0]).resize((width, height))) for i in keep]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=Path(path).parent)
    with os.fdopen(fd, "wb") as f:
        np.savez_compressed(
            f,
            images=np.stack(images),
            labels=torch.stack([labels[i] for i in keep]).numpy(),
            predictions=torch.stack([predictions[i] for i in keep]).numpy(),
            classes=np.array(val.classes),
            names=np.array([val.ids[i] for i in keep]),
        )
    os.replace(tmp, path)


def parse_sizes(text: str) -> list[int]:
    """``"1000,10000,0"`` -> ``[1000, 10000, 0]``, sorted with 0 (= all) last."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--memory-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 0 for s in sizes):
        raise InputError(f"--memory-sizes must be integers >= 0 (0 = all patches), got {text!r}")
    return sorted(set(sizes), key=lambda s: (s == 0, s))


def memory_sizes(asked: list[int], labelled: int) -> list[int]:
    """The memory sizes to use: 0 is every labelled patch, and so is a size beyond them, with a warning (the
    header count of :func:`check_patches` includes patches without a labelled pixel, and a backbone whose maps
    are smaller than a ResNet's); each result is named by the size it used, never by the one asked."""
    sizes = []
    for size in asked:
        if size > labelled:
            warn(f"memory size {size} is more than the {labelled} patches with a labelled pixel; using all of them")
        size = min(size or labelled, labelled)
        if size not in sizes:
            sizes.append(size)
    return sizes


def check_val_classes(val: SegmentationSplit) -> None:
    """One clear line when a class of the label set has no pixel in the val split."""
    present = torch.zeros(val.num_classes, dtype=torch.bool)
    for i in range(len(val)):
        _, label = val.load(i)
        values = torch.from_numpy(label).unique().long()
        present[values[values != IGNORE_INDEX]] = True
    missing = [c for c, p in zip(val.classes, present.tolist()) if not p]
    if missing:
        raise InputError(
            f"class(es) {', '.join(missing)} of {val.root} have no pixel in the {val.split} split; "
            "use a val split that has every class, or drop them from classes.txt"
        )


def check_patches(wanted: int, what: str, flag: str, split: SegmentationSplit, name: str, stage: int, config) -> int:
    """The patches of ``split`` at ``stage``; raises :class:`InputError` (one line) when ``wanted`` exceeds them."""
    patches = patch_count(split, stage, config.image_size)
    if wanted > patches:
        raise InputError(
            f"{what} {wanted} is more than the {patches} patches of the {len(split)} {name} images in "
            f"{config.data} at {config.stages}; use {flag} up to {patches}"
        )
    return patches


def patch_count(split: SegmentationSplit, stage: int, image_size: int) -> int:
    """Feature-map cells of all images of ``split`` at ``stage`` (0 = C2 .. 3 = C5), from image headers."""
    total = 0
    for path in split.images:
        info = probe(path)  # header only
        w, h = info.width, info.height
        if image_size:
            short = min(w, h)
            w, h = (image_size, int(image_size * h / w)) if w == short else (int(image_size * w / h), image_size)
        total += stage_side(h, stage) * stage_side(w, stage)
    return total


def patch_histograms(label: torch.Tensor, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    """``H x W`` labels -> ``h x w x K``: the fraction of each class among a patch's labelled pixels.

    A patch covers the pixels adaptive average pooling gives it; 255 is
    ignored; a patch with no labelled pixel is all zeros.
    """
    label = label.long()
    onehot = F.one_hot(label.clamp(max=num_classes), num_classes + 1)[..., :num_classes]  # H x W x K; 255 -> zeros
    counts = F.adaptive_avg_pool2d(onehot.permute(2, 0, 1).double()[None], grid)[0]  # K x h x w
    total = counts.sum(dim=0, keepdim=True)
    return (counts / total.clamp(min=1e-12)).permute(1, 2, 0).float()


def build_memory(
    maps: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All labelled patches: ``M x C`` unit-norm float32 features and ``M x K`` class histograms."""
    keys, values = [], []
    for fmap, label in zip(maps, labels):
        hist = patch_histograms(label, tuple(fmap.shape[-2:]), num_classes).flatten(0, 1)  # hw x K
        keep = hist.sum(dim=1) > 0
        keys.append(F.normalize(fmap.float().flatten(1).T, dim=1)[keep])  # hw' x C
        values.append(hist[keep])
    return torch.cat(keys), torch.cat(values)


def transfer_labels(
    fmap: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, k: int, temperature: float, chunk_mb: int = 64
) -> torch.Tensor:
    """One val map's class distributions from its ``k`` nearest memory patches.

    Args:
        fmap: ``C x h x w`` features of one val image.
        keys: ``M x C`` unit-norm memory features; ``values``: ``M x K`` histograms.

    Returns:
        ``K x h x w`` softmax-weighted sums of the neighbours' histograms.
    """
    h, w = fmap.shape[-2:]
    queries = F.normalize(fmap.float().flatten(1).T, dim=1)  # hw x C
    rows = max(1, (chunk_mb * 2**20) // (4 * len(keys)))
    out = []
    for chunk in queries.split(rows):
        sim, index = (chunk @ keys.T).topk(min(k, len(keys)), dim=1)  # n x k
        weights = torch.softmax(sim / temperature, dim=1)  # n x k
        out.append(torch.einsum("nk,nkc->nc", weights, values[index]))  # n x K
    return torch.cat(out).T.reshape(-1, h, w)


def upsampled_argmax(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``K x h x w`` class scores -> ``H x W`` class indices (bilinear upsampling first)."""
    up = F.interpolate(probs[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)


PROTOCOL = Protocol("dense-nn", DenseNNConfig, load_data, evaluate, description=__doc__)
