"""The data of ``densecl eval det``: COCO or VOC splits, checked before any model, and their training samples;
and which VOC AP metric the evaluated data calls for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from densecl.errors import InputError
from densecl.evaluation.datasets import CocoSplit, VocDetectionSplit, read_coco, read_voc_detection, subset
from densecl.evaluation.det_config import NORMS, TASKS
from densecl.evaluation.finetune import BatchStream
from densecl.inputs import InputSpec

if TYPE_CHECKING:
    from densecl.evaluation.det_config import DetConfig

Split = CocoSplit | VocDetectionSplit


def load_data(config: DetConfig) -> tuple[Split, Split]:
    for name, value, allowed in (("task", config.task, TASKS), ("norm", config.norm, NORMS)):
        if value not in allowed:
            raise InputError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
    if config.detector == "c4" and config.task == "mask":
        raise InputError("--detector c4 has no mask head: use --task box, or --detector fpn for masks")
    if config.precise_bn_iters < 0:
        raise InputError(f"--precise-bn-iters must be >= 0, got {config.precise_bn_iters}")
    if config.save_detector and Path(config.save_detector).exists() and not config.resume:
        raise InputError(
            f"--save-detector {config.save_detector} exists; this command never replaces a file: give another path "
            "(or --out), or pass --overwrite to move it aside"
        )
    roots = [Path(p.strip()) for p in config.data.split(",") if p.strip()]
    if is_voc(roots):
        if config.task == "mask":
            raise InputError(f"VOC data ({roots[0]}) has boxes, no instance masks: use --task box, or COCO data")
        train = read_voc_detection(roots, config.train_split, drop_empty=True)
        val = read_voc_detection(roots[:1], config.val_split)
        voc_metric(config, val)  # annotations of several years stop here, before any model
        return train.select(subset(len(train), config.train_fraction, config.subset_seed)), val
    if len(roots) != 1:
        raise InputError(
            f"--data {config.data}: several roots are read in the VOC layout only (ImageSets/Main/<split>.txt, "
            "Annotations/); give one COCO root"
        )
    train = read_coco(roots[0], config.train_split, drop_empty=True)
    val = read_coco(roots[0], config.val_split, drop_empty=False)
    if train.category_ids != val.category_ids:
        raise InputError(f"{train.annotation_file} and {val.annotation_file} define different categories")
    keep = subset(len(train), config.train_fraction, config.subset_seed)
    train.image_ids = [train.image_ids[i] for i in keep]
    return train, val


class VocMetric(NamedTuple):
    """The metric of VOC AP50 for an evaluated split, and why it was chosen (both kept in the result)."""

    metric: str  # "11point" (VOC07's) or "area"
    reason: str


def voc_metric(config: DetConfig, split: VocDetectionSplit) -> VocMetric:
    """``voc_ap``, with ``auto`` decided by the evaluated data: VOC07's 11-point metric for VOC2007, else ``area``.

    The year is the one the split's annotations name (``<folder>VOC2007</folder>``,
    as VOC's files do); only when none names a year does the evaluated root's
    folder name decide (11-point when it contains 2007, detectron2's test).

    Raises:
        InputError: the annotations name more than one year.
    """
    if config.voc_ap != "auto":
        return VocMetric(config.voc_ap, f"--voc-ap {config.voc_ap}")
    years = split.years()
    where = f"the {split.split} annotations of {split.roots[0]}"
    if len(years) > 1:
        counts = ", ".join(f"VOC{y} ({n} image{'s' if n != 1 else ''})" for y, n in sorted(years.items()))
        raise InputError(f"{where} name several years in <folder>: {counts}; choose --voc-ap 11point or area")
    if years:
        (year,) = years
        return VocMetric("11point" if year == 2007 else "area", f"{where} say VOC{year} (<folder>)")
    name = split.roots[0].name
    if "2007" in name:
        return VocMetric("11point", f"{where} name no year (<folder>); the root folder {name} contains 2007")
    return VocMetric("area", f"{where} name no year (<folder>), nor does the root folder {name}")


def is_voc(roots: list[Path]) -> bool:
    """The VOC layout (``ImageSets/Main``) rather than COCO's (``annotations/``), told by the first root."""
    return bool(roots) and (roots[0] / "ImageSets" / "Main").is_dir()


class DetectionSamples(torch.utils.data.Dataset):
    """``(index, sample_seed)`` -> (``C x H x W`` float image, target dict of tensors), flipped at random.

    A photo in [0, 1], other images' stored values with no data filled (``inputs``, the backbone's): the
    detector normalises them with the backbone's mean and std (:func:`build_detector`).
    """

    def __init__(self, split: Split, masks: bool, flip: bool, inputs: InputSpec | None = None) -> None:
        self.split, self.masks, self.flip, self.inputs = split, masks, flip, inputs or InputSpec()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, sample_seed = item
        image, target = self.split.load(index, with_masks=self.masks, inputs=self.inputs)
        if isinstance(image, Image.Image) and self.inputs.plain_rgb:
            x = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)  # 3 x H x W
        else:
            x = self.inputs.prepare(image, self.split.image_name(index))
        t = {k: torch.from_numpy(v) for k, v in target.items()}
        if self.flip and np.random.default_rng(sample_seed).random() < 0.5:
            x = x.flip(-1)
            width = x.shape[-1]
            t["boxes"] = torch.stack(
                [width - t["boxes"][:, 2], t["boxes"][:, 1], width - t["boxes"][:, 0], t["boxes"][:, 3]], 1
            )
            if "masks" in t:
                t["masks"] = t["masks"].flip(-1)
        return x, t


def as_lists(batch):
    return [x for x, _ in batch], [t for _, t in batch]


def sample_loader(
    split: Split, config: DetConfig, stream: BatchStream, inputs: InputSpec
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        DetectionSamples(split, masks=config.task == "mask", flip=True, inputs=inputs),
        batch_sampler=stream,
        num_workers=config.workers,
        collate_fn=as_lists,
    )


def to_device(batch, device: str):
    images, targets = batch
    images = [x.to(device, non_blocking=True) for x in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets
