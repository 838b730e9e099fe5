"""Pre-training on images as they are: a 4-band 16-bit TIFF folder, 16-bit PNGs, DICOM; RGB weights adapted.

Run: ``.venv/bin/python -m pytest tests/test_your_images.py`` (the training runs are marked slow).
"""

import sys

import numpy as np
import pytest
import torch
import torchvision
from _image_files import sixteen_bit_ramp, write_dicom, write_png16, write_tiff
from PIL import Image

from densecl import checkpoint
from densecl.cli import main
from densecl.models.densecl import DenseCL
from densecl.train import _init_backbone
from densecl.weights.input_conv import adapt_input_conv

TINY = [
    "--arch", "resnet18", "--hidden-dim", "32", "--out-dim", "16", "--queue-len", "8", "--batch-size", "4",
    "--crop-size", "64", "--workers", "0", "--precision", "fp32", "--log-every", "1", "--epochs", "1",
]  # fmt: skip


def pretrain(data, out, *extra: str) -> int:
    return main(["pretrain", *TINY, "--data", str(data), "--output-dir", str(out), *extra])


def rgb_weights(path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    torch.save(state, path)
    return state


def folder_of(kind: str, folder, n: int = 8):
    folder.mkdir()
    for i in range(n):
        if kind == "tiff":
            write_tiff(folder / f"{i}.tif", sixteen_bit_ramp(64, 72, bands=4, seed=i))
        elif kind == "png":
            write_png16(folder / f"{i}.png", sixteen_bit_ramp(64, 72, seed=i)[0])
        else:
            write_dicom(folder / f"{i}.dcm", sixteen_bit_ramp(64, 72, seed=i)[0] % 4096, slope=1.0, intercept=-1024.0)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "channels", "init"), [("tiff", 4, True), ("png", 1, True), ("dicom", 1, False)])
def test_pretraining_runs_end_to_end_on_the_folder(tmp_path, capsys, kind, channels, init) -> None:
    data = folder_of(kind, tmp_path / kind)
    extra = ["--momentum", "1.0"]  # the key encoder keeps its initial weights: the adapted ones, checked below
    if init:
        rgb = rgb_weights(tmp_path / "r18.pth")
        extra += ["--init", str(tmp_path / "r18.pth")]
    assert pretrain(data, tmp_path / "run", *extra) == 0
    out = capsys.readouterr().out
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert state.config["in_channels"] == channels and state.config["pixels"] == "values"
    assert len(state.config["mean"].split(",")) == len(state.config["std"].split(",")) == channels
    if kind == "dicom":
        assert float(state.config["mean"]) < 4096 - 1024  # Hounsfield-like units: the intercept applied
    assert state.model["encoder.backbone.conv1.weight"].shape == (64, channels, 7, 7)
    assert state.model["momentum_encoder.backbone.conv1.weight"].shape == (64, channels, 7, 7)
    assert f"input: {channels} channel" in out and "measured on 8 images" in out
    if init:
        assert "adapted as timm's adapt_input_conv does" in out
        key = state.model["momentum_encoder.backbone.conv1.weight"]
        assert torch.equal(key, adapt_input_conv(rgb["conv1.weight"], channels))
        assert torch.equal(state.model["momentum_encoder.backbone.layer1.0.conv1.weight"], rgb["layer1.0.conv1.weight"])


@pytest.mark.parametrize("channels", [1, 4])
def test_init_from_rgb_weights_adapts_the_first_conv_as_timm_does(tmp_path, channels) -> None:
    pytest.importorskip("timm")
    from timm.models import adapt_input_conv as timm_adapt  # the reference: timm's own function

    rgb = rgb_weights(tmp_path / "r18.pth")
    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=8, in_channels=channels)
    said = []
    _init_backbone(model, str(tmp_path / "r18.pth"), said.append)
    expected = timm_adapt(channels, rgb["conv1.weight"].clone())
    for encoder in (model.encoder, model.momentum_encoder):
        assert torch.allclose(encoder.backbone.conv1.weight, expected, atol=1e-7)
        assert torch.equal(encoder.backbone.layer4[1].conv2.weight, rgb["layer4.1.conv2.weight"])
    assert len(said) == 1 and f"this model {channels}" in said[0] and "\n" not in said[0]


def test_adapted_filters_keep_the_response_to_equal_channels() -> None:
    w = torch.randn(8, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    rgb = torch.nn.functional.conv2d(x.expand(1, 3, 16, 16), w)
    for n in (1, 6):  # one channel, or whole copies of RGB: exactly the RGB response to a gray image
        adapted = torch.nn.functional.conv2d(x.expand(1, n, 16, 16), adapt_input_conv(w, n))
        assert torch.allclose(adapted, rgb, atol=1e-5)
    assert adapt_input_conv(w, 3) is w


def test_a_mixed_folder_stops_before_training_with_one_line(tmp_path, capsys) -> None:
    data = tmp_path / "mixed"
    data.mkdir()
    write_tiff(data / "a.tif", sixteen_bit_ramp(64, 64, bands=4))
    Image.new("RGB", (64, 64)).save(data / "b.jpg")
    assert pretrain(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a.tif" in err and "b.jpg" in err and "mixes kinds of image" in err
    assert not (tmp_path / "run").exists()


def test_a_missing_extra_stops_with_one_line_naming_it(tmp_path, capsys, monkeypatch) -> None:
    data = folder_of("dicom", tmp_path / "ct", n=2)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    assert pretrain(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'densecl[dicom]'" in err and "0.dcm" in err


def test_an_unsupported_dicom_encoding_stops_with_one_line_naming_it(tmp_path, capsys) -> None:
    from pydicom.uid import JPEGLSLossless

    data = tmp_path / "ct"
    data.mkdir()
    for i in range(4):
        write_dicom(data / f"{i}.dcm", np.ones((8, 8), np.uint16), transfer_syntax=JPEGLSLossless)
    assert pretrain(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "JPEG-LS Lossless" in err and "install one of" in err


def test_a_worker_error_reaches_the_user_as_its_one_line() -> None:
    from densecl.errors import one_line
    from densecl.inputs.sources import ImagesDisagree

    wrapped = ImagesDisagree(
        "Caught ImagesDisagree in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise\ndensecl.data.sources.ImagesDisagree: folder d mixes images\n'
    )
    assert one_line(wrapped) == "folder d mixes images"
    assert one_line(ImagesDisagree("plain")) == "plain"


@pytest.mark.slow
def test_an_odd_image_met_by_a_data_worker_stops_the_run_with_its_one_line_and_the_process_exits(tmp_path) -> None:
    import os
    import subprocess
    from pathlib import Path

    data = tmp_path / "mixed"
    data.mkdir()
    for i in range(5):  # two 4-band images first (the sample sees only them), then three of 3 bands
        write_tiff(data / f"{i}.tif", sixteen_bit_ramp(64, 64, bands=4 if i < 2 else 3, seed=i))
    script = (
        "import sys, densecl.inputs.stats as s; s.sample_indices = lambda n, k=256: [0, 1]; "
        "from densecl.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["pretrain", *TINY, "--workers", "1", "--data", str(data), "--output-dir", str(tmp_path / "run")]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    # a worker's error used to leave the process hanging at exit (workers ignore SIGTERM): the timeout catches that
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120, env=env)
    err = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert err.startswith("densecl pretrain: error: folder ") and "mixes images of 4 and 3 bands" in err
    assert "0.tif has 4" in err and "Traceback" not in done.stderr
