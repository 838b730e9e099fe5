"""Exports of a 4-band checkpoint: timm (in_chans=4) and torchvision load them with the same outputs; every format
says the input's channels, mean and std, and the usage text printed for the user is the code that runs.

Run: ``.venv/bin/python -m pytest tests/test_export_channels.py``
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torchvision

from densecl.export import export
from densecl.inputs import InputSpec
from densecl.models.backbones import build_backbone
from densecl.weights import load_backbone, load_backbone_weights

ARCH = "resnet18"
CONFIG = {"arch": ARCH, "in_channels": 4, "bands": None, "pixels": "values", "mean": "1000,2000,3000,4000"}
CONFIG["std"] = "10,20,30,40.5"
SPEC = InputSpec(4, False, None, (1000.0, 2000.0, 3000.0, 4000.0), (10.0, 20.0, 30.0, 40.5))


@pytest.fixture(scope="module")
def four_band(tmp_path_factory):
    torch.manual_seed(0)
    backbone = build_backbone(ARCH, in_channels=4)
    for name, value in backbone.state_dict().items():
        if name.endswith("running_mean") or name.endswith("bias"):
            value.normal_(0, 0.1)
        elif name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    backbone.eval()
    model = {"encoder.backbone." + k: v for k, v in backbone.state_dict().items()}
    model.update({"momentum_encoder.backbone." + k: torch.zeros_like(v) for k, v in backbone.state_dict().items()})
    path = tmp_path_factory.mktemp("export4") / "checkpoint.pth"
    torch.save({"format": "densecl", "version": 1, "config": CONFIG, "model": model, "step": 5}, path)
    return path, backbone


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))


def run_usage(text: str) -> torch.nn.Module:
    """Executes the usage text the export prints; returns the ``model`` it builds."""
    namespace = {"torch": torch, "torchvision": torchvision}
    timm = pytest.importorskip("timm") if "timm." in text.split("#")[0] else None
    namespace["timm"] = timm
    exec(text, namespace)  # the text is the export's own output
    return namespace["model"]


def test_the_checkpoint_says_its_input_and_a_backbone_carries_it(four_band) -> None:
    weights = load_backbone_weights(four_band[0])
    assert weights.in_channels == 4 and weights.input == SPEC
    assert load_backbone(four_band[0]).input_spec == SPEC


@torch.no_grad()
def test_timm_with_in_chans_4_gives_the_same_features(four_band, x, tmp_path) -> None:
    path, backbone = four_band
    result = export(path, "timm", tmp_path / "r18.pth")
    assert "in_chans=4" in result.usage and "mean=(1000.0, 2000.0, 3000.0, 4000.0)" in result.usage
    model = run_usage(result.usage).eval()
    assert model.conv1.in_channels == 4 and model.num_classes == 0
    assert tuple(model.pretrained_cfg["mean"]) == SPEC.mean and tuple(model.pretrained_cfg["std"]) == SPEC.std
    assert (model.forward_features(x) - backbone(x)).abs().max() < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["torchvision", "safetensors"])
def test_torchvision_with_the_printed_conv1_gives_the_same_features(four_band, x, tmp_path, fmt) -> None:
    path, backbone = four_band
    suffix = ".safetensors" if fmt == "safetensors" else ".pth"
    result = export(path, fmt, tmp_path / f"r18{suffix}")
    text = result.usage
    if fmt == "safetensors":
        safetensors = pytest.importorskip("safetensors")

        text = "import safetensors.torch\n" + text.split("\n# or:")[0]
        with safetensors.safe_open(str(result.path), "pt") as f:
            meta = f.metadata()
        assert meta["in_channels"] == "4" and json.loads(meta["input"])["mean"] == "1000,2000,3000,4000"
    model = run_usage(text).eval()
    trunk = torch.nn.Sequential(*list(model.children())[:-2])
    assert (trunk(x) - backbone(x)).abs().max() < 1e-5
    assert "(x - mean) / std, mean=[1000, 2000, 3000, 4000], std=[10, 20, 30, 40.5]" in result.usage


def test_densecl_reads_the_input_back_from_its_safetensors_export(four_band, tmp_path) -> None:
    pytest.importorskip("safetensors")
    path, _ = four_band
    back = load_backbone_weights(export(path, "safetensors", tmp_path / "r18.safetensors").path)
    # without the header's description the mean and std would be unknown (None), and evaluation would refuse them
    assert back.input == SPEC and load_backbone(back).input_spec == SPEC


def test_openmmlab_and_detectron2_carry_the_conv_shape_and_the_statistics(four_band, tmp_path) -> None:
    path, _ = four_band
    mm = export(path, "mmlab", tmp_path / "r18_mm.pth")
    assert "in_channels=4," in mm.usage and "mean=[1000, 2000, 3000, 4000], std=[10, 20, 30, 40.5]" in mm.usage
    back = load_backbone_weights(mm.path)  # densecl reads the input back from OpenMMLab's meta
    assert back.input == SPEC and back.state_dict["conv1.weight"].shape == (64, 4, 7, 7)
    d2 = export(path, "detectron2", tmp_path / "r18.pkl")
    assert "PIXEL_MEAN: [1000, 2000, 3000, 4000]" in d2.usage and "PIXEL_STD: [10, 20, 30, 40.5]" in d2.usage
    with open(d2.path, "rb") as f:
        assert pickle.load(f)["model"]["stem.conv1.weight"].shape == (64, 4, 7, 7)


def test_the_correspond_picture_refuses_four_band_weights_in_one_line(four_band, tmp_path, capsys) -> None:
    from PIL import Image

    from densecl.cli import main

    Image.new("RGB", (96, 96)).save(tmp_path / "a.png")
    argv = ["correspond", "--weights", str(four_band[0]), "--image", str(tmp_path / "a.png")]
    assert main([*argv, "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "takes 4 channels of stored values" in err and "densecl eval correspondence" in err
