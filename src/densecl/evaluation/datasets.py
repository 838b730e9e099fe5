"""Labelled data for the evaluation protocols: which files, which labels, checked early.

The layouts are read by :mod:`densecl.formats` (one module per layout, each
docstring gives the files); this module picks the layout of a ``--data``
directory (``root``) and turns splits into tensors.

Image-level labels (``svm``, ``knn``, ``linear``), detected in this order:
  - VOC classification (:mod:`~densecl.formats.voc`): ``root/ImageSets/Main/<class>_<split>.txt``,
    images in ``root/JPEGImages/``. Multi-label, with "difficult" images.
  - A label list (:mod:`~densecl.formats.labels`): ``root/<split>.txt``, one
    ``<path> <label>[,<label>...]`` a line. Single- or multi-label.
  - ImageFolder (:mod:`~densecl.formats.imagefolder`): ``root/<split>/<class>/<image>``. Single-label.

Segmentation (``seg-probe``, ``seg-finetune``): the VOC layout
(:func:`~densecl.formats.voc.read_segmentation`).

Detection (``det``): COCO (:func:`~densecl.formats.coco.read_coco`; sparse
category ids map to contiguous labels 1..K in id order and back when results
are written), or VOC boxes over one or more roots
(:func:`~densecl.formats.voc_boxes.read_voc_detection`: ``Annotations/*.xml``,
``ImageSets/Main/<split>.txt``, the "difficult" flag kept for scoring).

``classes.txt`` means one thing in every layout and protocol
(:mod:`~densecl.formats.labels`): a first line ``background`` (or
``__background__``) is the background, label value 0 of a mask and never an
object class; the other lines are the object classes.

Every reader raises :class:`~densecl.errors.InputError` naming the file for
what the user can fix: a missing file or directory, an empty split, a label
PNG whose values are not classes, an image and mask of different sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from densecl.errors import InputError
from densecl.formats.coco import CocoSplit, read_coco
from densecl.formats.imagefolder import read_image_folder
from densecl.formats.labels import ClassificationSplit, ClassList, read_class_list, read_label_list
from densecl.formats.voc import (
    IGNORE_INDEX,
    VOC_CLASSES,
    SegmentationSplit,
    read_label,
    read_segmentation,
    read_voc_classification,
)
from densecl.formats.voc_boxes import VocDetectionSplit, read_voc_detection
from densecl.inputs import InputSpec
from densecl.inputs.files import Pixels
from densecl.inputs.files.photo import open_rgb

# The protocols import the splits and readers from here, the evaluation's one door to the data.
__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "ClassList",
    "ClassificationSplit",
    "CocoSplit",
    "ImageTensors",
    "SegmentationSplit",
    "VocDetectionSplit",
    "as_list",
    "check_same_classes",
    "describe_splits",
    "open_rgb",
    "read_class_list",
    "read_classification",
    "read_classification_splits",
    "read_coco",
    "read_label",
    "read_segmentation",
    "read_segmentation_splits",
    "read_voc_detection",
    "segmentation_tensors",
    "subset",
]


# ---------------------------------------------------------------- image-level labels


def read_classification(root: Path, split: str, classes: tuple[str, ...] | None = None) -> ClassificationSplit:
    """Reads one split in whichever image-level layout ``root`` holds (see module docstring).

    Args:
        classes: the train split's classes, to read a val split in the same order.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist; pass --data DIR")
    if (root / "ImageSets" / "Main").is_dir():
        result = read_voc_classification(root, split, classes)
    elif (root / f"{split}.txt").is_file():
        result = read_label_list(root, split, classes)
    elif (root / split).is_dir():
        result = read_image_folder(root, split, classes)
    else:
        raise InputError(
            f"found no split {split!r} in {root}: expected ImageSets/Main/<class>_{split}.txt (VOC), "
            f"{split}.txt (label list) or a folder {split}/<class>/ (ImageFolder)"
        )
    if len(result) == 0:
        raise InputError(f"split {split!r} of {result.source} is empty; it needs at least one image")
    return result


def read_classification_splits(
    root: Path, train_split: str, val_split: str, single_label: bool = False
) -> tuple[ClassificationSplit, ClassificationSplit]:
    """Train and val splits with the same class list (the train split's).

    Args:
        single_label: refuse multi-label data (an :class:`InputError` saying so).
    """
    train = read_classification(root, train_split)
    val = read_classification(root, val_split, classes=train.classes)
    if single_label:
        train.labels(), val.labels()
    return train, val


