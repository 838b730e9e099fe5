"""Exported scenes in each layout, the readers, and one clear error for each kind of bad input."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from densecl.cli import main
from densecl.errors import InputError
from densecl.evaluation import backbone as eval_backbone
from densecl.evaluation.datasets import read_classification, read_coco, read_segmentation, subset
from densecl.formats.imagefolder import dominant_class
from densecl.scenes import CLASSES, render_scene


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the CLI gets as far as loading weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the data error")

    monkeypatch.setattr(eval_backbone, "load_weights", refuse)


def _error_line(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_voc_export_reads_back_as_segmentation_and_multilabel(scenes):
    root = scenes["voc"]
    seg = read_segmentation(root, "val")
    assert seg.classes == CLASSES and len(seg) == 6 and seg.ids[0] == "scene_000012"  # val follows train's 12
    image, label = seg.load(0)
    expected = render_scene(12, seed=0, size=64)
    assert image.size == (64, 64) and np.array_equal(label, expected.semantic)
    cls = read_classification(root, "train")
    assert cls.classes == tuple(sorted(CLASSES[1:])) and cls.targets.shape == (12, 8)
    first = render_scene(0, seed=0, size=64)
    present = {CLASSES[k] for k in np.unique(first.semantic) if k}
    assert {c for c, t in zip(cls.classes, cls.targets[0]) if t == 1} == present


def test_coco_export_masks_and_boxes_match_the_scenes(scenes):
    split = read_coco(scenes["coco"], "train", drop_empty=True)
    assert len(split) == 12 and split.classes == CLASSES[1:]
    image, target = split.load(3, with_masks=True)
    scene = render_scene(3, seed=0, size=64)
    assert np.array_equal(target["labels"], scene.labels)
    assert np.allclose(target["boxes"], scene.boxes)
    for m, mask in enumerate(target["masks"], start=1):
        assert np.array_equal(mask, (scene.instances == m).astype(np.uint8))


def test_imagefolder_export_uses_the_dominant_class(scenes):
    split = read_classification(scenes["imagefolder"], "val")
    assert split.single_label and split.classes == tuple(sorted(CLASSES[1:]))
    for path, label in zip(split.paths, split.labels()):
        index = int(path.stem.split("_")[1])
        assert 12 <= index < 18
        assert CLASSES[dominant_class(render_scene(index, seed=0, size=64))] == split.classes[label]


def test_export_refuses_a_non_empty_folder_without_overwrite(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    err = _error_line(
        capsys,
        "data",
        "export-scenes",
        "--format",
        "imagefolder",
        "--out",
        str(tmp_path / "x"),
        "--n-train",
        "2",
        "--n-val",
        "1",
        "--size",
        "32",
    )
    assert "not empty" in err
    assert (
        main(
            [
                "data",
                "export-scenes",
                "--format",
                "imagefolder",
                "--out",
                str(tmp_path / "x"),
                "--n-train",
                "2",
                "--n-val",
                "1",
                "--size",
                "32",
                "--overwrite",
            ]
        )
        == 0
    )
    # nothing is deleted: the earlier folder, the user's file in it included, moved aside whole
    assert (tmp_path / "x.old-1" / "keep.txt").read_text() == "mine" and not (tmp_path / "x" / "keep.txt").exists()
    assert json.loads((tmp_path / "x" / "scenes.json").read_text())["splits"] == {"train": [0, 2], "val": [2, 3]}


def test_label_list_with_class_names(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "train.txt").write_text("a.png cat,dog\nb.png dog\n\nc.png\n")
    split = read_classification(tmp_path, "train")
    assert split.classes == ("cat", "dog") and split.targets.tolist() == [[1, 1], [0, 1], [0, 0]]
    assert not split.single_label
    (tmp_path / "val.txt").write_text("a.png bird\n")
    with pytest.raises(InputError, match=r"val.txt line 1: unknown class 'bird'"):
        read_classification(tmp_path, "val", classes=split.classes)


def test_voc_difficult_images_are_ignored(tmp_path):
    main_dir = tmp_path / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    (tmp_path / "JPEGImages").mkdir()
    for i in ("x", "y"):
        Image.new("RGB", (8, 8)).save(tmp_path / "JPEGImages" / f"{i}.jpg")
    (main_dir / "cat_test.txt").write_text("x  1\ny  0\n")
    (main_dir / "dog_test.txt").write_text("x -1\ny  1\n")
    split = read_classification(tmp_path, "test")
    assert split.classes == ("cat", "dog") and split.targets.tolist() == [[1, 0], [-1, 1]]


def _copy(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def test_label_with_an_unknown_class_names_the_file(scenes, weights_file, tmp_path, capsys, no_model):
    root = _copy(scenes["voc"], tmp_path)
    path = root / "SegmentationClass" / "scene_000013.png"
    label = np.array(Image.open(path))
    label[0, 0], label[0, 1] = 50, 255  # 255 is fine, 50 is not a class
    Image.fromarray(label).save(path)
    for protocol in ("seg-probe", "seg-finetune"):
        err = _error_line(capsys, "eval", protocol, "--weights", str(weights_file), "--data", str(root))
        assert str(path) in err and "value(s) 50" in err and "only 9 classes" in err


def test_mask_of_another_size_names_both_files(scenes, weights_file, tmp_path, capsys, no_model):
    root = _copy(scenes["voc"], tmp_path)
    path = root / "SegmentationClass" / "scene_000002.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(path)
    err = _error_line(capsys, "eval", "seg-probe", "--weights", str(weights_file), "--data", str(root))
    assert str(path) in err and "scene_000002.jpg" in err and "64x32" in err


def test_empty_split_and_missing_annotations_fail_before_any_model(scenes, weights_file, tmp_path, capsys, no_model):
    root = _copy(scenes["voc"], tmp_path)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    err = _error_line(capsys, "eval", "seg-probe", "--weights", str(weights_file), "--data", str(root))
    assert "split 'val' is empty" in err
    coco = _copy(scenes["coco"], tmp_path / "c")
    (coco / "annotations" / "instances_val.json").unlink()
    err = _error_line(capsys, "eval", "det", "--weights", str(weights_file), "--data", str(coco))
    assert "instances_val.json does not exist" in err
    err = _error_line(capsys, "eval", "svm", "--weights", str(weights_file), "--data", str(tmp_path / "nowhere"))
    assert "does not exist" in err


def test_single_label_protocols_refuse_multilabel_data(scenes, weights_file, capsys, no_model):
    err = _error_line(capsys, "eval", "knn", "--weights", str(weights_file), "--data", str(scenes["voc"]))
    assert "multi-label" in err and "svm" in err


@pytest.mark.slow
def test_weights_that_do_not_fit_list_missing_and_unexpected_keys(scenes, weights_file, tmp_path, capsys):
    import torch

    state = torch.load(weights_file)
    del state["layer4.1.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    err = _error_line(
        capsys, "eval", "svm", "--weights", str(bad), "--data", str(scenes["imagefolder"]), "--workers", "0"
    )
    assert "layer4.1.conv2.weight" in err and "layer5.0.conv1.weight" in err
    assert "missing" in err and "unexpected" in err


def test_random_weights_need_an_arch(scenes, capsys):
    err = _error_line(capsys, "eval", "knn", "--weights", "random", "--data", str(scenes["imagefolder"]))
    assert "--arch" in err


def test_train_fraction_subset_is_fixed_by_its_seed():
    a = subset(100, 0.1, seed=0)
    assert a == subset(100, 0.1, seed=0) and len(a) == 10 and a == sorted(a)
    assert a != subset(100, 0.1, seed=1)
    assert subset(5, 0.01, seed=0) and subset(7, 1.0, seed=3) == list(range(7))
    with pytest.raises(InputError):
        subset(10, 0.0, seed=0)
