"""The Pascal VOC layout: the files, image-level labels and segmentation.

Under ``root``:

- ``JPEGImages/<id>.jpg`` (readers also take ``.jpeg`` and ``.png``);
- ``SegmentationClass/<id>.png``: the class index of each pixel, 255 = ignore;
  a palette PNG with VOC's colour map as VOC ships and the writer writes, or
  8-bit grayscale (another folder name with ``label_dir``, e.g.
  ``SegmentationClassAug`` for the SBD-augmented ``train_aug`` split);
- ``ImageSets/Segmentation/<split>.txt``: the ids of a segmentation split;
- ``ImageSets/Main/<class>_<split>.txt``: lines ``<id> <1|-1|0>``, 1 if the
  class is in the image, -1 if not, 0 "difficult" (ignored in training and in
  AP): multi-label classification; ``ImageSets/Main/<split>.txt`` lists the ids
  of a split (detection reads this one);
- ``Annotations/<id>.xml``: the boxes of an image, one ``<object>`` each with
  ``<name>`` (a class), ``<difficult>`` (0 or 1; absent = 0) and ``<bndbox>``
  ``xmin ymin xmax ymax``: 1-based pixel indices, both ends inclusive, so a box
  covering a whole W-pixel-wide image runs from 1 to W;
- ``classes.txt``: the class names, one a line, read by the one rule of
  :mod:`densecl.formats.labels` (a first line ``background`` is the background,
  label value 0; the others are object classes); without the file, VOC's
  background and 20 object classes.

The boxes (``Annotations/``, detection) are read and written by
:mod:`densecl.formats.voc_boxes`; :mod:`densecl.formats.voc_writer` writes
scenes in the whole layout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.formats.labels import ClassificationSplit, ClassList, read_class_list
from densecl.inputs.files import Pixels, image_size, probe
from densecl.inputs.files.photo import open_rgb

if TYPE_CHECKING:
    from densecl.inputs import InputSpec

IMAGE_FILE_ENDINGS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".npy", ".dcm")
"""The endings an image of ``JPEGImages`` may have, in the order they are looked for."""

IGNORE_INDEX = 255
"""Label value of pixels that count for no class."""

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_class_list(root: Path) -> ClassList:
    """``root/classes.txt`` read by the one rule (:func:`~densecl.formats.labels.read_class_list`), else VOC's."""
    path = Path(root) / "classes.txt"
    if path.is_file():
        return read_class_list(path)
    return ClassList(VOC_CLASSES[1:], VOC_CLASSES[0], str(path), default="VOC's 20 object classes and the background")


def palette() -> list[int]:
    """VOC's colour map (bit-interleaved class index) as 768 RGB values; 255 = the ignore colour."""
    colours = []
    for k in range(256):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours += [r, g, b]
    return colours


# ---------------------------------------------------------------- image-level labels


def read_voc_classification(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    """Reads ``ImageSets/Main/<class>_<split>.txt`` of every class; ``classes`` fixes the order (a val split's)."""
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
    paths = [voc_image(root, i) for i in ids or []]
    targets = np.array(columns, dtype=np.int8).T.reshape(len(paths), len(classes))
    return ClassificationSplit(paths, targets, tuple(classes), f"{main} ({split})")


def voc_image(root: Path, image_id: str) -> Path:
    """The image file of ``image_id`` in ``root/JPEGImages`` (``.jpg``, ``.jpeg``, ``.png``, ``.tif``, ``.tiff``,
    ``.npy``, ``.dcm``: the first that exists)."""
    for ext in IMAGE_FILE_ENDINGS:
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
    values: str = ""  # which label value is which class, and why (for messages)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int, inputs: InputSpec | None = None) -> tuple[Pixels, np.ndarray]:
        """The image (an RGB photo, or bands as ``inputs`` reads them) and its label map, checked: same size,
        values < K or 255."""
        image = inputs.read(self.images[index]) if inputs is not None else open_rgb(self.images[index])
        label = read_label(self.labels[index], self.num_classes, self.values)
        width, height = image_size(image)
        if label.shape != (height, width):
            raise InputError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but image {self.images[index]} "
                f"is {width}x{height}; a mask must have its image's size"
            )
        return image, label

    def check(self, workers: int = 4) -> None:
        """Reads every label once (threads) so a bad file fails before training starts."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(self._check_one, range(len(self))))

    def _check_one(self, index: int) -> None:
        label = read_label(self.labels[index], self.num_classes, self.values)
        # Only the size is needed, and the header has it (load() decodes later).
        info = probe(self.images[index])
        size = (info.width, info.height)
        if label.shape != (size[1], size[0]):
            raise InputError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but image {self.images[index]} "
                f"is {size[0]}x{size[1]}; a mask must have its image's size"
            )


def read_label(path: Path, num_classes: int, values: str = "") -> np.ndarray:
    """A label PNG -> ``H x W`` uint8 class indices, 255 = ignore; anything else is an error.

    Args:
        values: which value is which class and why, for the message (:attr:`SegmentationSplit.values`).
    """
    # Not densecl.inputs.files.photo.open_rgb: a label holds class indices, which a conversion to RGB would turn
    # into colours.
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
            f"classes (0..{num_classes - 1}, 255 = ignore{'; ' + values if values else ''}); fix the mask, "
            "classes.txt or --num-classes"
        )
    return label


def read_segmentation(
    root: Path, split: str, num_classes: int | None = None, label_dir: str = "SegmentationClass"
) -> SegmentationSplit:
    """Reads a VOC-layout segmentation split; the classes by value from classes.txt, VOC, or ``num_classes``.

    Label value ``k`` is line ``k`` of ``classes.txt`` counted from 0, its
    background line included when it has one (:mod:`densecl.formats.labels`).

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
    listed = voc_class_list(root)
    classes, values = listed.by_value, f"{listed.values()}: {listed.rule()}"
    if num_classes is not None and num_classes != len(classes):
        values = f"--num-classes {num_classes}"
        classes = (
            classes[:num_classes]
            if num_classes < len(classes)
            else tuple(list(classes) + [f"class{k}" for k in range(len(classes), num_classes)])
        )
    images = [voc_image(root, i) for i in ids]
    labels = [root / label_dir / f"{i}.png" for i in ids]
    for path in labels:
        if not path.is_file():
            raise InputError(f"label {path} does not exist (listed in {listing})")
    return SegmentationSplit(root, split, ids, tuple(classes), images, labels, values)
