"""The 4-band 16-bit scenes: generated, written as TIFFs, pre-trained on, and every protocol run on them.

Run: ``.venv/bin/python -m pytest tests/evaluation/test_eval_bands.py`` (the pre-training and protocols: slow).
"""

import json

import numpy as np
import pytest

from densecl import checkpoint
from densecl.cli import main
from densecl.inputs.files import probe, read_image
from densecl.scenes import CLASSES, render_scene
from densecl.scenes.export import export_scenes
from densecl.scenes.procedural import NEAR_INFRARED


@pytest.fixture(scope="module")
def band_scenes(tmp_path_factory):
    pytest.importorskip("tifffile")
    root = tmp_path_factory.mktemp("bands")
    return {
        fmt: export_scenes(root / fmt, fmt, n_train=24, n_val=12, size=64, seed=0, bands=4, bit_depth=16).out
        for fmt in ("voc", "coco", "imagefolder")
    }


def test_four_band_scenes_are_rgb_plus_a_near_infrared_band_per_material() -> None:
    for index in range(4):
        rgb, four = render_scene(index), render_scene(index, bands=4, bit_depth=16)
        assert four.image.dtype == np.uint16 and four.image.shape == (128, 128, 4)
        assert np.array_equal(four.semantic, rgb.semantic) and np.array_equal(four.boxes, rgb.boxes)
        assert np.abs(four.image[..., :3].astype(int) - rgb.image.astype(int) * 257).max() <= 129  # the same picture
        assert (four.image[..., :3] % 257 != 0).mean() > 0.5  # and the fractions 8 bits round away
        nir = four.image[..., 3].astype(float) / 65535
        for label in np.unique(rgb.semantic)[1:]:
            inside = nir[(rgb.semantic == label) & (four.instances > 0)]
            low, high = 0.75 * NEAR_INFRARED[label], NEAR_INFRARED[label]
            assert low - 0.02 <= np.median(inside) <= high + 0.02, CLASSES[label]


def test_exported_band_scenes_are_tiffs_the_readers_take(band_scenes) -> None:
    voc = band_scenes["voc"]
    files = sorted((voc / "JPEGImages").iterdir())
    assert len(files) == 36 and all(f.suffix == ".tif" for f in files)
    info = probe(files[0])
    assert (info.bands, info.photo, info.kind) == (4, False, "uint16 TIFF")
    assert read_image(files[0]).shape == (4, 64, 64)
    coco = json.loads((band_scenes["coco"] / "annotations" / "instances_train.json").read_text())
    assert coco["images"][0]["file_name"].endswith(".tif")
    assert json.loads((voc / "scenes.json").read_text())["bands"] == 4


@pytest.fixture(scope="module")
def band_checkpoint(band_scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = [
        "pretrain", "--arch", "resnet18", "--hidden-dim", "32", "--out-dim", "16", "--queue-len", "8",
        "--batch-size", "4", "--crop-size", "64", "--workers", "0", "--precision", "fp32", "--epochs", "1",
        "--data", str(band_scenes["imagefolder"] / "train"), "--output-dir", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return out / "checkpoint.pt"


PROTOCOLS = {
    "seg-probe": ("voc", ["--epochs", "1", "--batch-size", "4"]),
    "dense-nn": ("voc", ["--memory-sizes", "50"]),
    "overcluster": ("voc", ["--ks", "0"]),
    "correspondence": ("voc/JPEGImages", ["--pairs", "6", "--crop", "64"]),  # every class in val: dense-nn
    "knn": ("imagefolder", ["--k", "3", "--image-size", "64"]),
    "seg-finetune": ("voc", ["--crop", "48", "--batch-size", "2", "--iters", "1", "--output-stride", "16"]),
    "det-c4": (  # the VOC protocol on the VOC layout's box XML
        "voc",
        ["--detector", "c4", "--train-split", "train", "--val-split", "val", "--iters", "1", "--batch-size", "2",
         "--min-size", "64", "--max-size", "64", "--proposals", "50", "--rois-per-image", "32",
         "--precise-bn-iters", "2"],
    ),
    "det": (
        "coco",
        ["--iters", "1", "--batch-size", "2", "--min-size", "64", "--max-size", "64", "--proposals", "50",
         "--rois-per-image", "32", "--detections-per-image", "10"],
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_protocol_runs_on_the_four_band_scenes(band_scenes, band_checkpoint, tmp_path, capsys, protocol):
    layout, extra = PROTOCOLS[protocol]
    fmt, _, sub = layout.partition("/")
    data = band_scenes[fmt] / sub if sub else band_scenes[fmt]
    workers = ["--workers", "0"] if protocol in ("knn", "seg-finetune", "det", "det-c4") else []
    argv = [
        "eval",
        protocol.removesuffix("-c4"),
        "--weights",
        str(band_checkpoint),
        "--device",
        "cpu",
        "--data",
        str(data),
    ]
    code = main([*argv, *workers, *extra, "--out", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.json").read_text())
    config = checkpoint.load(band_checkpoint).config
    assert record["weights"]["input"].startswith("4 channels of stored values, mean " + config["mean"])
    assert record["metrics"]


@pytest.mark.slow
def test_rgb_weights_on_four_band_scenes_stop_with_one_line(band_scenes, tmp_path, capsys) -> None:
    argv = ["eval", "seg-probe", "--weights", "random", "--arch", "resnet18", "--device", "cpu"]
    assert main([*argv, "--data", str(band_scenes["voc"]), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "scene_000000.tif is a 16-bit, float or multi-band image" in err
    assert "these weights take 8-bit photos" in err


@pytest.mark.slow
def test_random_weights_on_four_band_scenes_with_the_input_given(band_scenes, tmp_path, capsys) -> None:
    argv = ["eval", "seg-probe", "--weights", "random", "--arch", "resnet18", "--device", "cpu", "--epochs", "1"]
    argv += ["--in-channels", "4", "--mean", "30000,30000,30000,15000", "--std", "15000,15000,15000,12000"]
    assert main([*argv, "--data", str(band_scenes["voc"]), "--out", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert (
        record["weights"]["input"] == "4 channels of images, mean 30000,30000,30000,15000, std 15000,15000,15000,12000"
    )


@pytest.mark.slow
def test_embed_reads_the_four_band_scenes_as_the_checkpoint_takes_them(band_scenes, band_checkpoint, tmp_path):
    import torch

    from densecl.evaluation.backbone import load_weights
    from densecl.inputs import input_of

    out = tmp_path / "feats.npy"
    folder = band_scenes["imagefolder"] / "val"
    argv = ["embed", "--weights", str(band_checkpoint), "--data", str(folder), "--out", str(out), "--image-size", "0"]
    assert main([*argv, "--workers", "0", "--device", "cpu"]) == 0
    feats = np.load(out)
    record = json.loads((tmp_path / "feats.json").read_text())
    assert feats.shape == (12, 512) and record["weights"]["input"].startswith("4 channels of stored values")
    backbone, _ = load_weights(str(band_checkpoint), None)
    inputs = input_of(backbone)
    first = record["images"][0]  # by hand: the stored values, normalised with the checkpoint's mean and std
    x = inputs.normalise(inputs.prepare(inputs.read(first), first), photo=False)
    with torch.no_grad():
        want = backbone.eval().forward_stages(x[None])[3].mean(dim=(2, 3))[0]
    np.testing.assert_allclose(feats[0], want.numpy(), rtol=1e-4, atol=1e-5)
