"""Frozen features, the bit-identical check, and the backbones the fine-tuning protocols build."""

import pytest
import torch
from torch import nn

from densecl.errors import InputError
from densecl.evaluation.det_config import DetConfig
from densecl.evaluation.det_model import build_detector, freeze_batchnorm, load_trunk
from densecl.evaluation.features import (
    assert_unchanged,
    dense_features,
    frozen,
    parse_stages,
    pooled_features,
    snapshot,
)
from densecl.evaluation.seg_finetune import FCN, dilate
from densecl.models.backbones import build_backbone, torchvision_classifier


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("resnet18")


def test_bit_identical_check_passes_when_nothing_changed(backbone):
    before = snapshot(backbone)
    with frozen(backbone):
        pooled_features(backbone, [[torch.randn(3, 64, 64), torch.randn(3, 64, 64)]])
    assert_unchanged(backbone, before)
    assert all(p.requires_grad for p in backbone.parameters())  # restored after the probe


def test_bit_identical_check_fires_when_a_weight_changes():
    model = build_backbone("resnet18")
    before = snapshot(model)
    with torch.no_grad():
        model.layer3[0].conv1.weight[0, 0, 0, 0] += 1e-6
    with pytest.raises(AssertionError, match="layer3.0.conv1.weight"):
        assert_unchanged(model, before)


def test_frozen_fires_when_batchnorm_statistics_move_during_the_probe():
    model = build_backbone("resnet18")
    with pytest.raises(AssertionError, match="running_mean"):
        with frozen(model):
            model.train()  # a probe that forgets eval mode updates the BN statistics
            model(torch.randn(2, 3, 64, 64))


def test_pooled_features_are_unit_length_and_mix_image_sizes(backbone):
    with frozen(backbone):
        feats = pooled_features(backbone, [[torch.randn(3, 64, 64), torch.randn(3, 96, 64)], [torch.randn(3, 64, 64)]])
    assert feats.shape == (3, 512)
    assert torch.allclose(feats.norm(dim=1), torch.ones(3))
    with frozen(backbone):
        c4 = pooled_features(backbone, [[torch.randn(3, 64, 64)]], stage=2)
    assert c4.shape == (1, 256)


def test_dense_features_concatenate_at_the_finest_stage(backbone):
    with frozen(backbone):
        out = dense_features(backbone, torch.randn(2, 3, 128, 128), parse_stages("c5,c4"))
    assert out.shape == (2, 256 + 512, 8, 8)
    with pytest.raises(ValueError, match="c7"):
        parse_stages("c7")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.slow
def test_dilation_keeps_weights_and_sets_the_output_stride(arch):
    torch.manual_seed(0)
    original = build_backbone(arch)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = original.eval()(x)
    dilated = dilate(build_backbone(arch), 8)
    dilated.load_state_dict(original.state_dict())  # same names and shapes
    with torch.no_grad():
        assert dilated.eval()(x).shape[-2:] == (8, 8)
        assert dilate(build_backbone(arch), 16).eval()(x).shape[-2:] == (4, 4)
        assert dilate(build_backbone(arch), 32).eval()(x).shape == reference.shape
    assert (
        dilated.layer4[1].conv2.dilation == (4, 4) if arch == "resnet50" else dilated.layer4[1].conv1.dilation == (4, 4)
    )
    assert FCN(dilated, num_classes=5).eval()(x).shape == (1, 5, 64, 64)


def test_detector_trunk_holds_the_backbone_weights(backbone):
    config = DetConfig(data="-", min_size=(64,), max_size=64, task="mask")
    model = build_detector(backbone, "resnet18", num_classes=3, config=config)
    body = model.backbone.body
    assert torch.equal(body.layer2[0].conv1.weight, backbone.layer2[0].conv1.weight)
    assert all(p.requires_grad for p in body.parameters())  # trainable_layers = 5
    frozen_model = build_detector(backbone, "resnet18", 3, DetConfig(data="-", norm="frozen"))
    bn = frozen_model.backbone.body.bn1
    assert type(bn).__name__ == "FrozenBatchNorm2d" and torch.equal(bn.running_var, backbone.bn1.running_var)


def test_trunk_load_is_strict_except_the_classifier(backbone):
    state = backbone.state_dict()
    load_trunk(torchvision_classifier("resnet18"), state)  # fc.* missing is fine
    broken = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing \['layer1.0.conv1.weight'\], unexpected \['extra.weight'\]"):
        load_trunk(torchvision_classifier("resnet18"), broken)


def test_freeze_batchnorm_keeps_the_function():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.uniform_()
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    assert torch.allclose(freeze_batchnorm(model)(x), expected, atol=1e-6)
