"""Export: each format loads into its library (where installable here) with the same features.

torchvision and timm are loaded for real and compared with this project's
backbone in eval mode on a 1x3x64x64 input; detectron2 and OpenMMLab are not
installable here, so their files are checked against the key lists their
ResNets use, written out below for ResNet-50, and by a round trip back through
:func:`densecl.weights.load_backbone_weights`.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from densecl.cli import main
from densecl.errors import InputError
from densecl.export import FORMATS, detectron2, export, mmlab
from densecl.models.backbones import build_backbone
from densecl.weights import BackboneWeights, load_backbone_weights

ARCH = "resnet18"
TOLERANCE = 1e-6
SUFFIX = {"detectron2": ".pkl", "safetensors": ".safetensors"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A densecl checkpoint of a ResNet-18 whose BN statistics are not the defaults, and that backbone."""
    torch.manual_seed(0)
    backbone = build_backbone(ARCH)
    for name, value in backbone.state_dict().items():
        if name.endswith("running_mean") or name.endswith("bias"):
            value.normal_(0, 0.1)
        elif name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif name.endswith("num_batches_tracked"):
            value.fill_(77)
    backbone.eval()
    model = {"encoder.backbone." + k: v for k, v in backbone.state_dict().items()}
    model.update({"momentum_encoder.backbone." + k: torch.zeros_like(v) for k, v in backbone.state_dict().items()})
    model.update({f"encoder.global_head.mlp.{i}.weight": torch.randn(8, 8) for i in (0, 2)})
    model.update({"global_queue.keys": torch.randn(8, 16), "global_queue.ptr": torch.zeros(1, dtype=torch.long)})
    path = tmp_path_factory.mktemp("export") / "checkpoint.pth"
    torch.save({"format": "densecl", "version": 1, "config": {"arch": ARCH}, "model": model, "step": 5}, path)
    return path, backbone


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _torchvision_features(model: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.no_grad()
def test_torchvision_loads_with_only_fc_missing(trained, x, tmp_path):
    path, backbone = trained
    out = export(path, "torchvision", tmp_path / "r18.pth").path
    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
    assert _max_abs_diff(_torchvision_features(model.eval(), x), backbone(x)) < TOLERANCE


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["timm", "safetensors"])
def test_timm_file_route(trained, x, tmp_path, fmt):
    timm = pytest.importorskip("timm")
    path, backbone = trained
    out = export(path, fmt, tmp_path / f"r18{SUFFIX.get(fmt, '.pth')}").path
    expected = backbone(x)
    # the documented route: the overlay says the file has no classifier
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(out), num_classes=0))
    assert model.num_classes == 0
    assert _max_abs_diff(model.eval().forward_features(x), expected) < TOLERANCE
    # ... with a fresh classifier
    overlay = dict(file=str(out), num_classes=0)
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert model.fc.out_features == 10
    assert _max_abs_diff(model.eval().forward_features(x), expected) < TOLERANCE


def test_timm_without_num_classes_zero_fails_as_documented(trained, tmp_path):
    timm = pytest.importorskip("timm")
    out = export(trained[0], "timm", tmp_path / "r18.pth").path
    with pytest.raises(RuntimeError, match="fc.weight"):
        timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))


