"""VOC detection read directly: ``Annotations/*.xml`` and ``ImageSets/Main/<split>.txt`` of one or more roots.

Each error case is one line naming the file, raised while reading, before any model exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from densecl.errors import InputError
from densecl.formats.voc import VOC_CLASSES, voc_class_list
from densecl.formats.voc_boxes import read_annotation, read_voc_detection

DOG_AND_DIFFICULT_PERSON = """<annotation>
  <folder>VOC2007</folder>
  <filename>000001.jpg</filename>
  <size><width>10</width><height>8</height><depth>3</depth></size>
  <object>
    <name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>8</ymax></bndbox>
  </object>
  <object>
    <name> person </name><pose>Unspecified</pose><truncated>0</truncated><difficult>1</difficult>
    <bndbox><xmin>3.5</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox>
  </object>
</annotation>
"""


def _object(name: str, box: str = "<xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax>", extra: str = "") -> str:
    return f"<annotation><object><name>{name}</name>{extra}<bndbox>{box}</bndbox></object></annotation>"


def _root(base: Path, name: str, annotations: dict[str, str], splits: dict[str, list[str]]) -> Path:
    """A VOC root holding a 10 x 8 JPEG per annotated image, the XML files and the image sets."""
    root = base / name
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    for image_id, xml in annotations.items():
        Image.new("RGB", (10, 8), (90, 120, 30)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    for split, ids in splits.items():
        (root / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_an_annotation_in_voc_conventions(tmp_path):
    path = tmp_path / "000001.xml"
    path.write_text(DOG_AND_DIFFICULT_PERSON)
    objects = read_annotation(path, voc_class_list(tmp_path))
    # 1-based inclusive (1, 1, 10, 8) on a 10 x 8 image is the whole image: (0, 0, 10, 8) continuous
    # (3.5, 2, 5, 6) -> (2.5, 1, 5, 6); names are stripped; dog is class 12, person 15 of the 20
    assert objects.boxes.tolist() == [[0, 0, 10, 8], [2.5, 1, 5, 6]]
    assert objects.labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")] == [12, 15]
    assert objects.difficult.tolist() == [False, True]
    no_flag = tmp_path / "no_flag.xml"
    no_flag.write_text(_object("cat"))  # <difficult> absent: not difficult
    assert read_annotation(no_flag, voc_class_list(tmp_path)).difficult.tolist() == [False]
    empty = tmp_path / "empty.xml"
    empty.write_text("<annotation><filename>x.jpg</filename></annotation>")
    assert read_annotation(empty, voc_class_list(tmp_path)).boxes.shape == (0, 4)


def test_two_roots_one_split_each_ids_named_by_root(tmp_path):
    voc07 = _root(tmp_path, "VOC2007", {"000001": DOG_AND_DIFFICULT_PERSON, "000002": _object("cat")}, {
        "trainval": ["000001", "000002"], "test": ["000002"]})  # fmt: skip
    voc12 = _root(tmp_path, "VOC2012", {"2008_000003": _object("bus"), "2008_000004": "<annotation/>"}, {
        "trainval": ["2008_000003", "2008_000004"]})  # fmt: skip
    train = read_voc_detection([voc07, voc12], "trainval", drop_empty=True)
    assert train.image_ids == ["VOC2007/000001", "VOC2007/000002", "VOC2012/2008_000003"]  # the empty one dropped
    assert train.images[2] == voc12 / "JPEGImages" / "2008_000003.jpg"
    assert train.classes == VOC_CLASSES[1:] and train.num_classes == 20
    _, target = train.load(0)
    assert target["labels"].tolist() == [12, 15]  # difficult boxes are trained on (detectron2 does)
    assert len(read_voc_detection([voc07, voc12], "trainval")) == 4
    assert train.select([2, 0]).image_ids == ["VOC2012/2008_000003", "VOC2007/000001"]
    with pytest.raises(InputError, match="no instance masks"):
        train.load(0, with_masks=True)


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<annotation><object><name>dog</name>", "is not valid XML"),
        (_object("unicorn"), "unknown class 'unicorn'; there is no .*classes.txt, so the classes are VOC's 20 object"),
        (_object("dog", "<xmin>1</xmin><ymin>1</ymin><xmax>4</xmax>"), "lacks a numeric <bndbox>"),
        (_object("dog", "<xmin>a</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax>"), "lacks a numeric <bndbox>"),
        (_object("dog", "<xmin>5</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax>"), "ends before it starts"),
        (_object("dog", extra="<difficult>yes</difficult>"), "<difficult> is not 0 or 1"),
    ],
)
def test_a_bad_annotation_is_one_line_naming_the_file(tmp_path, xml, message):
    root = _root(tmp_path, "VOC2007", {"000001": xml}, {"test": ["000001"]})
    with pytest.raises(InputError, match=message) as error:
        read_voc_detection([root], "test")
    assert str(root / "Annotations" / "000001.xml") in str(error.value) and "\n" not in str(error.value)


def test_missing_files_name_what_is_missing(tmp_path):
    root = _root(tmp_path, "VOC2007", {"000001": _object("dog")}, {"test": ["000001", "000009"]})
    with pytest.raises(InputError, match=r"annotation .*000009\.xml does not exist"):
        read_voc_detection([root], "test")
    (root / "Annotations" / "000009.xml").write_text(_object("cat"))
    with pytest.raises(InputError, match=r"image .*JPEGImages/000009\.jpg does not exist"):
        read_voc_detection([root], "test")
    with pytest.raises(InputError, match=r"ImageSets/Main/val\.txt does not exist"):
        read_voc_detection([root], "val")
    with pytest.raises(InputError, match="VOC root .*VOC2012 does not exist"):
        read_voc_detection([root, tmp_path / "VOC2012"], "test")
    (root / "ImageSets/Main/empty.txt").write_text("\n")
    with pytest.raises(InputError, match="split 'empty' is empty"):
        read_voc_detection([root], "empty")


def test_roots_must_agree_on_their_classes(tmp_path):
    a = _root(tmp_path, "a", {"1": _object("cat")}, {"train": ["1"]})
    b = _root(tmp_path, "b", {"2": _object("cat")}, {"train": ["2"]})
    (b / "classes.txt").write_text("background\ncat\nhat\n")
    with pytest.raises(InputError, match="have different object classes"):
        read_voc_detection([a, b], "train")
    (a / "classes.txt").write_text("background\ncat\nhat\n")
    assert read_voc_detection([a, b], "train").classes == ("cat", "hat")
    (b / "Annotations" / "2.xml").write_text(_object("dog"))
    with pytest.raises(InputError, match=r"unknown class 'dog'; .*classes.txt lists 2 object classes \(its first line"):
        read_voc_detection([a, b], "train")
