"""``densecl embed``: rows in the data's order, the features a hand-written forward gives, unreadable files left out."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from densecl.cli import main
from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densecl.models.backbones import build_backbone


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(3)
    backbone = build_backbone("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(backbone.state_dict(), path)
    return path, backbone.eval()


def expected(backbone, path, size, stage):
    """The stage map of the centre crop, by hand: resize the shorter side, crop, ImageNet-normalise, forward."""
    image = v2.functional.center_crop(v2.functional.resize(Image.open(path).convert("RGB"), size), size)
    x = v2.functional.normalize(v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True),
                                IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
    with torch.no_grad():
        return backbone.forward_stages(x[None])[stage][0]


def test_pooled_c5_rows_follow_the_folder_order_and_skip_the_unreadable_file(photos, weights, tmp_path, capsys):
    path, backbone = weights
    out = tmp_path / "feats.npy"
    argv = ["embed", "--weights", str(path), "--data", str(photos), "--out", str(out), "--image-size", "32",
            "--workers", "0", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    feats = np.load(out)
    record = json.loads((tmp_path / "feats.json").read_text())
    order = [photos / "a.jpg", photos / "b.png", photos / "sub" / "c.png"]  # sorted paths, broken.png left out
    assert record["images"] == [str(p) for p in order] and record["skipped"] == [str(photos / "broken.png")]
    assert feats.shape == (3, 512) and feats.dtype == np.float32 and record["shape"] == [3, 512]
    for row, image in zip(feats, order):
        want = expected(backbone, image, 32, 3).mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)
    assert record["weights"]["arch"] == "resnet18" and len(record["weights"]["sha256"]) == 64
    assert "cannot read image" in capsys.readouterr().err
    assert not list(tmp_path.glob(".feats*"))  # no temporary file left

    assert main(argv) == 2  # an existing result is never replaced silently
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0 and (tmp_path / "feats.old-1.npy").exists()
    assert (tmp_path / "feats.old-1.json").exists()


def test_dense_maps_at_c4_in_half_precision(photos, weights, tmp_path):
    path, backbone = weights
    out = tmp_path / "maps.npy"
    argv = ["embed", "--weights", str(path), "--data", str(photos), "--out", str(out), "--image-size", "64",
            "--stage", "c4", "--dense", "--dtype", "float16", "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    maps = np.load(out, mmap_mode="r")
    assert maps.shape == (3, 256, 4, 4) and maps.dtype == np.float16  # C4 of 64 px: 64 / 16
    want = expected(backbone, photos / "a.jpg", 64, 2).numpy()
    np.testing.assert_allclose(maps[0].astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_dense_maps_need_one_size_and_out_must_be_npy(photos, weights, tmp_path, capsys):
    path, _ = weights
    base = ["embed", "--weights", str(path), "--data", str(photos), "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "m.npy"), "--dense", "--image-size", "0"]) == 2
    assert main([*base, "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "--dense maps need one input size" in err[0] and "must end in .npy" in err[1]
    assert not (tmp_path / "m.npy").exists()


def test_a_missing_decoder_is_one_line_not_a_warning_per_image(weights, tmp_path, capsys, monkeypatch):
    import sys

    tifffile = pytest.importorskip("tifffile")
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"{i}.tif", np.full((3, 20, 20), 1000 * i, np.uint16), photometric="minisblack")
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as if the tiff extra were not installed
    argv = ["embed", "--weights", str(weights[0]), "--data", str(folder), "--out", str(tmp_path / "f.npy"),
            "--image-size", "16", "--workers", "0", "--mean", "1000,1000,1000", "--std", "800,800,800"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'densecl[tiff]'" in err[0] and "warning" not in err[0]
    assert not (tmp_path / "f.npy").exists()
