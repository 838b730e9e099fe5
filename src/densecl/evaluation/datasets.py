"""Labelled data for the evaluation protocols: which files, which labels, checked early.

Layouts (``root`` is the ``--data`` directory, ``split`` e.g. ``train``):

Image-level labels (``svm``, ``knn``, ``linear``), detected in this order:
  - VOC classification: ``root/ImageSets/Main/<class>_<split>.txt`` with lines
    ``<id> <1|-1|0>`` (0 = difficult: ignored in training and in AP), images
    ``root/JPEGImages/<id>.jpg``. Multi-label.
  - A label list ``root/<split>.txt``: one image a line, ``<path> <label>[,<label>...]``,
    path relative to ``root`` (no whitespace in paths), labels are class names.
    Class order from ``root/classes.txt`` (one name a line) if present, else
    sorted names seen in the train list. Single- or multi-label.
  - ImageFolder: ``root/<split>/<class>/<image>``; classes = the train split's
    folder names, sorted. Single-label.

Segmentation (``seg-probe``, ``seg-finetune``), the VOC layout:
  ``root/ImageSets/Segmentation/<split>.txt`` (ids), ``root/JPEGImages/<id>.jpg``
  (or ``.png``), ``root/SegmentationClass/<id>.png`` (class index per pixel,
  255 = ignore; a palette PNG as VOC ships, or 8-bit grayscale; another
  folder name with ``label_dir``). Class names from ``root/classes.txt`` (one a
  line, in index order) if present, else the 21 VOC classes.

Detection (``det``), COCO: images in ``root/<split>/``, annotations in
``root/annotations/instances_<split>.json`` (polygon or RLE segmentation).
Category ids may be sparse (COCO's 1..90); they map to contiguous labels
1..K in id order and back when results are written.

Every reader raises :class:`~densecl.errors.InputError` naming the file for
what the user can fix: a missing file or directory, an empty split, a label
PNG whose values are not classes, an image and mask of different sizes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densecl.errors import InputError
from densecl.images import IMAGE_EXTENSIONS, open_rgb

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def read_class_names(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise InputError(f"{path} lists no class; write one class name a line")
    if len(set(names)) != len(names):
        raise InputError(f"{path} lists a class twice; class names must be unique")
    return names


# ---------------------------------------------------------------- image-level labels


@dataclass(frozen=True)
class ClassificationSplit:
    """Images with image-level labels.

    Attributes:
        paths: ``N`` image files.
        targets: ``N x K`` int8: 1 positive, 0 negative, -1 ignored (VOC "difficult").
        classes: ``K`` class names, index = column of ``targets``.
        source: where the labels came from (for messages and the result file).
    """

    paths: list[Path]
    targets: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def single_label(self) -> bool:
        return bool(((self.targets == 1).sum(axis=1) == 1).all() and (self.targets >= 0).all())

    def labels(self) -> np.ndarray:
        """``N`` class indices; only for single-label data."""
        if not self.single_label:
            raise InputError(
                f"{self.source} is multi-label (or marks images difficult); this protocol needs one label "
                "per image: use ImageFolder or a label list with one label a line, or the svm protocol"
            )
        return self.targets.argmax(axis=1)


def read_classification(root: Path, split: str, classes: tuple[str, ...] | None = None) -> ClassificationSplit:
    """Reads one split in whichever image-level layout ``root`` holds (see module docstring).

    Args:
        classes: the train split's classes, to read a val split in the same order.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist; pass --data DIR")
    if (root / "ImageSets" / "Main").is_dir():
        result = _read_voc_main(root, split, classes)
    elif (root / f"{split}.txt").is_file():
        result = _read_label_list(root, split, classes)
    elif (root / split).is_dir():
        result = _read_image_folder(root, split, classes)
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


def describe_splits(root: Path, train: ClassificationSplit, val: ClassificationSplit, train_split: str, val_split: str) -> dict:
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


class ImageTensors(torch.utils.data.Dataset):
    """Image files as normalised ``3 x S x S`` tensors for frozen feature extraction.

    The shorter side is resized to ``size`` and the centre ``size x size``
    cropped (the usual evaluation transform); ``size=0`` keeps every image
    as it is.
    """

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = list(paths)
        resize = [v2.Resize(size, antialias=True), v2.CenterCrop(size)] if size else []
        self.transform = v2.Compose(
            [*resize, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[index]))


def as_list(batch: list) -> list:
    """A ``collate_fn`` that keeps the batch a list (images may differ in size)."""
    return batch


