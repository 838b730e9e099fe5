"""``densecl eval det --detector c4`` on VOC-layout data read directly: end to end, and every refusal in one line."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from densecl.cli import main
from densecl.cli.eval import default_out
from densecl.errors import InputError
from densecl.evaluation import backbone as eval_backbone
from densecl.evaluation.det_config import DetConfig
from densecl.evaluation.det_data import load_data, voc_metric
from densecl.formats.voc_boxes import read_voc_detection
from densecl.scenes import CLASSES

TINY = ["--detector", "c4", "--iters", "2", "--batch-size", "2", "--min-size", "64", "--max-size", "64",
        "--workers", "0", "--proposals", "50", "--rois-per-image", "32", "--detections-per-image", "10",
        "--norm", "bn", "--warmup-iters", "1", "--lr", "0.01", "--log-every", "0"]  # fmt: skip


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the CLI gets as far as loading weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the data error")

    monkeypatch.setattr(eval_backbone, "load_weights", refuse)


def _error_line(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_c4_on_voc_scenes_writes_ap_ap50_ap75_and_per_class_ap50(scenes, weights_file, tmp_path, capsys):
    out = tmp_path / "det.json"
    argv = ["eval", "det", "--weights", str(weights_file), "--data", str(scenes["voc"]), *TINY,
            "--precise-bn-iters", "2", "--norm-weight-decay", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "| bbox_AP50" in printed.out and "| bbox_AP75" in printed.out
    record = json.loads(out.read_text())
    assert record["headline"] == ["bbox_AP", "bbox_AP50", "bbox_AP75"]
    m = {name: v["mean"] for name, v in record["metrics"].items()}
    assert set(m) == {"bbox_AP", "bbox_AP50", "bbox_AP75"}
    assert 0 <= m["bbox_AP"] <= m["bbox_AP50"] <= 100 and m["bbox_AP75"] <= m["bbox_AP50"]
    (details,) = record["details"]
    assert details["ap_metric"] == "area"  # the scenes' annotations name no year, nor does their root's name
    assert details["ap_metric_reason"].endswith("name no year (<folder>), nor does the root folder voc")
    assert list(details["AP50_per_class"]) == list(CLASSES[1:])
    present = [v for v in details["AP50_per_class"].values() if v is not None]
    assert m["bbox_AP50"] == pytest.approx(sum(present) / len(present))
    absent = [c for c, v in details["AP50_per_class"].items() if v is None]
    assert details["absent_in_val"] == absent and (not absent or "difficult ones do not count" in printed.err)
    assert record["data"]["layout"] == "voc" and record["data"]["n_train"] == 12 and record["data"]["n_val"] == 6
    assert record["config"]["detector"] == "c4" and record["config"]["precise_bn_iters"] == 2
    # the recipe, printed in one line at the start and kept in the result; ResNet-18 is not the paper's row
    (line,) = [
        x for x in printed.out.splitlines() if x.startswith("det recipe c4 (MoCo's pascal_voc_R_50_C4_24k_moco)")
    ]
    assert "given instead: iters 2 (recipe 24000)" in line and record["recipe"]["line"] == line
    assert record["recipe"]["changed"]["iters"] == {"given": 2, "recipe": 24000}
    assert "the c4 recipe is the paper's ResNet-50 VOC row; this backbone is resnet18" in printed.err


def _copy_saying(src, dst, folder: str):
    """A copy of the VOC root ``src`` at ``dst`` whose every annotation's ``<folder>`` reads ``folder``."""
    shutil.copytree(src, dst)
    for xml in (dst / "Annotations").glob("*.xml"):
        xml.write_text(re.sub(r"<folder>[^<]*</folder>", f"<folder>{folder}</folder>", xml.read_text()))
    return dst


def test_the_11_point_metric_follows_the_year_the_annotations_name(scenes, tmp_path):
    mine = _copy_saying(scenes["voc"], tmp_path / "my_boxes", "VOC2007")  # not named 2007, VOC2007's files
    assert voc_metric(DetConfig(data=str(mine)), read_voc_detection([mine], "val")) == (
        "11point",
        f"the val annotations of {mine} say VOC2007 (<folder>)",
    )
    voc07 = _copy_saying(scenes["voc"], tmp_path / "VOC2007", "VOC2012")  # named 2007, VOC2012's files
    assert voc_metric(DetConfig(data=str(voc07)), read_voc_detection([voc07], "val")) == (
        "area",
        f"the val annotations of {voc07} say VOC2012 (<folder>)",
    )
    assert voc_metric(DetConfig(data=str(voc07), voc_ap="11point"), read_voc_detection([voc07], "val")) == (
        "11point",
        "--voc-ap 11point",
    )


def test_the_root_folder_name_decides_only_when_the_annotations_name_no_year(scenes, tmp_path):
    named = _copy_saying(scenes["voc"], tmp_path / "VOC2007", "scenes")
    metric, reason = voc_metric(DetConfig(data=str(named)), read_voc_detection([named], "val"))
    assert metric == "11point" and reason.endswith("name no year (<folder>); the root folder VOC2007 contains 2007")
    metric, reason = voc_metric(DetConfig(data=str(scenes["voc"])), read_voc_detection([scenes["voc"]], "val"))
    assert metric == "area" and reason.endswith("name no year (<folder>), nor does the root folder voc")


