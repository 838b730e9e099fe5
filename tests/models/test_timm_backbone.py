"""timm backbones: the backbone contract on each tested family, against timm's own model, and the refusals."""

import pytest
import torch

from densecl.config import TIMM_TESTED, PretrainConfig
from densecl.errors import InputError
from densecl.models.backbones import build_backbone, check_grid, grid_sides

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("arch", TIMM_TESTED)
@pytest.mark.slow
def test_the_contract_on_each_family(arch):
    """C2..C5 are timm's last four feature levels: channels, sides and tensors as timm's features_only model gives
    them from the same weights; C5 is forward's output; every parameter learns from C5; the tensors are timm's less
    the head."""
    name = arch.removeprefix("timm/")
    torch.manual_seed(0)
    backbone = build_backbone(arch).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    stages = backbone.forward_stages(x)
    assert [s.shape[1] for s in stages] == list(backbone.stage_channels) and backbone.out_channels == stages[-1].shape[
        1
    ]
    assert [tuple(s.shape[-2:]) for s in stages] == list(backbone.feature_sizes(64, 64))
    assert grid_sides(arch, 64) == tuple(s.shape[-1] for s in stages)

    reference = timm.create_model(name, pretrained=False, features_only=True).eval()
    full = timm.create_model(name, pretrained=False)
    assert set(backbone.library_state_dict()) == set(full.state_dict()) - backbone.head_keys
    assert backbone.head_keys and all(k not in backbone.library_state_dict() for k in backbone.head_keys)
    missing, unexpected = full.load_state_dict(backbone.library_state_dict(), strict=False)
    counters = {k for k in backbone.head_keys if k.endswith("num_batches_tracked")}  # torch fills absent ones with 0
    assert set(missing) == backbone.head_keys - counters and not unexpected
    reference.load_state_dict(_features_names(full.state_dict(), reference), strict=True)
    with torch.no_grad():
        want = reference(x)[-4:]  # features_only gives every level; ours are the last four
        assert all(torch.equal(a, b) for a, b in zip(stages, want)) and torch.equal(backbone(x), want[-1])

    backbone.train()
    backbone(x).square().mean().backward()
    assert all(p.grad is not None for p in backbone.parameters())  # nothing pruned is left unused (DDP needs it)


def _features_names(state: dict, features) -> dict:
    """timm's model names -> its features_only model's (FeatureListNet flattens ``stages.0`` to ``stages_0``)."""
    by_flat = {k.replace(".", "_"): k for k in state}
    return {k: state[by_flat[k.replace(".", "_")]] for k in features.state_dict()}


def test_in_channels_and_the_first_convolution():
    backbone = build_backbone("timm/resnet18d", in_channels=5)
    assert backbone.stem == "conv1.0.weight" and backbone.in_channels == 5  # timm's pretrained_cfg first_conv
    assert backbone.library_state_dict()["conv1.0.weight"].shape[1] == 5
    assert backbone.input_spec.channels == 5 and backbone.input_spec.mean is None
    assert backbone(torch.randn(1, 5, 64, 64)).shape == (1, 512, 2, 2)


def test_an_unknown_name_is_one_line_with_the_closest_names():
    with pytest.raises(InputError, match=r"timm has no model 'convnxt_atto'; the closest: timm/convnext_atto") as e:
        build_backbone("timm/convnxt_atto")
    assert "\n" not in str(e.value) and "timm.list_models()" in str(e.value)
    with pytest.raises(
        InputError, match=r"unknown arch 'resnet5' \(closest: resnet50, .*\): give a torchvision ResNet"
    ):
        PretrainConfig(arch="resnet5").validate()
    PretrainConfig(arch="timm/convnext_atto", crop_size=32).validate()  # a timm grid is checked on the model


def test_a_vit_has_no_feature_pyramid_and_is_refused():
    with pytest.raises(InputError, match=r"timm/vit_tiny_patch16_224 has no spatial feature pyramid: .* stride 16"):
        build_backbone("timm/vit_tiny_patch16_224")


def test_a_grid_below_two_by_two_names_the_smallest_crop():
    # ConvNeXt's stem is a 4x4 convolution of stride 4 without padding: sides round down, unlike a ResNet's
    assert grid_sides("timm/convnext_atto", 63)[-1] == 1 and grid_sides("timm/convnext_atto", 64)[-1] == 2
    assert grid_sides("resnet18", 33)[-1] == 2
    with pytest.raises(InputError, match=r"crop_size 40 gives timm/convnext_atto a 1x1 C5 grid; .*crop_size >= 64$"):
        check_grid("timm/convnext_atto", 40)
    assert check_grid("timm/resnet18d", 33) == 2
