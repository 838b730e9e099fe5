"""Every protocol end to end through ``densecl.cli.main`` on tiny exported scenes (64 px, 1-2 iterations)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densecl.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def _record(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_svm_on_voc_multilabel_is_deterministic(scenes, weights_file, tmp_path, capsys):
    args = [
        "eval",
        "svm",
        "--weights",
        str(weights_file),
        "--data",
        str(scenes["voc"]),
        "--image-size",
        "0",
        "--workers",
        "0",
        "--costs",
        "0.1,1",
        "--cv-folds",
        "2",
    ]
    out, _ = _run(capsys, *args, "--out", str(tmp_path / "a.json"))
    _run(capsys, *args, "--out", str(tmp_path / "b.json"))
    a, b = _record(tmp_path / "a.json"), _record(tmp_path / "b.json")
    assert "| mAP" in out and "wrote" in out
    scored = [v for v in a["details"][0]["ap"].values() if v is not None]
    assert a["metrics"]["mAP"] == {
        "mean": pytest.approx(sum(scored) / len(scored)),
        "std": 0.0,
        "per_seed": [a["metrics"]["mAP"]["mean"]],
    }
    assert a["metrics"] == b["metrics"] and a["details"] == b["details"]
    assert a["weights"]["sha256"] and len(a["weights"]["sha256"]) == 64
    assert a["weights"]["arch"] == "resnet18" and a["weights"]["format"] == "torchvision"
    assert a["data"]["n_train"] == 12 and a["data"]["n_val"] == 6 and a["data"]["train_split"] == "train"
    assert a["config"]["stage"] == "c5" and a["config"]["ap"] == "area" and a["wall_time_s"] > 0
    assert set(a["details"][0]["ap"]) == set(a["data"]["classes"])


class MeanColour(nn.Module):
    """An oracle 'backbone': every stage is the image average-pooled, so a pooled feature is the image's mean colour."""

    stage_channels = (3, 3, 3, 3)
    out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))  # something for the bit-identical check

    def forward_stages(self, x):
        return [F.avg_pool2d(x, 2 ** (k + 2)) for k in range(4)]


