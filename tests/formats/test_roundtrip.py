"""Each layout's writer against its reader: a tiny hand-made split written, read back, compared.

Two scenes with known content (classes ``background, cat, dog``):

- ``a`` (train, 6 x 8): a dog (id 2) at rows 1-2, cols 1-3 (6 pixels) and a cat
  (id 1) at rows 3-5, cols 5-7 (9 pixels): boxes (1, 1, 4, 3) and (5, 3, 8, 6),
  dominant class cat;
- ``b`` (val, 6 x 8): a dog at rows 0-1, cols 0-1: box (0, 0, 2, 2).

Run: ``.venv/bin/python -m pytest tests/formats/test_roundtrip.py``
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from densecl.formats import FORMATS, open_writer
from densecl.formats.coco import coco_image_paths, read_coco
from densecl.formats.imagefolder import read_image_folder
from densecl.formats.labels import read_class_list
from densecl.formats.voc import palette, read_segmentation, read_voc_classification
from densecl.formats.voc_boxes import read_voc_detection
from densecl.scenes.compose import Scene

CLASSES = ("background", "cat", "dog")
SPLITS = ("train", "val")


def _scene(objects: list[tuple[int, slice, slice]], seed: int) -> Scene:
    """A 6 x 8 scene of ``(class id, rows, cols)`` rectangles, bottom to top, on a smooth colour ramp."""
    instances = np.zeros((6, 8), dtype=np.int32)
    for m, (_, rows, cols) in enumerate(objects, start=1):
        instances[rows, cols] = m
    labels = np.array([label for label, _, _ in objects], dtype=np.int64)
    boxes = np.array([[c.start, r.start, c.stop, r.stop] for _, r, c in objects], dtype=np.float32)
    y, x = np.mgrid[0:6, 0:8]
    image = np.stack([20 * x + 40 * seed, 30 * y, np.full_like(x, 100)], axis=2).astype(np.uint8)  # smooth
    semantic = np.concatenate([[0], labels]).astype(np.uint8)[instances]
    return Scene(image=image, semantic=semantic, instances=instances, boxes=boxes, labels=labels)


A = _scene([(2, slice(1, 3), slice(1, 4)), (1, slice(3, 6), slice(5, 8))], seed=0)
B = _scene([(2, slice(0, 2), slice(0, 2))], seed=1)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``{format: root}``: A in train, B in val, written by each layout's writer."""
    roots = {}
    for fmt in FORMATS:
        roots[fmt] = tmp_path_factory.mktemp(fmt)
        writer = open_writer(fmt, roots[fmt], CLASSES, SPLITS)
        writer.add("train", "a", A)
        writer.add("val", "b", B)
        writer.finish()
    return roots


def test_voc_image_level_labels_and_class_list(written) -> None:
    root = written["voc"]
    assert read_class_list(root / "classes.txt").by_value == CLASSES
    train = read_voc_classification(root, "train", None)
    assert train.classes == ("cat", "dog")
    assert train.paths == [root / "JPEGImages" / "a.jpg"]
    assert train.targets.tolist() == [[1, 1]]
    val = read_voc_classification(root, "val", train.classes)
    assert val.targets.tolist() == [[0, 1]]  # no cat in b: -1 in the file, 0 as a target
    assert (root / "ImageSets/Main/cat_val.txt").read_text() == "b -1\n"


def test_voc_segmentation_labels_come_back_exactly_as_a_palette_png(written) -> None:
    root = written["voc"]
    split = read_segmentation(root, "train")
    assert (split.ids, split.classes) == (["a"], CLASSES)
    image, label = split.load(0)
    np.testing.assert_array_equal(label, A.semantic)
    assert image.size == (8, 6) and np.abs(np.asarray(image, dtype=int) - A.image).mean() < 8  # JPEG: close, not exact
    with Image.open(root / "SegmentationClass" / "a.png") as png:
        assert png.mode == "P"
        assert png.getpalette()[3:9] == [128, 0, 0, 0, 128, 0]  # VOC's colours of classes 1 and 2
    split.check(workers=1)


def test_voc_boxes_are_written_1_based_inclusive_and_read_back_continuous(written) -> None:
    root = written["voc"]
    xml = (root / "Annotations" / "a.xml").read_text()
    # the dog of A covers pixel columns 1..3 and rows 1..2 (0-based): VOC's 1-based inclusive 2..4 and 2..3
    assert "<xmin>2</xmin>" in xml and "<xmax>4</xmax>" in xml and "<ymin>2</ymin>" in xml and "<ymax>3</ymax>" in xml
    assert "<name>dog</name>" in xml and "<difficult>0</difficult>" in xml and "<width>8</width>" in xml
    train = read_voc_detection([root], "train")
    assert (train.classes, train.image_ids, train.images) == (
        ("cat", "dog"),
        [f"{root.name}/a"],
        [root / "JPEGImages/a.jpg"],
    )
    image, target = train.load(0)
    assert image.size == (8, 6)
    assert target["boxes"].tolist() == A.boxes.tolist() and target["labels"].tolist() == A.labels.tolist()
    assert train.objects[0].difficult.tolist() == [False, False]
    assert (root / "ImageSets/Main/val.txt").read_text() == "b\n"
    assert read_voc_detection([root], "val").objects[0].boxes.tolist() == [[0, 0, 2, 2]]


def test_voc_palette_is_the_bit_interleaved_colour_map() -> None:
    colours = palette()
    assert len(colours) == 768
    assert colours[:3] == [0, 0, 0] and colours[15 * 3 : 16 * 3] == [192, 128, 128]  # VOC's "person"
    assert colours[255 * 3 :] == [224, 224, 192]  # the ignore colour


def test_coco_boxes_labels_masks_and_class_names(written) -> None:
    root = written["coco"]
    train = read_coco(root, "train", drop_empty=False)
    assert (train.classes, train.category_ids, len(train)) == (("cat", "dog"), [1, 2], 1)
    image, target = train.load(0, with_masks=True)
    np.testing.assert_array_equal(np.asarray(image), A.image)  # PNG: exact
    assert target["boxes"].tolist() == [[1, 1, 4, 3], [5, 3, 8, 6]]
    assert target["labels"].tolist() == [2, 1]
    np.testing.assert_array_equal(target["masks"], np.stack([A.instances == 1, A.instances == 2]).astype(np.uint8))
    val = read_coco(root, "val", drop_empty=True)
    assert val.load(0, with_masks=False)[1]["boxes"].tolist() == [[0, 0, 2, 2]]
    assert coco_image_paths(root / "annotations" / "instances_val.json") == [root / "val" / "b.png"]


def test_imagefolder_files_each_scene_under_its_dominant_class(written) -> None:
    root = written["imagefolder"]
    train = read_image_folder(root, "train", None)
    assert train.classes == ("cat", "dog")  # every class folder exists, empty or not
    assert train.paths == [root / "train" / "cat" / "a.png"]  # 9 cat pixels beat 6 dog pixels
    assert train.labels().tolist() == [0]
    np.testing.assert_array_equal(np.asarray(Image.open(train.paths[0])), A.image)
    val = read_image_folder(root, "val", train.classes)
    assert (val.paths, val.labels().tolist()) == ([root / "val" / "dog" / "b.png"], [1])
