"""The dense instruments on the command line: records written, bad input stopped before any model is built."""

from __future__ import annotations

import json

import pytest

from densecl.cli import main
from densecl.scenes.export import export_scenes


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """24 train and 12 val procedural scenes of 64 px in the VOC layout (every class in val)."""
    return export_scenes(tmp_path_factory.mktemp("dense") / "voc", "voc", n_train=24, n_val=12, size=64, seed=0).out


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a backbone is loaded: bad input must stop before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr("densecl.evaluation.backbone.load_weights", refuse)


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


RANDOM = ("--weights", "random", "--arch", "resnet18", "--device", "cpu")


@pytest.mark.slow
def test_dense_nn_and_overcluster_write_records(voc, tmp_path, capsys):
    code, err = _run(
        capsys,
        "eval",
        "dense-nn",
        *RANDOM,
        "--data",
        str(voc),
        "--memory-sizes",
        "50,0",
        "--out",
        str(tmp_path / "nn.json"),
    )
    assert code == 0, err
    nn = json.loads((tmp_path / "nn.json").read_text())
    assert nn["data"]["memory_sizes"] == [50, 24 * 4]  # 64 px -> a 2 x 2 C5 grid per train image
    assert set(nn["metrics"]) == {"mIoU", "mIoU@50", "mIoU@96"} and nn["data"]["memory_mb"] > 0
    code, err = _run(
        capsys, "eval", "overcluster", *RANDOM, "--data", str(voc), "--ks", "0,2x", "--out", str(tmp_path / "oc.json")
    )
    assert code == 0, err
    oc = json.loads((tmp_path / "oc.json").read_text())
    k = len(oc["data"]["classes"])
    assert oc["data"]["ks"] == [k, 2 * k] and oc["metrics"]["mIoU"]["mean"] == oc["metrics"][f"mIoU@K{k}"]["mean"]


def test_correspondence_writes_a_record(voc, tmp_path, capsys):
    out = tmp_path / "c.json"
    code, err = _run(
        capsys,
        "eval",
        "correspondence",
        *RANDOM,
        "--data",
        str(voc / "JPEGImages"),
        "--pairs",
        "6",
        "--crop",
        "64",
        "--out",
        str(out),
    )
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["headline"] == ["c5_accuracy", "c5_within_32", "c5_mutual_precision"]
    assert len(record["details"][0]["images"]) == 6 and record["data"]["pairs"] == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ("dense-nn", "--memory-sizes", "100000"),
            "memory size 100000 is more than the 96 patches of the 24 train images",
        ),
        (("dense-nn", "--k", "100", "--memory-sizes", "50"), "k 100 is larger than the smallest memory"),
        (("overcluster", "--ks", "1000"), "K 1000 is more than the 48 patches of the 12 val images"),
    ],
)
def test_bad_input_is_one_line_before_any_model(voc, no_model, capsys, argv, message):
    code, err = _run(capsys, "eval", argv[0], *RANDOM, "--data", str(voc), *argv[1:])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_class_missing_from_val_is_one_line(voc, tmp_path, no_model, capsys):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    classes = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join([*classes, "unicorn"]) + "\n")
    code, err = _run(capsys, "eval", "overcluster", *RANDOM, "--data", str(root))
    assert code == 2 and "class(es) unicorn" in err and "no pixel in the val split" in err


def test_too_few_images_for_the_pairs(voc, no_model, capsys):
    code, err = _run(capsys, "eval", "correspondence", *RANDOM, "--data", str(voc / "JPEGImages"), "--pairs", "1000")
    assert code == 2 and "--pairs 1000" in err and "lower --pairs to 36" in err


@pytest.mark.slow
def test_seg_finetune_saves_the_supervised_backbone_once(voc, tmp_path, capsys):
    import torch
    import torchvision

    out = tmp_path / "supervised.pth"
    argv = ("eval", "seg-finetune", *RANDOM, "--data", str(voc), "--crop", "64", "--batch-size", "4", "--iters", "2",
            "--workers", "0", "--save-backbone", str(out), "--out", str(tmp_path / "s.json"))  # fmt: skip
    code, err = _run(capsys, *argv)
    assert code == 0, err
    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(torch.load(out), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and not unexpected
    code, err = _run(capsys, *argv[:-1], str(tmp_path / "s2.json"))  # never replaces the file it wrote
    assert code == 2 and "exists; this command never replaces a file" in err


def test_dense_nn_keeps_masks_for_a_picture_once(voc, tmp_path, capsys):
    import numpy as np

    masks = tmp_path / "masks.npz"
    argv = (
        "eval",
        "dense-nn",
        *RANDOM,
        "--data",
        str(voc),
        "--masks-out",
        str(masks),
        "--out",
        str(tmp_path / "nn.json"),
    )
    code, err = _run(capsys, *argv)
    assert code == 0, err
    with np.load(masks) as m:
        assert m["images"].shape == (4, 64, 64, 3) and m["labels"].shape == m["predictions"].shape == (4, 64, 64)
        assert list(m["classes"]) == json.loads((tmp_path / "nn.json").read_text())["data"]["classes"]
        assert int(m["predictions"].max()) < len(m["classes"])
    code, err = _run(capsys, *argv[:-1], str(tmp_path / "nn2.json"))
    assert code == 2 and "exists; this command never replaces a file" in err