def _read_voc_main(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    main = root / "ImageSets" / "Main"
    files = sorted(main.glob(f"*_{split}.txt"))
    found = tuple(f.name[: -len(f"_{split}.txt")] for f in files)
    if not found:
        raise InputError(f"no {main}/<class>_{split}.txt file; is {split!r} the right split name?")
    classes = classes or found
    missing = [c for c in classes if c not in found]
    if missing:
        raise InputError(f"{main} has no {split} list for class(es) {', '.join(missing)}")
    ids: list[str] | None = None
    columns = []
    for c in classes:
        path = main / f"{c}_{split}.txt"
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if any(len(r) != 2 or r[1] not in ("1", "-1", "0") for r in rows):
            raise InputError(f"{path}: every line must be '<image id> <1|-1|0>'")
        these = [r[0] for r in rows]
        if ids is None:
            ids = these
        elif these != ids:
            raise InputError(f"{path} lists other images (or another order) than {main / f'{classes[0]}_{split}.txt'}")
        value = {"1": 1, "-1": 0, "0": -1}
        columns.append([value[r[1]] for r in rows])
    paths = [_voc_image(root, i) for i in ids or []]
    targets = np.array(columns, dtype=np.int8).T.reshape(len(paths), len(classes))
    return ClassificationSplit(paths, targets, tuple(classes), f"{main} ({split})")


def _read_label_list(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    path = root / f"{split}.txt"
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise InputError(f"{path} line {n}: expected '<path> <label>[,<label>...]' (no spaces in paths)")
        labels = parts[1].split(",") if len(parts) == 2 else []
        rows.append((root / parts[0], [lab for lab in labels if lab], n))
    if classes is None:
        classes = read_class_names(root / "classes.txt") if (root / "classes.txt").is_file() else tuple(
            sorted({lab for _, labels, _ in rows for lab in labels})
        )
    index = {c: k for k, c in enumerate(classes)}
    targets = np.zeros((len(rows), len(classes)), dtype=np.int8)
    for i, (image, labels, n) in enumerate(rows):
        unknown = [lab for lab in labels if lab not in index]
        if unknown:
            raise InputError(f"{path} line {n}: unknown class {unknown[0]!r}; known: {', '.join(classes)}")
        if not image.is_file():
            raise InputError(f"{path} line {n}: image {image} does not exist")
        targets[i, [index[lab] for lab in labels]] = 1
    return ClassificationSplit([r[0] for r in rows], targets, tuple(classes), str(path))


def _read_image_folder(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    folder = root / split
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = classes or tuple(found)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise InputError(f"{folder} has class folder(s) {', '.join(unknown)} that the train split lacks")
    paths, labels = [], []
    for k, c in enumerate(classes):
        if not (folder / c).is_dir():
            continue
        for image in sorted((folder / c).iterdir()):
            if image.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(image)
                labels.append(k)
    targets = np.zeros((len(paths), len(classes)), dtype=np.int8)
    targets[np.arange(len(paths)), labels] = 1
    return ClassificationSplit(paths, targets, tuple(classes), str(folder))


def _voc_image(root: Path, image_id: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png"):
        path = root / "JPEGImages" / f"{image_id}{ext}"
        if path.is_file():
            return path
    raise InputError(f"image {root / 'JPEGImages' / image_id}.jpg does not exist (listed in {root / 'ImageSets'})")


# ---------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class SegmentationSplit:
    """VOC-layout segmentation: ``load(i)`` -> (RGB image, ``H x W`` uint8 label)."""

    root: Path
    split: str
    ids: list[str]
    classes: tuple[str, ...]
    images: list[Path] = field(repr=False)
    labels: list[Path] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The image and its label map, checked: same size, values < K or 255."""
        image = open_rgb(self.images[index])
        label = read_label(self.labels[index], self.num_classes)
        if label.shape != (image.height, image.width):
            raise InputError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but image {self.images[index]} "
                f"is {image.width}x{image.height}; a mask must have its image's size"
            )
        return image, label

    def check(self, workers: int = 4) -> None:
        """Reads every label once (threads) so a bad file fails before training starts."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(self._check_one, range(len(self))))

    def _check_one(self, index: int) -> None:
        label = read_label(self.labels[index], self.num_classes)
        with Image.open(self.images[index]) as image:  # header only
            size = image.size
        if label.shape != (size[1], size[0]):
            raise InputError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but image {self.images[index]} "
                f"is {size[0]}x{size[1]}; a mask must have its image's size"
            )


def read_label(path: Path, num_classes: int) -> np.ndarray:
    """A label PNG -> ``H x W`` uint8 class indices, 255 = ignore; anything else is an error."""
    try:
        with Image.open(path) as png:
            if png.mode not in ("P", "L"):
                raise InputError(
                    f"label {path} has mode {png.mode}; it must hold one class index per pixel "
                    "(a palette or 8-bit grayscale PNG), not colours"
                )
            label = np.array(png, dtype=np.uint8)
    except OSError as e:
        raise InputError(f"cannot read label {path} ({e})") from None
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE_INDEX)])
    if bad.size:
        raise InputError(
            f"label {path} has value(s) {', '.join(map(str, bad[:5].tolist()))} but there are only {num_classes} "
            f"classes (0..{num_classes - 1}, 255 = ignore); fix the mask, classes.txt or --num-classes"
        )
    return label


