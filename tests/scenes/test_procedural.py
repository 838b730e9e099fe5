"""Tests of the embedded ``scenes`` data set against facts checkable by hand.

Run: ``.venv/bin/python -m pytest tests/scenes/test_procedural.py``
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from densecl.scenes import CLASSES, MIN_VISIBLE_PIXELS, Scene, ScenesDataset, render_scene
from densecl.scenes import procedural as scenes
from densecl.scenes.export import export_scenes

N_SCENES = 200


@pytest.fixture(scope="module")
def many() -> list[Scene]:
    """Scenes 0..199 of seed 0 at the default 128 px, 4 objects at most."""
    return [render_scene(i) for i in range(N_SCENES)]


def _assert_same(a: Scene, b: Scene) -> None:
    for field in ("image", "semantic", "instances", "boxes", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_classes_start_with_background_and_name_eight_shapes() -> None:
    assert CLASSES[0] == "background"
    assert len(CLASSES) == 9 and len(set(CLASSES)) == 9
    assert {"disc", "square", "triangle", "star", "ring", "cross"} <= set(CLASSES)


def test_same_arguments_give_identical_scenes_in_any_call_order() -> None:
    first = render_scene(7, seed=3)
    render_scene(2, seed=3)
    render_scene(7, seed=4)
    _assert_same(first, render_scene(7, seed=3))


def test_other_seed_or_index_gives_another_image() -> None:
    base = render_scene(5, seed=0).image
    assert not np.array_equal(base, render_scene(5, seed=1).image)
    assert not np.array_equal(base, render_scene(6, seed=0).image)


@pytest.mark.parametrize("size", [32, 128, 224])
def test_dtypes_and_shapes(size: int) -> None:
    scene = render_scene(11, size=size)
    m = len(scene.labels)
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert scene.semantic.shape == (size, size) and scene.semantic.dtype == np.uint8
    assert scene.instances.shape == (size, size) and scene.instances.dtype == np.int32
    assert scene.boxes.shape == (m, 4) and scene.boxes.dtype == np.float32
    assert scene.labels.shape == (m,) and scene.labels.dtype == np.int64


def test_object_count_and_labels_are_in_range(many: list[Scene]) -> None:
    counts = [len(s.labels) for s in many]
    assert min(counts) >= 1 and max(counts) == 4
    for s in many:
        assert s.labels.min() >= 1 and s.labels.max() <= len(CLASSES) - 1


def test_max_objects_one_gives_exactly_one_object() -> None:
    for i in range(20):
        assert len(render_scene(i, max_objects=1).labels) == 1


def test_instance_ids_are_consecutive_and_each_has_visible_pixels(many: list[Scene]) -> None:
    for s in many:
        m = len(s.labels)
        assert set(np.unique(s.instances).tolist()) - {0} == set(range(1, m + 1))
        sizes = np.bincount(s.instances.ravel(), minlength=m + 1)[1:]
        assert (sizes >= MIN_VISIBLE_PIXELS).all()


def test_semantic_is_labels_painted_through_instances(many: list[Scene]) -> None:
    for s in many:
        assert (s.semantic[s.instances == 0] == 0).all()
        for i, label in enumerate(s.labels, start=1):
            assert (s.semantic[s.instances == i] == label).all()


def test_each_box_is_the_bounding_box_of_its_pixels(many: list[Scene]) -> None:
    for s in many:
        for i, box in enumerate(s.boxes, start=1):
            ys, xs = np.nonzero(s.instances == i)
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(box, np.array(expected, dtype=np.float32))


def test_every_class_appears_and_is_visible(many: list[Scene]) -> None:
    labelled = set(np.concatenate([s.labels for s in many]).tolist())
    painted = set(np.concatenate([np.unique(s.semantic) for s in many]).tolist())
    assert labelled == set(range(1, len(CLASSES)))
    assert painted == set(range(len(CLASSES)))


def test_images_are_textured_and_objects_stand_out(many: list[Scene]) -> None:
    gaps = []
    for s in many[:50]:
        assert s.image.std() > 10  # not a flat image
        on = s.instances > 0
        if on.all():
            continue
        gaps.append(np.abs(s.image[on].mean(axis=0) - s.image[~on].mean(axis=0)).max())
    # The mean colour of object pixels differs from that of background pixels
    # by more than 10 of 255 levels in at least 90% of scenes.
    assert np.mean(np.array(gaps) > 10) >= 0.9


# Points (u, v) in the shapes' unit coordinates, one inside and one outside each
# shape, worked out from the definitions (vertex angles and radii) in procedural.py.
_INSIDE_OUTSIDE = {
    "disc": ((0.0, 0.0), (0.75, 0.75)),  # radius 1; |(0.75, 0.75)| = 1.06
    "square": ((0.75, 0.75), (0.85, 0.0)),  # half side 0.8
    "triangle": ((0.0, -1.0), (0.0, 0.6)),  # apex (0, -1.1), base at v = 0.55
    # tip (0, -1.1); the notch next to it is at radius 0.45, angle -0.3 pi
    "star": ((0.0, -1.0), (0.6 * math.cos(-0.3 * math.pi), 0.6 * math.sin(-0.3 * math.pi))),
    "ring": ((0.72, 0.0), (0.0, 0.0)),  # radii 0.44..1.0
    "cross": ((0.9, 0.0), (0.6, 0.6)),  # arms 1.0 long, 0.32 half wide
    "hexagon": ((0.95, 0.0), (0.0, 0.9)),  # vertex (1, 0), apothem 0.866
    "crescent": ((-0.8, 0.0), (0.0, 0.0)),  # disc minus disc of radius 0.8 at (0.5, 0)
}


@pytest.mark.parametrize("name", CLASSES[1:])
def test_shape_signed_distance_sign(name: str) -> None:
    shape = scenes._SHAPES[CLASSES.index(name) - 1]
    (ui, vi), (uo, vo) = _INSIDE_OUTSIDE[name]
    assert shape(np.float32([ui]), np.float32([vi]))[0] < 0
    assert shape(np.float32([uo]), np.float32([vo]))[0] > 0


def test_disc_and_ring_distances_are_exact() -> None:
    u, v = np.float32([0.0, 2.0, 0.6]), np.float32([0.0, 0.0, 0.8])  # radii 0, 2, 1
    np.testing.assert_allclose(scenes._SHAPES[0](u, v), [-1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(scenes._SHAPES[4](u, v), [0.44, 1.0, 0.0], atol=1e-6)


def test_dataset_is_a_sequence_of_scenes() -> None:
    data = ScenesDataset(length=3, seed=2, size=64, max_objects=2)
    assert len(data) == 3
    _assert_same(data[1], render_scene(1, seed=2, size=64, max_objects=2))
    _assert_same(data[-1], data[2])
    assert len(list(data)) == 3
    with pytest.raises(IndexError):
        data[3]
    image = data.image(0)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image), data[0].image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 31}, "size"), ({"max_objects": 0}, "max_objects"), ({"seed": -1}, "seed")],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_scene(0, **kwargs)
    with pytest.raises(ValueError, match=message):
        ScenesDataset(**kwargs)


def test_negative_index_and_length_raise_value_error() -> None:
    with pytest.raises(ValueError, match="index"):
        render_scene(-1)
    with pytest.raises(ValueError, match="length"):
        ScenesDataset(length=-1)


# Recorded from the generator before it moved onto the shared composition core (then one digest over all
# parts; per part since, so that a failure names what changed): the same arguments keep giving the same arrays
# and the same files.
@pytest.mark.parametrize(
    "index, seed, size, max_objects, expected",
    [
        (0, 0, 128, 4, {"image": "51f244c06eb8", "semantic": "eaa9ed9f060d", "instances": "06515c6727f2",
                        "boxes": "534262e20b9c", "labels": "540eea4f0127"}),
        (7, 3, 64, 6, {"image": "795b4171028f", "semantic": "3f696ec18f6e", "instances": "00da104cc2c6",
                       "boxes": "4abfac710062", "labels": "01b0579ab8cf"}),
        (11, 1, 224, 1, {"image": "1c2f2ed47be2", "semantic": "caa3f625f766", "instances": "0ee38f03b8c3",
                         "boxes": "6af9a0884c6f", "labels": "7c9fa136d441"}),
    ],
)  # fmt: skip
def test_scenes_are_unchanged_from_the_recorded_digests(index, seed, size, max_objects, expected, scene_digest) -> None:
    assert scene_digest(render_scene(index, seed=seed, size=size, max_objects=max_objects)) == expected


EXPORTED = {
    "voc": {
        "Annotations": "e07b80676889",
        "ImageSets": "72aadda4afab",
        "JPEGImages": "ac67486778e1",
        "SegmentationClass": "ad4cc462da95",
        "classes.txt": "ec6a6292f3b0",
        "scenes.json": "fb7b2953672d",
    },
    "coco": {
        "annotations": "ca7f5d1f98b2",
        "scenes.json": "77b61f6b4f6b",
        "train": "1e80601e617d",
        "val": "37fbfeedf000",
    },
    "imagefolder": {"scenes.json": "35da7da3a8bf", "train": "b47c20b3681e", "val": "a5a70d142fae"},
}  # fmt: skip (VOC's box XML, Annotations/, came later than the rest)


@pytest.mark.parametrize("fmt", list(EXPORTED))
def test_exported_files_are_byte_identical_to_the_recorded_digests(fmt, tmp_path, tree_digest) -> None:
    export_scenes(tmp_path / fmt, fmt, n_train=3, n_val=2, size=48, seed=1)
    assert tree_digest(tmp_path / fmt) == EXPORTED[fmt]
