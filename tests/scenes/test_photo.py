"""Tests of the cut-and-paste photo scenes on tiny synthetic assets.

The cut-outs are flat-coloured shapes with soft transparent surroundings (discs
red, squares blue, triangles green) and the backgrounds grey noise, so the
colour under a mask tells which cut-out was pasted there.

Run: ``.venv/bin/python -m pytest tests/scenes/test_photo.py``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecl.cli import main
from densecl.errors import InputError
from densecl.evaluation.datasets import read_classification, read_coco, read_segmentation
from densecl.inputs.sources import image_source
from densecl.scenes import MIN_VISIBLE_PIXELS, Scene
from densecl.scenes.export_photo import export_photo_scenes
from densecl.scenes.photo import PHOTO_SPLITS, PhotoSceneComposer, load_assets, split_counts

COLOURS = {"disc": (0, 220, 30, 30), "square": (2, 30, 30, 220), "triangle": (1, 30, 220, 30)}  # dominant channel, RGB
SIZE = 64


def _shape(kind: str, side: int) -> np.ndarray:
    """``side x side`` alpha in [0, 1] of a centred shape with a 1-pixel soft edge and transparent corners."""
    y, x = np.mgrid[0:side, 0:side] + 0.5 - side / 2
    r = 0.4 * side
    if kind == "disc":
        d = np.hypot(x, y) - r
    elif kind == "square":
        d = np.maximum(np.abs(x), np.abs(y)) - 0.8 * r
    else:  # a triangle pointing up
        d = np.maximum(y - 0.6 * r, np.abs(x) * 1.7 + y * 0.85 - 1.1 * r)
    return np.clip(0.5 - d, 0.0, 1.0)


def _cutout(path: Path, kind: str, side: int) -> None:
    rgba = np.zeros((side, side, 4), dtype=np.uint8)
    rgba[:, :, :3] = COLOURS[kind][1:]
    rgba[:, :, 3] = np.rint(255 * _shape(kind, side))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)


def _background(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(90, 170) + rng.normal(0, 8, (48, 80, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.repeat(grey, 3, axis=2), 0, 255).astype(np.uint8)).save(path)


def _assets(root: Path, per_class: int = 4, n_backgrounds: int = 6) -> tuple[Path, Path]:
    for kind in COLOURS:
        for k in range(per_class):
            _cutout(root / "objects" / kind / f"{kind}{k}.png", kind, 24 + 6 * k)
    (root / "objects" / "disc" / "notes.txt").write_text("not an image")
    for k in range(n_backgrounds):
        _background(root / "backgrounds" / f"photo{k}.png", k)
    return root / "objects", root / "backgrounds"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> tuple[Path, Path]:
    return _assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def composer(assets) -> PhotoSceneComposer:
    return PhotoSceneComposer(load_assets(*assets), size=SIZE, max_objects=4, seed=0)


@pytest.fixture(scope="module")
def exported(assets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "photo"
    assert (
        main(
            [
                "data",
                "scenes",
                "--objects",
                str(assets[0]),
                "--backgrounds",
                str(assets[1]),
                "--out",
                str(out),
                "--n",
                "15",
                "--size",
                str(SIZE),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return out


def _assert_labels_consistent(scene: Scene) -> None:
    m = len(scene.labels)
    assert m >= 1
    assert set(np.unique(scene.instances).tolist()) <= set(range(m + 1))
    np.testing.assert_array_equal(scene.semantic, np.concatenate([[0], scene.labels])[scene.instances])
    for k in range(1, m + 1):
        ys, xs = np.nonzero(scene.instances == k)
        assert len(ys) >= MIN_VISIBLE_PIXELS
        np.testing.assert_array_equal(scene.boxes[k - 1], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


# ---------------------------------------------------------------- assets and splits


def test_every_cutout_and_background_is_in_exactly_one_split_stratified_per_class(assets) -> None:
    found = load_assets(*assets)
    assert found.classes == ("background", "disc", "square", "triangle")
    cutouts = [c.name for s in PHOTO_SPLITS for c in found.cutouts[s]]
    assert sorted(cutouts) == sorted(f"{kind}/{kind}{k}.png" for kind in COLOURS for k in range(4))
    for split in PHOTO_SPLITS:  # every class in every split
        assert {c.label for c in found.cutouts[split]} == {1, 2, 3}
        for c in found.cutouts[split]:
            assert c.name.startswith(found.classes[c.label] + "/")
    backgrounds = [b.name for s in PHOTO_SPLITS for b in found.backgrounds[s]]
    assert sorted(backgrounds) == [f"photo{k}.png" for k in range(6)]
    assert all(found.backgrounds[s] for s in PHOTO_SPLITS)
    assert found.skipped == ()  # notes.txt is not an image file; nothing to warn about


def test_split_depends_on_file_names_only(assets, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(assets[0].parent, copy)
    a, b = load_assets(*assets), load_assets(copy / "objects", copy / "backgrounds")
    for split in PHOTO_SPLITS:
        assert [c.name for c in a.cutouts[split]] == [c.name for c in b.cutouts[split]]
        assert [p.name for p in a.backgrounds[split]] == [p.name for p in b.backgrounds[split]]


@pytest.mark.parametrize("n, expected", [(3, (1, 1, 1)), (5, (3, 1, 1)), (10, (6, 2, 2)), (2000, (1200, 400, 400))])
def test_split_counts(n: int, expected: tuple[int, int, int]) -> None:
    assert tuple(split_counts(n)[s] for s in PHOTO_SPLITS) == expected


def test_backgrounds_folder_with_split_subfolders_is_used_as_given(assets, tmp_path) -> None:
    for k, split in enumerate(("train", "train", "val", "test")):
        _background(tmp_path / split / f"b{k}.png", k)
    found = load_assets(assets[0], tmp_path)
    assert {s: [b.name for b in found.backgrounds[s]] for s in PHOTO_SPLITS} == {
        "train": ["train/b0.png", "train/b1.png"],
        "val": ["val/b2.png"],
        "test": ["test/b3.png"],
    }


# ---------------------------------------------------------------- composition


def test_masks_boxes_and_provenance_agree(composer) -> None:
    assets = composer.assets
    for split in PHOTO_SPLITS:
        names = {c.name: c.label for c in assets.cutouts[split]}
        for index in range(8):
            composed = composer.compose(split, index)
            scene = composed.scene
            assert scene.image.shape == (SIZE, SIZE, 3) and scene.image.dtype == np.uint8
            assert scene.instances.dtype == np.int32 and scene.semantic.dtype == np.uint8
            _assert_labels_consistent(scene)
            assert composed.background in {b.name for b in assets.backgrounds[split]}
            assert len(composed.cutouts) == len(scene.labels)
            for name, label in zip(composed.cutouts, scene.labels):
                assert names[name] == label  # a cut-out of this split, of the labelled class


def test_pixels_under_each_mask_show_its_cutout(composer) -> None:
    """The flat colour of the pasted cut-out dominates the pixels of its mask (masks are not shifted)."""
    checked = 0
    for index in range(20):
        scene = composer.compose("train", index).scene
        for k, label in enumerate(scene.labels, start=1):
            colour = scene.image[scene.instances == k].astype(np.float64).mean(axis=0)  # 3
            dominant = COLOURS[composer.assets.classes[label]][0]
            assert colour.argmax() == dominant, (index, k, colour)
            checked += 1
    assert checked >= 20


def test_occlusion_and_partial_visibility_happen(composer) -> None:
    """Some instances are partly hidden: fewer visible pixels than an unoccluded paste would have."""
    scenes = [composer.compose("train", i).scene for i in range(30)]
    assert any(len(s.labels) >= 3 for s in scenes)
    overlapping = 0
    for s in scenes:
        for a in range(len(s.boxes)):
            for b in range(a + 1, len(s.boxes)):
                (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = s.boxes[a], s.boxes[b]
                overlapping += min(ax2, bx2) > max(ax1, bx1) and min(ay2, by2) > max(ay1, by1)
    assert overlapping >= 3


def test_same_seed_same_scene_in_any_order_other_seed_differs(assets, composer) -> None:
    other = PhotoSceneComposer(load_assets(*assets), size=SIZE, max_objects=4, seed=0)
    other.compose("val", 5)
    for split, index in (("train", 2), ("test", 1)):
        a, b = composer.compose(split, index), other.compose(split, index)
        for field in ("image", "semantic", "instances", "boxes", "labels"):
            np.testing.assert_array_equal(getattr(a.scene, field), getattr(b.scene, field), err_msg=field)
        assert (a.background, a.cutouts) == (b.background, b.cutouts)
    reseeded = PhotoSceneComposer(composer.assets, size=SIZE, seed=1)
    assert not np.array_equal(reseeded.compose("train", 2).scene.image, composer.compose("train", 2).scene.image)


# ---------------------------------------------------------------- export and CLI


def test_export_writes_every_layout_readable_by_the_evaluation_readers(exported) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    classes = ("background", "disc", "square", "triangle")
    assert tuple(manifest["classes"]) == classes and manifest["seed"] == 3
    assert manifest["counts"]["images"] == {"train": 9, "val": 3, "test": 3}
    counts = manifest["counts"]["images"]

    for split in PHOTO_SPLITS:
        seg = read_segmentation(exported / "voc", split)
        assert len(seg) == counts[split] and seg.classes == classes
        image, label = seg.load(0)
        assert image.size == (SIZE, SIZE) and label.max() < len(classes)
        coco = read_coco(exported / "coco", split, drop_empty=False)
        assert len(coco) == counts[split] and coco.classes == classes[1:]
    train = read_classification(exported / "imagefolder", "train")
    assert train.classes == classes[1:] and len(train) == counts["train"]
    assert len(read_classification(exported / "imagefolder", "test", classes=train.classes)) == counts["test"]
    assert len(read_classification(exported / "voc", "val")) == counts["val"]  # VOC Main lists, multi-label
    assert len(image_source(str(exported / "unlabeled" / "train"))) == counts["train"]
    assert "disc" in (exported / "README.md").read_text()


def test_coco_masks_and_voc_labels_equal_the_composed_scene(assets, exported) -> None:
    composer = PhotoSceneComposer(load_assets(*assets), size=SIZE, max_objects=4, seed=3)
    scene = composer.compose("val", 1).scene
    coco = read_coco(exported / "coco", "val", drop_empty=False)
    index = [coco.coco.imgs[i]["file_name"] for i in coco.image_ids].index("val_000001.png")
    image, target = coco.load(index, with_masks=True)
    np.testing.assert_array_equal(np.asarray(image), scene.image)  # PNG: lossless
    np.testing.assert_array_equal(target["labels"], scene.labels)
    np.testing.assert_array_equal(target["boxes"], scene.boxes)
    np.testing.assert_array_equal(
        target["masks"], np.stack([scene.instances == k + 1 for k in range(len(scene.labels))])
    )
    seg = read_segmentation(exported / "voc", "val")
    np.testing.assert_array_equal(seg.load(seg.ids.index("val_000001"))[1], scene.semantic)


def test_manifest_provenance_shows_disjoint_splits(exported) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    listed = manifest["assets"]
    used: dict[str, tuple[set, set]] = {s: (set(), set()) for s in PHOTO_SPLITS}
    for record in manifest["images"]:
        split = record["split"]
        used[split][0].add(record["background"])
        used[split][1].update(o["cutout"] for o in record["objects"])
        assert record["background"] in listed[split]["backgrounds"]
        for o in record["objects"]:
            assert o["cutout"] in listed[split]["cutouts"] and o["cutout"].startswith(o["class"] + "/")
    for a in PHOTO_SPLITS:
        for b in PHOTO_SPLITS:
            if a < b:
                assert not set(listed[a]["backgrounds"]) & set(listed[b]["backgrounds"])
                assert not set(listed[a]["cutouts"]) & set(listed[b]["cutouts"])
                assert not used[a][0] & used[b][0] and not used[a][1] & used[b][1]


def test_cli_refuses_a_non_empty_out_without_overwrite(assets, exported, capsys) -> None:
    args = [
        "data",
        "scenes",
        "--objects",
        str(assets[0]),
        "--backgrounds",
        str(assets[1]),
        "--out",
        str(exported),
        "--n",
        "3",
        "--size",
        str(SIZE),
        "--format",
        "voc",
    ]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input


def _rgb_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (200, 10, 10)).save(path)


def test_cutouts_without_alpha_are_skipped_with_one_warning_each(tmp_path, capsys) -> None:
    objects, backgrounds = _assets(tmp_path)
    _rgb_png(objects / "disc" / "flat.png")
    Image.new("RGBA", (20, 20), (0, 0, 0, 255)).save(objects / "square" / "opaque.png")
    found = load_assets(objects, backgrounds)
    assert len(found.skipped) == 2
    assert "flat.png" in found.skipped[0] and "no alpha" in found.skipped[0]
    assert "opaque.png" in found.skipped[1]
    assert all("flat" not in c.name and "opaque" not in c.name for s in PHOTO_SPLITS for c in found.cutouts[s])
    assert (
        main(
            [
                "data",
                "scenes",
                "--objects",
                str(objects),
                "--backgrounds",
                str(backgrounds),
                "--out",
                str(tmp_path / "out"),
                "--n",
                "3",
                "--size",
                "32",
                "--format",
                "coco",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert err.count("warning") == 2 and "flat.png" in err and "opaque.png" in err


def _flat_objects(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root)
    for kind in COLOURS:
        for png in (objects / kind).glob("*.png"):
            png.rename(objects / png.name)
        shutil.rmtree(objects / kind)
    return objects, backgrounds


def _rgb_category(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root)
    for k in range(3):
        _rgb_png(objects / "photo" / f"p{k}.png")
    return objects, backgrounds


def _two_cutouts(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root)
    for png in sorted((objects / "square").glob("*.png"))[2:]:
        png.unlink()
    return objects, backgrounds


def _empty_category(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root)
    (objects / "empty").mkdir()
    return objects, backgrounds


def _background_category(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root)
    (objects / "square").rename(objects / "__background__")  # classes.txt's background line, not an object class
    return objects, backgrounds


def _two_backgrounds(root: Path) -> tuple[Path, Path]:
    return _assets(root, n_backgrounds=2)


def _no_backgrounds(root: Path) -> tuple[Path, Path]:
    objects, backgrounds = _assets(root, n_backgrounds=0)
    backgrounds.mkdir()
    return objects, backgrounds


def _empty_objects(root: Path) -> tuple[Path, Path]:
    _, backgrounds = _assets(root)
    shutil.rmtree(root / "objects")
    (root / "objects").mkdir()
    return root / "objects", backgrounds


def _missing_test_split(root: Path) -> tuple[Path, Path]:
    objects, _ = _assets(root, n_backgrounds=0)
    for k, split in enumerate(("train", "val")):
        _background(root / "split_bg" / split / f"b{k}.png", k)
    return objects, root / "split_bg"


def _missing_objects(root: Path) -> tuple[Path, Path]:
    _, backgrounds = _assets(root)
    return root / "nowhere", backgrounds


@pytest.mark.parametrize(
    "make, expected",
    [
        (_flat_objects, "no category subfolder"),
        (_empty_objects, "no category subfolder"),
        (_missing_objects, "does not exist"),
        (_rgb_category, "category 'photo'"),
        (_two_cutouts, "category 'square'"),
        (_empty_category, "category 'empty'"),
        (_background_category, "'__background__' names the background, class 0 (no object); rename that category"),
        (_two_backgrounds, "has 2 image(s)"),
        (_no_backgrounds, "no readable image"),
        (_missing_test_split, "test/"),
    ],
)
def test_bad_assets_are_one_clear_input_error(tmp_path, make, expected: str) -> None:
    objects, backgrounds = make(tmp_path)
    with pytest.raises(InputError) as info:
        load_assets(objects, backgrounds)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_cli_reports_a_bad_asset_folder_on_one_line(tmp_path, capsys) -> None:
    objects, backgrounds = _rgb_category(tmp_path)
    assert (
        main(
            [
                "data",
                "scenes",
                "--objects",
                str(objects),
                "--backgrounds",
                str(backgrounds),
                "--out",
                str(tmp_path / "out"),
                "--n",
                "3",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("densecl data: error: category 'photo'") and "0 usable" in err[-1]
    assert sum("warning" in line for line in err) == 3  # each RGB file warned first
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"n": 2}, "--n must be >= 3"),
        ({"size": 16}, "size must be >= 32"),
        ({"max_objects": 0}, "max_objects must be >= 1"),
        ({"formats": ("voc", "png")}, "--format"),
    ],
)
def test_bad_arguments_write_nothing(assets, tmp_path, change: dict, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        export_photo_scenes(tmp_path / "out", *assets, **{"n": 3, "size": SIZE, "formats": ("voc",), **change})
    assert not (tmp_path / "out").exists()


# Recorded from the composer before it moved onto the shared composition core (then one digest a scene and one
# for the files; per part since, so that a failure names what changed): the same assets and arguments must keep
# giving the same arrays, provenance and files.
def test_composed_scenes_are_unchanged_from_the_recorded_digests(composer, scene_digest) -> None:
    found = {
        (split, index): composer.compose(split, index)
        for split, index in [("train", 0), ("val", 1), ("test", 2), ("train", 5)]
    }
    assert {key: (scene_digest(c.scene), c.background, c.cutouts) for key, c in found.items()} == {
        ("train", 0): (
            {"image": "21943ecbb0a9", "semantic": "85cd767b9662", "instances": "f211fdbb007c",
             "boxes": "e75d9dfa42a6", "labels": "27f66328ad65"},
            "photo5.png",
            ("square/square2.png", "triangle/triangle0.png", "disc/disc2.png"),
        ),
        ("val", 1): (
            {"image": "65cd73eed6f6", "semantic": "dd0016890d82", "instances": "d11f781da108",
             "boxes": "7b3fc0d1cc66", "labels": "27f66328ad65"},
            "photo0.png",
            ("square/square3.png", "triangle/triangle3.png", "disc/disc1.png"),
        ),
        ("test", 2): (
            {"image": "1317f74f0d03", "semantic": "bef482968072", "instances": "b919f71c549d",
             "boxes": "c9d4f63deed0", "labels": "66c313335fc2"},
            "photo4.png",
            ("square/square0.png", "disc/disc0.png"),
        ),
        ("train", 5): (
            {"image": "68f0f0e99838", "semantic": "f1d668031963", "instances": "3418bf663790",
             "boxes": "71f39a679b31", "labels": "baca21004a75"},
            "photo5.png",
            ("disc/disc2.png", "square/square1.png", "triangle/triangle0.png", "triangle/triangle2.png"),
        ),
    }  # fmt: skip


def test_exported_photo_scenes_are_byte_identical_to_the_recorded_digest(exported, tree_digest) -> None:
    # manifest.json and README.md name the temporary asset folders; the manifest's other entries are tested above
    assert tree_digest(exported, leave_out=("manifest.json", "README.md")) == {
        "coco": "82ce6ae3d5ea",
        "imagefolder": "0e8ec5f04161",
        "unlabeled": "b670da7784d6",
        "voc": "344f937081ff",
    }


def test_a_changed_file_is_named_by_its_digest(tmp_path, tree_digest) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    (tmp_path / "b.txt").write_text("2")
    before = tree_digest(tmp_path)
    (tmp_path / "a" / "x.txt").write_text("changed")
    after = tree_digest(tmp_path)
    assert [k for k in before if before[k] != after[k]] == ["a"]  # the folder that changed, and only it