def segmentation_tensors(image: Image.Image, label: np.ndarray, size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB image -> normalised ``3 x H x W`` float; label -> ``H x W`` uint8.

    ``size`` > 0 resizes the shorter side of both (image bilinear, label nearest).
    """
    y = torch.from_numpy(np.array(label, dtype=np.uint8))  # a writable copy
    if size:
        image = v2.functional.resize(image, size, antialias=True)
        y = v2.functional.resize(y[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
    x = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)
    return v2.functional.normalize(x, IMAGENET_MEAN, IMAGENET_STD), y


def read_segmentation(
    root: Path, split: str, num_classes: int | None = None, label_dir: str = "SegmentationClass"
) -> SegmentationSplit:
    """Reads a VOC-layout segmentation split; the class count from classes.txt, VOC, or ``num_classes``.

    ``label_dir`` names the folder of label PNGs (``SegmentationClassAug`` for
    the SBD-augmented VOC 2012 ``train_aug`` split).
    """
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise InputError(f"{listing} does not exist; expected the VOC layout (ImageSets/Segmentation/<split>.txt)")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise InputError(f"split {split!r} is empty: {listing} lists no image")
    if (root / "classes.txt").is_file():
        classes = read_class_names(root / "classes.txt")
    else:
        classes = VOC_CLASSES
    if num_classes is not None and num_classes != len(classes):
        classes = classes[:num_classes] if num_classes < len(classes) else tuple(
            list(classes) + [f"class{k}" for k in range(len(classes), num_classes)]
        )
    images = [_voc_image(root, i) for i in ids]
    labels = [root / label_dir / f"{i}.png" for i in ids]
    for path in labels:
        if not path.is_file():
            raise InputError(f"label {path} does not exist (listed in {listing})")
    return SegmentationSplit(root, split, ids, tuple(classes), images, labels)


# ---------------------------------------------------------------- detection


@dataclass
class CocoSplit:
    """A COCO instances file and its image folder.

    ``image_ids`` may be a subset (``--train-fraction``) or drop images without
    annotations (training); ``coco`` always holds the whole file.
    """

    images_dir: Path
    annotation_file: Path
    coco: Any  # pycocotools.coco.COCO
    image_ids: list[int]
    category_ids: list[int]  # contiguous label k (1..K) <- category_ids[k - 1]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def load(self, index: int, with_masks: bool) -> tuple[Image.Image, dict[str, np.ndarray]]:
        """Image and target: ``boxes`` M x 4 xyxy, ``labels`` M (1..K), ``masks`` M x H x W uint8.

        Crowd regions and boxes with no area are left out of training targets.
        """
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = open_rgb(self.images_dir / info["file_name"])
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        anns = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        label_of = {c: k + 1 for k, c in enumerate(self.category_ids)}
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        target = {
            "boxes": boxes.reshape(-1, 4),
            "labels": np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
        }
        if with_masks:
            with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 deprecation, harmlessly
                warnings.simplefilter("ignore", DeprecationWarning)
                masks = [self.coco.annToMask(a) for a in anns]
            target["masks"] = (
                np.stack(masks).astype(np.uint8) if masks else np.zeros((0, image.height, image.width), np.uint8)
            )
        return image, target


def read_coco(root: Path, split: str, drop_empty: bool) -> CocoSplit:
    """Reads ``root/annotations/instances_<split>.json`` and checks the images exist.

    Args:
        drop_empty: leave out images without a usable annotation (for training).
    """
    root = Path(root)
    annotation_file = root / "annotations" / f"instances_{split}.json"
    images_dir = root / split
    if not annotation_file.is_file():
        raise InputError(f"annotation file {annotation_file} does not exist; expected COCO's annotations/instances_<split>.json")
    if not images_dir.is_dir():
        raise InputError(f"image folder {images_dir} does not exist; COCO images of split {split!r} go there")
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{annotation_file} is not a COCO instances file ({type(e).__name__}: {e})") from None
    category_ids = sorted(coco.cats)
    if not category_ids:
        raise InputError(f"{annotation_file} defines no category")
    image_ids = sorted(coco.imgs)
    if drop_empty:
        image_ids = [
            i for i in image_ids
            if any(not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco.imgToAnns.get(i, []))
        ]
    if not image_ids:
        raise InputError(f"split {split!r} is empty: {annotation_file} has no image" + (" with annotations" if drop_empty else ""))
    missing = [coco.imgs[i]["file_name"] for i in image_ids if not (images_dir / coco.imgs[i]["file_name"]).is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of {annotation_file} are not in {images_dir}, e.g. {missing[0]}")
    classes = tuple(coco.cats[c].get("name", str(c)) for c in category_ids)
    return CocoSplit(images_dir, annotation_file, coco, image_ids, category_ids, classes)


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
