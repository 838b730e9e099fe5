"""The Pascal VOC layout: writer and readers.

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
- ``classes.txt``: class names in index order, background first (else the 21
  VOC classes).

Detection boxes are read into continuous pixel coordinates, as detectron2
reads them: ``(xmin - 1, ymin - 1, xmax, ymax)``, so the whole image is
``(0, 0, W, H)``. The writer writes the inverse.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.formats.labels import ClassificationSplit, read_class_names, write_class_names
from densecl.inputs.files import Pixels, image_size, probe, save_image
from densecl.inputs.files.photo import open_rgb

if TYPE_CHECKING:
    from densecl.inputs import InputSpec
    from densecl.scenes.compose import Scene

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


class VocWriter:
    """Writes scenes in the VOC layout: JPEG images, palette label PNGs, box XML, image sets, ``classes.txt``."""

    def __init__(self, out: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        for d in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "ImageSets/Main"):
            (out / d).mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, list[str]] = {s: [] for s in self.splits}
        self.present: dict[str, list[set[int]]] = {s: [] for s in self.splits}
        self.palette = palette()

    def add(self, split: str, name: str, scene: Scene) -> None:
        save_image(self.out / "JPEGImages", name, scene.image, ".jpg", quality=95)  # 16-bit or more bands: .tif
        h, w = scene.semantic.shape
        label = Image.frombytes("P", (w, h), np.ascontiguousarray(scene.semantic, dtype=np.uint8).tobytes())
        label.putpalette(self.palette)
        label.save(self.out / "SegmentationClass" / f"{name}.png")
        write_annotation(self.out / "Annotations" / f"{name}.xml", f"{name}.jpg", (w, h), scene, self.classes)
        self.ids[split].append(name)
        self.present[split].append(set(np.unique(scene.semantic).tolist()) - {0})

    def finish(self) -> None:
        write_class_names(self.out / "classes.txt", self.classes)
        for split in self.splits:
            (self.out / "ImageSets/Segmentation" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in self.ids[split])
            )
            (self.out / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in self.ids[split]))
            for k, name in enumerate(self.classes[1:], start=1):
                lines = [f"{i} {1 if k in p else -1:>2}\n" for i, p in zip(self.ids[split], self.present[split])]
                (self.out / "ImageSets/Main" / f"{name}_{split}.txt").write_text("".join(lines))


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

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int, inputs: InputSpec | None = None) -> tuple[Pixels, np.ndarray]:
        """The image (an RGB photo, or bands as ``inputs`` reads them) and its label map, checked: same size,
        values < K or 255."""
        image = inputs.read(self.images[index]) if inputs is not None else open_rgb(self.images[index])
        label = read_label(self.labels[index], self.num_classes)
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
        label = read_label(self.labels[index], self.num_classes)
        # Only the size is needed, and the header has it (load() decodes later).
        info = probe(self.images[index])
        size = (info.width, info.height)
        if label.shape != (size[1], size[0]):
            raise InputError(
                f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but image {self.images[index]} "
                f"is {size[0]}x{size[1]}; a mask must have its image's size"
            )


def read_label(path: Path, num_classes: int) -> np.ndarray:
    """A label PNG -> ``H x W`` uint8 class indices, 255 = ignore; anything else is an error."""
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
            f"classes (0..{num_classes - 1}, 255 = ignore); fix the mask, classes.txt or --num-classes"
        )
    return label


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
    return SegmentationSplit(root, split, ids, tuple(classes), images, labels)


# ---------------------------------------------------------------- boxes (detection)


def write_annotation(path: Path, filename: str, size: tuple[int, int], scene: Scene, classes: Sequence[str]) -> None:
    """``Annotations/<id>.xml`` of one scene: every visible instance's box, none of them difficult.

    Args:
        size: ``(width, height)`` of the image.
        scene: its ``boxes`` (continuous, ``x2``/``y2`` exclusive) become VOC's 1-based inclusive indices.
        classes: names by class id, background first.
    """
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = path.parent.parent.name
    ET.SubElement(annotation, "filename").text = filename
    size_element = ET.SubElement(annotation, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(size_element, tag).text = str(value)
    ET.SubElement(annotation, "segmented").text = "1"
    for (x1, y1, x2, y2), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = classes[label]
        ET.SubElement(obj, "pose").text = "Unspecified"  # detectron2's VOC evaluator reads pose and truncated
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        corners = (round(x1) + 1, round(y1) + 1, round(x2), round(y2))  # continuous -> 1-based inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(annotation)
    ET.ElementTree(annotation).write(path, encoding="utf-8")


@dataclass(frozen=True)
class VocObjects:
    """The objects of one ``Annotations/<id>.xml`` (``M`` of them).

    Attributes:
        boxes: ``M x 4`` float32 ``(x1, y1, x2, y2)`` in continuous pixel
            coordinates: ``(xmin - 1, ymin - 1, xmax, ymax)`` of the file.
        labels: ``M`` int64 class ids 1..K.
        difficult: ``M`` bool, VOC's "difficult" flag.
    """

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def read_annotation(path: Path, classes: Sequence[str]) -> VocObjects:
    """Parses one annotation file; anything unreadable is an :class:`InputError` naming ``path``.

    Args:
        classes: the object class names (no background); class id = index + 1.
    """
    if not path.is_file():
        raise InputError(f"annotation {path} does not exist; every listed image needs Annotations/<id>.xml")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(f"annotation {path} is not valid XML ({e}); fix or replace the file") from None
    boxes, labels, difficult = [], [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            known = "the 20 VOC classes" if tuple(classes) == VOC_CLASSES[1:] else "those of classes.txt"
            raise InputError(f"annotation {path} has an object of unknown class {name!r}; the classes are {known}")
        try:
            corners = [float(obj.find("bndbox").findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
            flag = int((obj.findtext("difficult") or "0").strip())
        except (AttributeError, TypeError, ValueError):
            raise InputError(
                f"annotation {path}: an object of class {name} lacks a numeric <bndbox> xmin, ymin, xmax, ymax "
                "(or its <difficult> is not 0 or 1)"
            ) from None
        xmin, ymin, xmax, ymax = corners
        if xmax < xmin or ymax < ymin:
            raise InputError(f"annotation {path}: the {name} box {corners} ends before it starts (xmax < xmin)")
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(classes.index(name) + 1)
        difficult.append(bool(flag))
    return VocObjects(
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(difficult, dtype=bool),
    )


@dataclass(frozen=True)
class VocDetectionSplit:
    """A VOC-layout detection split over one or more roots (VOC2007 and VOC2012 trainval).

    Attributes:
        roots: the roots read, in order.
        split: the image set name (``ImageSets/Main/<split>.txt``).
        classes: ``K`` object class names (no background); class id = index + 1.
        image_ids: ``<root folder name>/<id>`` of each image.
        images: the image files.
        objects: the boxes of each image.
    """

    roots: tuple[Path, ...]
    split: str
    classes: tuple[str, ...]
    image_ids: list[str]
    images: list[Path] = field(repr=False)
    objects: list[VocObjects] = field(repr=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_name(self, index: int) -> str:
        """The path of image ``index``."""
        return str(self.images[index])

    def load(
        self, index: int, with_masks: bool = False, inputs: InputSpec | None = None
    ) -> tuple[Pixels, dict[str, np.ndarray]]:
        """The image and its training target: ``boxes`` M x 4 xyxy, ``labels`` M (1..K).

        Difficult boxes are trained on, as detectron2 trains; only scoring
        leaves them out. VOC boxes have no masks.
        """
        if with_masks:
            raise InputError(f"the VOC layout of {self.roots[0]} has boxes, no instance masks; use --task box")
        objects = self.objects[index]
        image = inputs.read(self.images[index]) if inputs is not None else open_rgb(self.images[index])
        return image, {"boxes": objects.boxes.copy(), "labels": objects.labels.copy()}

    def select(self, indices: Sequence[int]) -> VocDetectionSplit:
        """The split restricted to the images at ``indices`` (a ``--train-fraction`` subset)."""
        pick = list(indices)
        return VocDetectionSplit(
            self.roots,
            self.split,
            self.classes,
            [self.image_ids[i] for i in pick],
            [self.images[i] for i in pick],
            [self.objects[i] for i in pick],
        )


def detection_classes(root: Path) -> tuple[str, ...]:
    """The object classes of a VOC root: ``classes.txt`` without its background line, else the 20 VOC classes."""
    names = read_class_names(root / "classes.txt") if (root / "classes.txt").is_file() else VOC_CLASSES
    return tuple(names[1:])


def read_voc_detection(roots: Sequence[Path], split: str, drop_empty: bool = False) -> VocDetectionSplit:
    """Reads ``ImageSets/Main/<split>.txt`` of every root, with each listed image's file and annotation.

    Every annotation is parsed here, so a bad file stops the run before any
    model is built.

    Args:
        roots: VOC roots (``VOCdevkit/VOC2007``, ``VOCdevkit/VOC2012``); all
            must have the same classes.
        drop_empty: leave out images without any box (for training, as detectron2 does).
    """
    roots = tuple(Path(r) for r in roots)
    if not roots:
        raise InputError("no VOC root given; pass --data VOCdevkit/VOC2007[,VOCdevkit/VOC2012]")
    names = [r.name for r in roots]
    if len(set(names)) < len(names):
        raise InputError(f"VOC roots {', '.join(map(str, roots))} share a folder name; image ids would collide")
    for root in roots:  # every root checked before the first annotation is parsed
        if not root.is_dir():
            raise InputError(f"VOC root {root} does not exist; pass --data with existing folders")
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise InputError(f"{listing} does not exist; is {split!r} a detection split of {root}?")
    classes = detection_classes(roots[0])
    for root in roots[1:]:
        if detection_classes(root) != classes:
            raise InputError(
                f"VOC roots {roots[0]} and {root} have different classes (classes.txt); use one class list"
            )
    image_ids, images, objects = [], [], []
    for root in roots:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        for image_id in (line.split()[0] for line in listing.read_text().splitlines() if line.strip()):
            found = read_annotation(root / "Annotations" / f"{image_id}.xml", classes)
            if drop_empty and len(found.labels) == 0:
                continue
            image_ids.append(f"{root.name}/{image_id}")
            images.append(voc_image(root, image_id))
            objects.append(found)
    if not image_ids:
        where = ", ".join(str(r / "ImageSets" / "Main" / f"{split}.txt") for r in roots)
        raise InputError(f"split {split!r} is empty: {where} list no image" + (" with a box" if drop_empty else ""))
    return VocDetectionSplit(roots, split, classes, image_ids, images, objects)
