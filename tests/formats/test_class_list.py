"""``classes.txt`` means one thing in every reader: a first line ``background`` is the background, never a class.

Detection (VOC boxes), segmentation (VOC masks) and image-level label lists read
the same file the same way, and every error about a class name says how the
file was read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecl.errors import InputError
from densecl.formats.labels import ClassList, read_class_list, read_label_list, write_class_list
from densecl.formats.voc import read_segmentation
from densecl.formats.voc_boxes import read_voc_detection


def _box(name: str) -> str:
    box = "<xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax>"
    return f"<annotation><object><name>{name}</name><bndbox>{box}</bndbox></object></annotation>"


def _voc(root: Path, classes: str, names: list[str], mask_values: list[int]) -> Path:
    """A VOC root of one 8 x 8 image per name: a box of that class, and a mask filled with the matching value."""
    for d in ("JPEGImages", "Annotations", "ImageSets/Main", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes)
    ids = []
    for i, (name, value) in enumerate(zip(names, mask_values)):
        Image.new("RGB", (8, 8)).save(root / "JPEGImages" / f"{i}.jpg")
        (root / "Annotations" / f"{i}.xml").write_text(_box(name))
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(root / "SegmentationClass" / f"{i}.png")
        ids.append(str(i))
    for listing in ("ImageSets/Main/train.txt", "ImageSets/Segmentation/train.txt"):
        (root / listing).write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.mark.parametrize("first", ["background", "__background__"])
def test_a_background_first_line_is_the_background_everywhere(tmp_path, first):
    root = _voc(tmp_path, f"{first}\ncat\nhat\n", ["cat", "hat"], [1, 2])
    boxes = read_voc_detection([root], "train")
    assert boxes.classes == ("cat", "hat")  # detection: object classes 1..2, the background line is not one
    assert [o.labels.tolist() for o in boxes.objects] == [[1], [2]]
    masks = read_segmentation(root, "train")
    assert masks.classes == (first, "cat", "hat")  # segmentation: value 0 is the background, cat 1, hat 2
    assert np.array_equal(masks.load(1)[1], np.full((8, 8), 2))


def test_without_a_background_line_every_line_is_an_object_class(tmp_path):
    # Cityscapes' train ids: value 0 is the first class, and detection keeps the first line as class 1
    root = _voc(tmp_path, "cat\nhat\n", ["cat", "hat"], [0, 1])
    boxes = read_voc_detection([root], "train")
    assert boxes.classes == ("cat", "hat") and [o.labels.tolist() for o in boxes.objects] == [[1], [2]]
    assert read_segmentation(root, "train").classes == ("cat", "hat")


def test_a_label_list_leaves_the_background_line_out(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    (tmp_path / "train.txt").write_text("a.png dog\n")
    split = read_label_list(tmp_path, "train", None)
    assert split.classes == ("cat", "dog") and split.targets.tolist() == [[0, 1]]
    (tmp_path / "train.txt").write_text("a.png background\n")
    with pytest.raises(InputError) as error:
        read_label_list(tmp_path, "train", None)
    assert str(error.value) == (
        f"{tmp_path / 'train.txt'} line 1: unknown class 'background'; {tmp_path / 'classes.txt'} lists 2 object "
        "classes (its first line 'background' is the background)"
    )


def test_an_unknown_box_class_says_how_classes_txt_was_read(tmp_path):
    root = _voc(tmp_path / "a", "background\ncat\nhat\n", ["car"], [0])
    with pytest.raises(InputError) as error:
        read_voc_detection([root], "train")
    assert str(error.value) == (
        f"annotation {root / 'Annotations' / '0.xml'} has an object of unknown class 'car'; "
        f"{root / 'classes.txt'} lists 2 object classes (its first line 'background' is the background)"
    )
    root = _voc(tmp_path / "b", "cat\nhat\nbus\n", ["car"], [0])
    with pytest.raises(InputError, match=r"lists 3 object classes and no background line \(every line is an object"):
        read_voc_detection([root], "train")


def test_a_mask_value_past_the_classes_says_which_value_is_which(tmp_path):
    root = _voc(tmp_path, "background\ncat\nhat\n", ["cat"], [3])
    with pytest.raises(InputError) as error:
        read_segmentation(root, "train").load(0)
    assert "has value(s) 3 but there are only 3 classes (0..2, 255 = ignore; 0 = 'background', 1..2 = the " in str(
        error.value
    )
    assert "(its first line 'background' is the background)" in str(error.value)
    (root / "classes.txt").write_text("cat\nhat\n")
    with pytest.raises(InputError, match=r"0..1 = the object classes, no background: .* no background line"):
        read_segmentation(root, "train").load(0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat\nbackground\n", "names 'background' after its first line; the background may only be the first line"),
        ("background\n", "lists only the background"),
        ("\n\n", "lists no class"),
        ("background\ncat\ncat\n", "lists a class twice"),
    ],
)
def test_a_classes_txt_with_no_single_reading_is_refused(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(InputError, match=message):
        read_class_list(tmp_path / "classes.txt")


def test_written_and_read_back(tmp_path):
    classes = ClassList(("cat", "hat"), "background", "classes.txt")
    write_class_list(tmp_path / "classes.txt", classes)
    assert (tmp_path / "classes.txt").read_text() == "background\ncat\nhat\n"
    back = read_class_list(tmp_path / "classes.txt")
    assert (back.objects, back.background, back.by_value) == (
        ("cat", "hat"),
        "background",
        ("background", "cat", "hat"),
    )