@torch.no_grad()
def test_safetensors_into_torchvision(trained, x, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path, backbone = trained
    out = export(path, "safetensors", tmp_path / "r18.safetensors").path
    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(load_file(str(out)), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
    assert _max_abs_diff(_torchvision_features(model.eval(), x), backbone(x)) < TOLERANCE
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["arch"] == ARCH and f.metadata()["layout"] == "torchvision"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip(trained, tmp_path, fmt):
    path, backbone = trained
    out = export(path, fmt, tmp_path / f"out{SUFFIX.get(fmt, '.pth')}").path
    weights = load_backbone_weights(out)
    assert weights.arch == ARCH and weights.dropped == ()
    reference = backbone.state_dict()
    assert weights.state_dict.keys() == reference.keys()
    for key, value in weights.state_dict.items():
        if fmt == "detectron2" and key.endswith("num_batches_tracked"):
            assert value.item() == 0  # detectron2 has no counter; filled on import
        else:
            assert value.dtype == reference[key].dtype and torch.equal(value, reference[key]), key


# --------------------------------------------------------------------------- the ResNet-50 layouts

BN = ("weight", "bias", "running_mean", "running_var")
STAGE_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}  # ResNet-50: res2..res5 (torchvision layer1..layer4)

D2_STEM = ["stem.conv1.weight"] + [f"stem.conv1.norm.{s}" for s in BN]
D2_RES2_0 = [
    "res2.0.conv1.weight", *[f"res2.0.conv1.norm.{s}" for s in BN],
    "res2.0.conv2.weight", *[f"res2.0.conv2.norm.{s}" for s in BN],
    "res2.0.conv3.weight", *[f"res2.0.conv3.norm.{s}" for s in BN],
    "res2.0.shortcut.weight", *[f"res2.0.shortcut.norm.{s}" for s in BN],
]  # fmt: skip
BN_MM = (*BN, "num_batches_tracked")
MM_STEM = ["conv1.weight"] + [f"bn1.{s}" for s in BN_MM]
MM_LAYER1_0 = [
    "layer1.0.conv1.weight", *[f"layer1.0.bn1.{s}" for s in BN_MM],
    "layer1.0.conv2.weight", *[f"layer1.0.bn2.{s}" for s in BN_MM],
    "layer1.0.conv3.weight", *[f"layer1.0.bn3.{s}" for s in BN_MM],
    "layer1.0.downsample.0.weight", *[f"layer1.0.downsample.1.{s}" for s in BN_MM],
]  # fmt: skip


@pytest.fixture(scope="module")
def resnet50_weights():
    return BackboneWeights(build_backbone("resnet50").state_dict(), "resnet50", "torchvision")


def _blocks(keys, stage_prefix):
    return len({k.split(".")[1] for k in keys if k.startswith(stage_prefix)})


def test_detectron2_resnet50_names(resnet50_weights, tmp_path):
    detectron2.write(resnet50_weights, tmp_path / "r50.pkl")
    with open(tmp_path / "r50.pkl", "rb") as f:
        payload = pickle.load(f)
    assert payload["matching_heuristics"] is True and "__author__" in payload
    model = payload["model"]
    keys = list(model)
    assert keys[:5] == D2_STEM
    assert [k for k in keys if k.startswith("res2.0.")] == D2_RES2_0
    assert {s: _blocks(keys, f"res{s}.") for s in STAGE_BLOCKS} == STAGE_BLOCKS
    assert len(keys) == 5 + sum(20 + 15 * (n - 1) for n in STAGE_BLOCKS.values()) == 265
    assert not any("num_batches_tracked" in k for k in keys)
    assert all(k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in keys)
    assert model["stem.conv1.weight"].shape == (64, 3, 7, 7)
    assert model["res2.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert model["res2.0.shortcut.weight"].shape == (256, 64, 1, 1)
    assert model["res5.2.conv3.norm.running_var"].shape == (2048,)
    reference = resnet50_weights.state_dict
    assert (model["res3.0.shortcut.norm.running_mean"] == reference["layer2.0.downsample.1.running_mean"].numpy()).all()
    assert (model["res4.5.conv2.weight"] == reference["layer3.5.conv2.weight"].numpy()).all()


# detectron2's C4 Faster R-CNN (GeneralizedRCNN, MoCo's Res5ROIHeadsExtraNorm, RESNETS.NORM "SyncBN", 20 classes):
# the names of its state dict. The backbone ends at res4; res5 is the box head under roi_heads; the pixel mean
# and std and the anchors are non-persistent buffers, so not in the state dict. A SyncBN layer also keeps
# num_batches_tracked; convolutions followed by a norm have no bias.
BN_D2 = (*BN, "num_batches_tracked")
WB = ("weight", "bias")


def _d2_conv(prefix: str) -> list[str]:
    return [f"{prefix}.weight", *[f"{prefix}.norm.{s}" for s in BN_D2]]


def _d2_block(prefix: str, first: bool) -> list[str]:
    shortcut = _d2_conv(f"{prefix}.shortcut") if first else []  # the first block of a stage changes width
    return [*shortcut, *_d2_conv(f"{prefix}.conv1"), *_d2_conv(f"{prefix}.conv2"), *_d2_conv(f"{prefix}.conv3")]


def _d2_resnet(prefix: str, stages: dict[int, int]) -> list[str]:
    return [f"{prefix}{k}" for s, n in stages.items() for b in range(n) for k in _d2_block(f"res{s}.{b}", b == 0)]


D2_C4_MODEL = [
    *_d2_conv("backbone.stem.conv1"),
    *_d2_resnet("backbone.", {2: 3, 3: 4, 4: 6}),
    *_d2_resnet("roi_heads.", {5: 3}),
    *[f"roi_heads.res5.norm.{s}" for s in BN_D2],  # MoCo's extra norm after res5
    *[f"proposal_generator.rpn_head.{m}.{p}" for m in ("conv", "objectness_logits", "anchor_deltas") for p in WB],
    *[f"roi_heads.box_predictor.{m}.{p}" for m in ("cls_score", "bbox_pred") for p in WB],
]  # fmt: skip
# the FPN model's ResNet, for comparison: the whole of it under backbone.bottom_up, next to the FPN's own layers
D2_FPN_MODEL = [
    *_d2_conv("backbone.bottom_up.stem.conv1"),
    *_d2_resnet("backbone.bottom_up.", STAGE_BLOCKS),
    *[f"backbone.fpn_{kind}{k}.{p}" for kind in ("lateral", "output") for k in (2, 3, 4, 5) for p in WB],
]  # fmt: skip


def detectron2_placement(model_keys: list[str], file_keys: list[str]) -> dict[str, str]:
    """Where detectron2's checkpointer puts each file key when ``matching_heuristics`` is set (file key -> model key).

    Its rule: a file key fits a model key equal to it or ending with ``"." + key``; each model key takes the
    longest file key that fits; a file key taken by two model keys is an error.
    """
    placed: dict[str, str] = {}
    for model_key in model_keys:
        fits = [k for k in file_keys if model_key == k or model_key.endswith("." + k)]
        if fits:
            best = max(fits, key=len)
            assert best not in placed, f"{best} fits both {placed[best]} and {model_key}"
            placed[best] = model_key
    return placed


def test_detectron2_file_fills_the_c4_model_by_its_name_matching(resnet50_weights, tmp_path):
    detectron2.write(resnet50_weights, tmp_path / "r50.pkl")
    with open(tmp_path / "r50.pkl", "rb") as f:
        payload = pickle.load(f)
    assert payload["matching_heuristics"] is True and payload["__author__"] != "Caffe2"  # else renamed first
    file_keys = list(payload["model"])
    assert len(D2_C4_MODEL) == len(set(D2_C4_MODEL)) == 6 + 60 + 78 + 114 + 60 + 5 + 6 + 4 == 333
    placed = detectron2_placement(D2_C4_MODEL, file_keys)
    assert sorted(placed) == sorted(file_keys)  # every tensor of the file is used, once
    for key, model_key in placed.items():
        assert model_key == (f"roi_heads.{key}" if key.startswith("res5.") else f"backbone.{key}")
    assert placed["res5.0.conv1.weight"] == "roi_heads.res5.0.conv1.weight"
    assert payload["model"]["res5.0.conv1.weight"].shape == (512, 1024, 1, 1)  # res5 takes res4's 1024 channels
    left = sorted(set(D2_C4_MODEL) - set(placed.values()))  # keep detectron2's initialisation
    assert left == sorted(
        [k for k in D2_C4_MODEL if k.endswith("num_batches_tracked")]
        + [k for k in D2_C4_MODEL if k.startswith(("proposal_generator.", "roi_heads.box_predictor."))]
        + [f"roi_heads.res5.norm.{s}" for s in BN]
    )
    assert len(left) == 53 + 5 + 6 + 4  # 53 convs' counters, the extra norm, the RPN head, the predictor
    fpn = detectron2_placement(D2_FPN_MODEL, file_keys)  # the same file serves the FPN model
    assert sorted(fpn) == sorted(file_keys) and fpn["res5.2.conv3.weight"] == "backbone.bottom_up.res5.2.conv3.weight"


def test_mmlab_resnet50_names(resnet50_weights, tmp_path):
    mmlab.write(resnet50_weights, tmp_path / "r50.pth")
    checkpoint = torch.load(tmp_path / "r50.pth", weights_only=True)  # what mmengine's loader does
    assert set(checkpoint) == {"state_dict", "meta"} and checkpoint["meta"]["arch"] == "resnet50"
    keys = list(checkpoint["state_dict"])
    assert keys[:6] == MM_STEM
    assert [k for k in keys if k.startswith("layer1.0.")] == MM_LAYER1_0
    assert {s: _blocks(keys, f"layer{s - 1}.") for s in STAGE_BLOCKS} == STAGE_BLOCKS
    assert len(keys) == 318 and not any(k.startswith(("backbone.", "fc.")) for k in keys)


def test_detectron2_config():
    with torch.device("meta"):
        resnext = BackboneWeights(build_backbone("resnext101_32x8d").state_dict(), "resnext101_32x8d", "densecl")
        r18 = BackboneWeights(build_backbone("resnet18").state_dict(), "resnet18", "densecl")
    text = detectron2.config("w.pkl", resnext)
    for line in (
        'WEIGHTS: "w.pkl"',
        "PIXEL_MEAN: [123.675, 116.280, 103.530]",
        "PIXEL_STD: [58.395, 57.120, 57.375]",
        "DEPTH: 101",
        "STRIDE_IN_1X1: False",
        "NUM_GROUPS: 32",
        "WIDTH_PER_GROUP: 8",
        'NORM: "SyncBN"',
        'FORMAT: "RGB"',
    ):
        assert line in text
    assert "DEPTH: 18" in detectron2.config("w.pkl", r18) and "RES2_OUT_CHANNELS: 64" in detectron2.config("w.pkl", r18)
    assert "type='ResNeXt', depth=101, groups=32, base_width=8" in mmlab.backbone_config("w.pth", resnext)
    assert "prefix" not in mmlab.backbone_config("w.pth", r18).split("#")[0]


# --------------------------------------------------------------------------- errors and CLI


def test_suffix_the_reader_would_misread(trained, tmp_path):
    with pytest.raises(InputError, match=r"--format detectron2 needs a \.pkl file"):
        export(trained[0], "detectron2", tmp_path / "r18.pth")
    with pytest.raises(InputError, match=r"ends in \.safetensors"):
        export(trained[0], "torchvision", tmp_path / "r18.safetensors")
    with pytest.raises(InputError, match="unknown export format 'onnx'"):
        export(trained[0], "onnx", tmp_path / "r18.onnx")


def test_cli_export(trained, tmp_path, capsys):
    out = tmp_path / "sub" / "r18.pkl"
    assert main(["export", str(trained[0]), "--format", "detectron2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (detectron2, resnet18, 120 tensors from a densecl checkpoint)" in printed
    assert "momentum_encoder.backbone.* (120)" in printed and "global_queue.keys" in printed
    assert 'FORMAT: "RGB"' in printed and "STRIDE_IN_1X1: False" in printed
    assert 'ROI_HEADS.NAME: "Res5ROIHeadsExtraNorm"' in printed and "matching_heuristics: True" in printed
    assert out.is_file()


def test_cli_help_lists_formats(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for fmt in FORMATS:
        assert f"\n  {fmt} " in printed


def test_cli_bad_file(tmp_path, capsys):
    path = tmp_path / "model.pth"
    path.write_text("not a checkpoint")
    assert main(["export", str(path), "--format", "timm", "--out", str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("densecl export: error: cannot read checkpoint") and err.count("\n") == 1