def _colour_folder(root, per_class=(6, 3), size=32):
    """ImageFolder train/val of plain red, green and blue images (a little noise): colour = class."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for k, name in enumerate(("red", "green", "blue")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.full((size, size, 3), 40, np.int64)
                pixels[..., k] = 220
                pixels += rng.integers(-20, 21, size=pixels.shape)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_image_protocols_score_100_when_the_features_are_the_classes(tmp_path, capsys, monkeypatch):
    data = _colour_folder(tmp_path / "colours")
    info = {"source": "oracle", "sha256": None, "arch": "mean-colour", "format": "test"}
    monkeypatch.setattr(
        "densecl.evaluation.backbone.load_weights", lambda source, arch, options=None: (MeanColour(), info)
    )
    common = ["--weights", "oracle", "--data", str(data), "--image-size", "0", "--workers", "0"]
    _run(capsys, "eval", "svm", *common, "--out", str(tmp_path / "svm.json"))
    _run(capsys, "eval", "knn", *common, "--k", "3", "--out", str(tmp_path / "knn.json"))
    _run(
        capsys, "eval", "linear", *common, "--epochs", "30", "--batch-size", "6", "--out", str(tmp_path / "linear.json")
    )
    svm = _record(tmp_path / "svm.json")
    assert svm["metrics"]["mAP"]["mean"] == 100.0 and svm["details"][0]["ap"] == {
        "red": 100.0,
        "green": 100.0,
        "blue": 100.0,
    }
    assert _record(tmp_path / "knn.json")["metrics"]["top1"]["mean"] == 100.0
    assert _record(tmp_path / "linear.json")["metrics"]["top1"]["mean"] == 100.0
    assert svm["data"]["n_train"] == 18 and svm["data"]["n_val"] == 9


@pytest.mark.slow
def test_svm_knn_linear_on_imagefolder_with_seeds(scenes, tmp_path, capsys):
    common = [
        "--weights",
        "random",
        "--arch",
        "resnet18",
        "--data",
        str(scenes["imagefolder"]),
        "--image-size",
        "0",
        "--workers",
        "0",
        "--seeds",
        "2",
    ]
    _run(capsys, "eval", "svm", *common, "--costs", "1", "--out", str(tmp_path / "svm.json"))
    _run(capsys, "eval", "knn", *common, "--k", "5", "--out", str(tmp_path / "knn.json"))
    out, _ = _run(capsys, "eval", "linear", *common, "--epochs", "5", "--out", str(tmp_path / "linear.json"))
    assert "seed 0" in out and "seed 1" in out and "±" in out
    for name, metric in (("svm", "mAP"), ("knn", "top1"), ("linear", "top1")):
        record = _record(tmp_path / f"{name}.json")
        assert record["seeds"] == [0, 1]
        summary = record["metrics"][metric]
        a, b = summary["per_seed"]
        assert summary["mean"] == pytest.approx((a + b) / 2)
        assert summary["std"] == pytest.approx(abs(a - b) / 2**0.5)  # the sample std of two values
        assert record["weights"] == {
            "source": "random",
            "sha256": None,
            "arch": "resnet18",
            "format": "random",
            "input": "3 channels of 8-bit photos in [0, 1], mean 0.485,0.456,0.406, std 0.229,0.224,0.225",
        }


@pytest.mark.slow
def test_seg_probe_and_summary_table(scenes, weights_file, tmp_path, capsys):
    data = ["--data", str(scenes["voc"])]
    _run(
        capsys,
        "eval",
        "seg-probe",
        "--weights",
        str(weights_file),
        *data,
        "--stages",
        "c4,c5",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "probe_a.json"),
    )
    _run(
        capsys,
        "eval",
        "seg-probe",
        "--weights",
        str(weights_file),
        *data,
        "--stages",
        "c4,c5",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "probe_b.json"),
    )
    _run(
        capsys,
        "eval",
        "seg-probe",
        "--weights",
        "random",
        "--arch",
        "resnet18",
        *data,
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "probe_random.json"),
    )
    a = _record(tmp_path / "probe_a.json")
    assert a["metrics"] == _record(tmp_path / "probe_b.json")["metrics"]  # deterministic for a seed
    assert a["data"]["feature_channels"] == 256 + 512 and a["data"]["feature_size"] == [4, 4]  # C4 + C5 at 64 px / 16
    present = [v for v in a["details"][0]["iou"].values() if v is not None]
    assert a["metrics"]["mIoU"]["mean"] == pytest.approx(sum(present) / len(present))
    out, _ = _run(capsys, "eval", "summary", *(str(tmp_path / f"probe_{n}.json") for n in ("a", "random")))
    lines = out.strip().splitlines()
    assert len(lines) == 4 and "seg-probe mIoU" in lines[0] and "random (resnet18)" in lines[3]


def test_seg_probe_leaves_classes_absent_from_val_out_of_the_mean(scenes, weights_file, tmp_path, capsys):
    # 12 classes declared, the scenes use 9: classes 9..11 have no pixel anywhere
    _, err = _run(
        capsys,
        "eval",
        "seg-probe",
        "--weights",
        str(weights_file),
        "--data",
        str(scenes["voc"]),
        "--epochs",
        "1",
        "--num-classes",
        "12",
        "--out",
        str(tmp_path / "p.json"),
    )
    record = _record(tmp_path / "p.json")
    absent = record["data"]["absent_in_val"]
    assert {"class9", "class10", "class11"} <= set(absent)
    assert f"warning: class(es) {', '.join(absent)} have no pixel in the val split" in err
    ious = record["details"][0]["iou"]
    assert all(ious[c] is None for c in absent)
    present = [v for v in ious.values() if v is not None]
    assert len(present) == 12 - len(absent)
    assert record["metrics"]["mIoU"]["mean"] == pytest.approx(sum(present) / len(present))


@pytest.mark.slow
def test_seg_finetune(scenes, weights_file, tmp_path, capsys):
    out, _ = _run(
        capsys,
        "eval",
        "seg-finetune",
        "--weights",
        str(weights_file),
        "--data",
        str(scenes["voc"]),
        "--crop",
        "48",
        "--batch-size",
        "2",
        "--iters",
        "2",
        "--workers",
        "0",
        "--output-stride",
        "16",
        "--log-every",
        "1",
        "--out",
        str(tmp_path / "fcn.json"),
    )
    assert "seg-finetune iter 2/2" in out
    record = _record(tmp_path / "fcn.json")
    present = [v for v in record["details"][0]["iou"].values() if v is not None]
    assert (
        record["metrics"]["mIoU"]["mean"] == pytest.approx(sum(present) / len(present))
        and record["config"]["crop"] == 48
    )
    assert record["data"]["n_train"] == 12 and record["data"]["n_val"] == 6


@pytest.mark.parametrize("task", ["box", "mask"])
@pytest.mark.slow
def test_det(scenes, weights_file, tmp_path, capsys, task):
    _run(
        capsys,
        "eval",
        "det",
        "--weights",
        str(weights_file),
        "--data",
        str(scenes["coco"]),
        "--task",
        task,
        "--iters",
        "1",
        "--batch-size",
        "2",
        "--min-size",
        "64",
        "--max-size",
        "64",
        "--workers",
        "0",
        "--proposals",
        "50",
        "--rois-per-image",
        "32",
        "--detections-per-image",
        "10",
        "--train-fraction",
        "0.5",
        "--norm",
        "bn" if task == "box" else "frozen",
        "--out",
        str(tmp_path / "det.json"),
    )
    record = _record(tmp_path / "det.json")
    assert record["headline"] == (["bbox_AP", "segm_AP"] if task == "mask" else ["bbox_AP"])
    m = {name: v["mean"] for name, v in record["metrics"].items()}
    # AP at a stricter IoU threshold is never higher, and COCO AP averages those of 0.50:0.95
    assert m["bbox_AP75"] <= m["bbox_AP50"] and m["bbox_AP"] <= m["bbox_AP50"]
    assert set(m) >= {"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl"}
    assert record["data"]["train_fraction"] == 0.5 and len(record["data"]["train_image_ids"]) == 6
    assert record["data"]["n_train"] == 6 and record["data"]["n_val"] == 6


def test_default_out_is_under_the_run_dir(scenes, weights_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(
        capsys,
        "eval",
        "knn",
        "--weights",
        "random",
        "--arch",
        "resnet18",
        "--data",
        str(scenes["imagefolder"]),
        "--image-size",
        "0",
        "--workers",
        "0",
    )
    assert (tmp_path / "runs" / "random-resnet18" / "eval" / "knn_imagefolder.json").is_file()


def test_weights_of_another_arch_name_the_file(scenes, weights_file, tmp_path, capsys):
    code = main(
        [
            "eval",
            "knn",
            "--weights",
            str(weights_file),
            "--arch",
            "resnet50",
            "--data",
            str(scenes["imagefolder"]),
            "--image-size",
            "0",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "k.json"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        err == f"densecl eval: error: '{weights_file}' holds resnet18 weights but --arch is resnet50; "
        "drop --arch or set it to resnet18"
    )