def test_annotations_of_several_years_stop_before_any_model(scenes, tmp_path):
    mixed = _copy_saying(scenes["voc"], tmp_path / "mixed", "VOC2007")
    xml = mixed / "Annotations" / "scene_000012.xml"  # the first val image
    xml.write_text(xml.read_text().replace("<folder>VOC2007</folder>", "<folder>VOC2012</folder>"))
    with pytest.raises(InputError, match=r"name several years in <folder>: VOC2007 \(5 images\), VOC2012 \(1 image\)"):
        load_data(DetConfig(data=str(mixed), detector="c4"))
    assert len(load_data(DetConfig(data=str(mixed), detector="c4", voc_ap="area"))[1]) == 6


def test_several_roots_train_on_each_and_evaluate_on_the_first(scenes, tmp_path):
    first, second = tmp_path / "VOC2007", tmp_path / "VOC2012"
    shutil.copytree(scenes["voc"], first)
    shutil.copytree(scenes["voc"], second)
    (second / "ImageSets" / "Main" / "val.txt").unlink()  # VOC2012 has no test boxes: only the first is read
    train, val = load_data(DetConfig(data=f"{first},{second}", detector="c4"))
    assert (
        len(train) == 24 and train.image_ids[0] == "VOC2007/scene_000000" and train.image_ids[12].startswith("VOC2012/")
    )
    assert len(val) == 6 and val.roots == (first,)
    half, _ = load_data(DetConfig(data=f"{first},{second}", train_fraction=0.5))
    assert len(half) == 12
    assert default_out("w/ckpt.pth", None, "det", f"{first},{second}").name == "det_VOC2007+VOC2012.json"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--detector", "c4", "--task", "mask"], "--detector c4 has no mask head"),
        (["--task", "mask"], "has boxes, no instance masks: use --task box, or COCO data"),
        (["--precise-bn-iters", "-1"], "--precise-bn-iters must be >= 0"),
    ],
)
def test_settings_the_data_cannot_serve_stop_before_any_model(scenes, weights_file, capsys, no_model, extra, message):
    err = _error_line(capsys, "eval", "det", "--weights", str(weights_file), "--data", str(scenes["voc"]), *extra)
    assert message in err


def test_bad_voc_files_stop_before_any_model_naming_the_file(scenes, weights_file, tmp_path, capsys, no_model):
    root = tmp_path / "voc"
    shutil.copytree(scenes["voc"], root)
    argv = ["eval", "det", "--weights", str(weights_file), "--data", str(root), "--detector", "c4"]
    xml = root / "Annotations" / "scene_000003.xml"
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    assert f"annotation {xml} is not valid XML" in _error_line(capsys, *argv)
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    assert f"annotation {xml} has an object of unknown class 'unicorn'" in _error_line(capsys, *argv)
    xml.unlink()
    assert f"annotation {xml} does not exist" in _error_line(capsys, *argv)
    shutil.copy(scenes["voc"] / "Annotations" / "scene_000003.xml", xml)
    image = root / "JPEGImages" / "scene_000004.jpg"
    image.unlink()
    assert f"image {root / 'JPEGImages' / 'scene_000004'}.jpg does not exist" in _error_line(capsys, *argv)
    coco_list = f"{scenes['coco']},{scenes['coco']}"
    err = _error_line(capsys, "eval", "det", "--weights", str(weights_file), "--data", coco_list)
    assert "several roots are read in the VOC layout only" in err


def test_the_documented_voc_command_is_the_recipe():
    import dataclasses
    from pathlib import Path

    from densecl.cli.eval import protocol_parser
    from densecl.evaluation.det_config import lr_drops

    text = (Path(__file__).resolve().parents[2] / "docs" / "evaluate.md").read_text()
    start = text.index("torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pth --detector c4")
    lines = []
    for line in text[start:].splitlines():
        lines.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    argv = " ".join(lines).split()[lines[0].split().index("det") + 1 :]
    args = protocol_parser("det").parse_args(argv)
    assert (args.seeds, args.resume) == (5, True)
    c = DetConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DetConfig)})
    assert c.detector == "c4" and c.norm == "syncbn" and c.data == "VOCdevkit/VOC2007,VOCdevkit/VOC2012"
    assert (c.train_split, c.val_split) == ("trainval", "test")
    assert c.min_size == tuple(range(480, 801, 32)) and c.max_size == 1333
    assert (c.batch_size, c.lr, c.iters, c.warmup_iters) == (16, 0.02, 24000, 100)
    assert (c.weight_decay, c.norm_weight_decay, c.precise_bn_iters) == (1e-4, 0.0, 200)
    assert lr_drops(c) == [18000, 22000]


def test_precise_bn_on_a_frozen_model_says_there_is_nothing_to_recompute(scenes, capsys):
    import torch

    from densecl.evaluation import det
    from densecl.evaluation.det_model import build_detector
    from densecl.models.backbones import build_backbone

    config = DetConfig(data=str(scenes["voc"]), detector="c4", norm="frozen", precise_bn_iters=5, workers=0)
    train, _ = load_data(config)
    model = build_detector(build_backbone("resnet18"), "resnet18", train.num_classes, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    det._precise_bn(model, train, config, seed=0)
    assert "no trained BatchNorm (--norm frozen), nothing to recompute" in capsys.readouterr().err
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
