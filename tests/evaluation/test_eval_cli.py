"""Every protocol end to end through ``densecl.cli.main`` on tiny exported scenes (64 px, 1-2 iterations)."""

import json

import pytest

from densecl.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def _record(path):
    return json.loads(path.read_text())


def test_svm_on_voc_multilabel_is_deterministic(scenes, weights_file, tmp_path, capsys):
    args = ["eval", "svm", "--weights", str(weights_file), "--data", str(scenes["voc"]), "--image-size", "0", "--workers", "0",
            "--costs", "0.1,1", "--cv-folds", "2"]
    out, _ = _run(capsys, *args, "--out", str(tmp_path / "a.json"))
    _run(capsys, *args, "--out", str(tmp_path / "b.json"))
    a, b = _record(tmp_path / "a.json"), _record(tmp_path / "b.json")
    assert "| mAP" in out and "wrote" in out
    assert 0 <= a["metrics"]["mAP"]["mean"] <= 100
    assert a["metrics"] == b["metrics"] and a["details"] == b["details"]
    assert a["weights"]["sha256"] and len(a["weights"]["sha256"]) == 64
    assert a["weights"]["arch"] == "resnet18" and a["weights"]["format"] == "torchvision"
    assert a["data"]["n_train"] == 12 and a["data"]["n_val"] == 6 and a["data"]["train_split"] == "train"
    assert a["config"]["stage"] == "c5" and a["config"]["ap"] == "area" and a["wall_time_s"] > 0
    assert set(a["details"][0]["ap"]) == set(a["data"]["classes"])


def test_svm_knn_linear_on_imagefolder_with_seeds(scenes, tmp_path, capsys):
    common = ["--weights", "random", "--arch", "resnet18", "--data", str(scenes["imagefolder"]), "--image-size", "0",
              "--workers", "0", "--seeds", "2"]
    _run(capsys, "eval", "svm", *common, "--costs", "1", "--out", str(tmp_path / "svm.json"))
    _run(capsys, "eval", "knn", *common, "--k", "5", "--out", str(tmp_path / "knn.json"))
    out, _ = _run(capsys, "eval", "linear", *common, "--epochs", "5", "--out", str(tmp_path / "linear.json"))
    assert "seed 0" in out and "seed 1" in out and "±" in out
    for name, metric in (("svm", "mAP"), ("knn", "top1"), ("linear", "top1")):
        record = _record(tmp_path / f"{name}.json")
        assert record["seeds"] == [0, 1]
        assert len(record["metrics"][metric]["per_seed"]) == 2 and record["metrics"][metric]["std"] >= 0
        assert record["weights"] == {"source": "random", "sha256": None, "arch": "resnet18", "format": "random"}


def test_seg_probe_and_summary_table(scenes, weights_file, tmp_path, capsys):
    data = ["--data", str(scenes["voc"])]
    _run(capsys, "eval", "seg-probe", "--weights", str(weights_file), *data, "--stages", "c4,c5", "--epochs", "3",
         "--out", str(tmp_path / "probe_a.json"))
    _run(capsys, "eval", "seg-probe", "--weights", str(weights_file), *data, "--stages", "c4,c5", "--epochs", "3",
         "--out", str(tmp_path / "probe_b.json"))
    _run(capsys, "eval", "seg-probe", "--weights", "random", "--arch", "resnet18", *data, "--epochs", "3",
         "--out", str(tmp_path / "probe_random.json"))
    a = _record(tmp_path / "probe_a.json")
    assert a["metrics"] == _record(tmp_path / "probe_b.json")["metrics"]  # deterministic for a seed
    assert 0 <= a["metrics"]["mIoU"]["mean"] <= 100 and a["data"]["feature_channels"] == 256 + 512
    out, _ = _run(capsys, "eval", "summary", *(str(tmp_path / f"probe_{n}.json") for n in ("a", "random")))
    lines = out.strip().splitlines()
    assert len(lines) == 4 and "seg-probe mIoU" in lines[0] and "random (resnet18)" in lines[3]


def test_seg_probe_leaves_classes_absent_from_val_out_of_the_mean(scenes, weights_file, tmp_path, capsys):
    # 12 classes declared, the scenes use 9: classes 9..11 have no pixel anywhere
    _, err = _run(capsys, "eval", "seg-probe", "--weights", str(weights_file), "--data", str(scenes["voc"]), "--epochs", "1",
                  "--num-classes", "12", "--out", str(tmp_path / "p.json"))
    record = _record(tmp_path / "p.json")
    absent = record["data"]["absent_in_val"]
    assert {"class9", "class10", "class11"} <= set(absent)
    assert f"warning: class(es) {', '.join(absent)} have no pixel in the val split" in err
    ious = record["details"][0]["iou"]
    assert all(ious[c] is None for c in absent)
    present = [v for v in ious.values() if v is not None]
    assert len(present) == 12 - len(absent)
    assert record["metrics"]["mIoU"]["mean"] == pytest.approx(sum(present) / len(present))


def test_seg_finetune(scenes, weights_file, tmp_path, capsys):
    out, _ = _run(capsys, "eval", "seg-finetune", "--weights", str(weights_file), "--data", str(scenes["voc"]),
                  "--crop", "48", "--batch-size", "2", "--iters", "2", "--workers", "0", "--output-stride", "16",
                  "--log-every", "1", "--out", str(tmp_path / "fcn.json"))
    assert "seg-finetune iter 2/2" in out
    record = _record(tmp_path / "fcn.json")
    assert 0 <= record["metrics"]["mIoU"]["mean"] <= 100 and record["config"]["crop"] == 48


@pytest.mark.parametrize("task", ["box", "mask"])
def test_det(scenes, weights_file, tmp_path, capsys, task):
    _run(capsys, "eval", "det", "--weights", str(weights_file), "--data", str(scenes["coco"]), "--task", task,
         "--iters", "1", "--batch-size", "2", "--min-size", "64", "--max-size", "64", "--workers", "0",
         "--proposals", "50", "--rois-per-image", "32", "--detections-per-image", "10", "--train-fraction", "0.5",
         "--norm", "bn" if task == "box" else "frozen", "--out", str(tmp_path / "det.json"))
    record = _record(tmp_path / "det.json")
    assert record["headline"] == (["bbox_AP", "segm_AP"] if task == "mask" else ["bbox_AP"])
    for name in record["headline"] + ["bbox_AP50", "bbox_AP75"]:
        assert 0 <= record["metrics"][name]["mean"] <= 100
    assert record["data"]["train_fraction"] == 0.5 and len(record["data"]["train_image_ids"]) == 6
    assert record["data"]["n_train"] == 6 and record["data"]["n_val"] == 6


def test_default_out_is_under_the_run_dir(scenes, weights_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(capsys, "eval", "knn", "--weights", "random", "--arch", "resnet18", "--data", str(scenes["imagefolder"]),
         "--image-size", "0", "--workers", "0")
    assert (tmp_path / "runs" / "random-resnet18" / "eval" / "knn_imagefolder.json").is_file()


def test_weights_of_another_arch_name_the_file(scenes, weights_file, tmp_path, capsys):
    code = main(["eval", "knn", "--weights", str(weights_file), "--arch", "resnet50", "--data", str(scenes["imagefolder"]),
                 "--image-size", "0", "--workers", "0", "--out", str(tmp_path / "k.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err == f"densecl eval: error: '{weights_file}' holds resnet18 weights but --arch is resnet50; drop --arch or set it to resnet18"
