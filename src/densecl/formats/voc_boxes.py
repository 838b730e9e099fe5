"""VOC boxes: ``Annotations/<id>.xml`` read and written, and detection splits over one or more roots.

Detection boxes are read into continuous pixel coordinates, as detectron2
reads them: ``(xmin - 1, ymin - 1, xmax, ymax)``, so the whole image is
``(0, 0, W, H)``. The writer writes the inverse. :mod:`densecl.formats.voc`
describes the rest of the layout.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from densecl.errors import InputError
from densecl.formats.labels import ClassList
from densecl.formats.voc import voc_class_list, voc_image
from densecl.inputs.files import Pixels
from densecl.inputs.files.photo import open_rgb

if TYPE_CHECKING:
    from densecl.inputs import InputSpec
    from densecl.scenes.compose import Scene


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
        year: the VOC year the file's ``<folder>`` names (``VOC2007`` -> 2007), or None.
    """

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    year: int | None = None


def voc_year(folder: str) -> int | None:
    """The year of a ``<folder>`` tag as VOC writes it (``VOC2007``, ``VOC2012``); None for anything else."""
    found = re.fullmatch(r"VOC(\d{4})", folder.strip(), flags=re.IGNORECASE)
    return int(found.group(1)) if found else None


def read_annotation(path: Path, classes: ClassList) -> VocObjects:
    """Parses one annotation file; anything unreadable is an :class:`InputError` naming ``path``.

    Args:
        classes: the root's class list; object class id = index in ``classes.objects`` + 1.
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
        if name not in classes.objects:
            raise InputError(f"annotation {path} has an object of unknown class {name!r}; {classes.rule()}")
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
        labels.append(classes.objects.index(name) + 1)
        difficult.append(bool(flag))
    return VocObjects(
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(difficult, dtype=bool),
        year=voc_year(root.findtext("folder") or ""),
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

    def years(self) -> dict[int, int]:
        """``{year: images}`` over the years the annotations' ``<folder>`` tags name (none for other folders)."""
        counts: dict[int, int] = {}
        for objects in self.objects:
            if objects.year is not None:
                counts[objects.year] = counts.get(objects.year, 0) + 1
        return counts

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
    classes = voc_class_list(roots[0])
    for root in roots[1:]:
        other = voc_class_list(root)
        if other.objects != classes.objects:
            raise InputError(
                f"VOC roots {roots[0]} and {root} have different object classes ({classes.rule()}; {other.rule()}); "
                "use one class list"
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
    return VocDetectionSplit(roots, split, classes.objects, image_ids, images, objects)