def describe_splits(
    root: Path, train: ClassificationSplit, val: ClassificationSplit, train_split: str, val_split: str
) -> dict:
    """The ``data`` entry of a result file for image-level protocols."""
    return {
        "root": str(root),
        "train_split": train_split,
        "val_split": val_split,
        "n_train": len(train),
        "n_val": len(val),
        "classes": list(train.classes),
        "train_source": train.source,
        "val_source": val.source,
    }


def describe_segmentation(config, train, val, **more) -> dict:
    """The ``data`` entry of a result file for the segmentation protocols (``config``: their
    :class:`~densecl.evaluation.options.SegmentationData` fields), with ``more`` entries after it."""
    return {
        "root": str(config.data),
        "train_split": config.train_split,
        "val_split": config.val_split,
        "n_train": len(train),
        "n_val": len(val),
        "classes": list(train.classes),
        **more,
    }


def read_segmentation_splits(config, *splits: str, workers: int = 4) -> list[SegmentationSplit]:
    """The named VOC-layout splits of ``config.data``, every label read once.

    ``config`` carries ``data``, ``num_classes`` and ``label_dir``. A bad mask
    fails here, before any model is built, not at iteration 9000.
    """
    out = [read_segmentation(config.data, split, config.num_classes, config.label_dir) for split in splits]
    for split in out:
        split.check(workers=workers)
    return out


class ImageTensors(torch.utils.data.Dataset):
    """Image files as normalised ``C x S x S`` tensors for frozen feature extraction.

    The shorter side is resized to ``size`` and the centre ``size x size``
    cropped (the usual evaluation transform); ``size=0`` keeps every image
    as it is. ``inputs`` (the backbone's) says how the files are read and
    normalised; RGB photos take the same path as always.
    """

    def __init__(self, paths: Sequence[Path], size: int, inputs: InputSpec | None = None) -> None:
        self.paths = list(paths)
        self.inputs = inputs or InputSpec()
        self.resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)]) if size else v2.Identity()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_network(self.resize, self.inputs.read(self.paths[index]), self.inputs, self.paths[index])


def to_network(resize, image: Pixels, inputs: InputSpec, where: Path | str = "an image") -> torch.Tensor:
    """An image, resized by ``resize`` (a v2 transform), as the network's normalised ``C x H x W`` input.

    An RGB photo the backbone takes as it is: resized as a PIL image, scaled to [0, 1], normalised (the path of
    every RGB evaluation); anything else: no-data filled, resized as a float tensor, normalised.
    """
    if inputs.takes_as_photo(image):
        return inputs.finish_photo(resize(image))
    return inputs.normalise(resize(inputs.prepare(image, where)), isinstance(image, Image.Image))


def as_list(batch: list) -> list:
    """A ``collate_fn`` that keeps the batch a list (images may differ in size)."""
    return batch


# ---------------------------------------------------------------- segmentation


def segmentation_tensors(
    image: Pixels, label: np.ndarray, size: int = 0, inputs: InputSpec | None = None, where: Path | str = "an image"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image -> normalised ``C x H x W`` float (as ``inputs``, the backbone's, takes it); label -> ``H x W`` uint8.

    ``size`` > 0 resizes the shorter side of both (image bilinear, label nearest).
    """
    y = torch.from_numpy(np.array(label, dtype=np.uint8))  # a writable copy
    resize = (lambda im: v2.functional.resize(im, size, antialias=True)) if size else (lambda im: im)
    if size:
        y = v2.functional.resize(y[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
    return to_network(resize, image, inputs or InputSpec(), where), y


# ---------------------------------------------------------------- any split


def subset(n: int, fraction: float, seed: int) -> list[int]:
    """A fixed-seed random subset of ``range(n)`` of ``round(fraction * n)`` items (at least 1), sorted."""
    if not 0 < fraction <= 1:
        raise InputError(f"--train-fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(range(n))
    k = max(1, round(fraction * n))
    return sorted(np.random.default_rng(seed).permutation(n)[:k].tolist())


def check_same_classes(train: Sequence[str], val: Sequence[str], what: str) -> None:
    if tuple(train) != tuple(val):
        raise InputError(f"the train and val splits of {what} define different classes")
