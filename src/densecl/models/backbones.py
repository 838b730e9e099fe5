"""Backbones by name: torchvision ResNets without ``avgpool`` and ``fc``, and any timm CNN (``timm/<name>``).

The contract every backbone keeps (timm-style): ``forward(x)`` returns the C5
feature map ``N x C x H/32 x W/32`` and ``out_channels`` is ``C``;
``forward_stages(x)`` returns C2..C5 and ``stage_channels`` their channels;
``feature_sizes(H, W)`` their sides; ``input_spec`` what the backbone takes;
``library_state_dict()`` / ``load_library_state_dict()`` the tensors under the
names of the library the architecture comes from (torchvision's, timm's).
The timm side is :mod:`densecl.models.timm_backbone`. For a ResNet, parameter
names are exactly torchvision's (``conv1.weight``, ``layer1.0.bn1.weight``,
...), so a backbone state dict loads into ``torchvision.models.<arch>()`` with
only ``fc.*`` missing, and the authors' ``encoder_q.0.*`` tensors map by
prefix alone.

The first convolution takes ``in_channels`` (3 for RGB; any number for
grayscale, multispectral or DICOM input): a fresh ``conv1`` of the same
shape otherwise, ``64 x in_channels x 7 x 7``. Its name is unchanged, so the
state dict loads into ``torchvision.models.<arch>()`` whose ``conv1`` is
replaced the same way (docs/your-images.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tvm

from densecl.config import ARCHS, TIMM_PREFIX, is_timm_arch, stage_side
from densecl.errors import InputError
from densecl.inputs import InputSpec
from densecl.models.timm_backbone import TimmBackbone, feature_sizes

STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet trunk: stem and four stages, no pooling or classifier.

    Args:
        resnet: a torchvision ``ResNet``; its modules are adopted, not copied.
        in_channels: input channels of the first convolution.
    """

    def __init__(self, resnet: tvm.ResNet, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels != resnet.conv1.in_channels:
            resnet.conv1 = first_conv(resnet.conv1, in_channels)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels: int = resnet.fc.in_features
        #: what the backbone takes (channels, bands, mean and std), as timm models carry ``pretrained_cfg``;
        #: set by :func:`densecl.weights.load_backbone` from the weights file
        self.input_spec: InputSpec = InputSpec() if in_channels == 3 else InputSpec(in_channels, None, None, None, None)
        #: channels of C2..C5, in order
        self.stage_channels: tuple[int, ...] = tuple(_last_bn(getattr(self, s)).num_features for s in STAGES)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns [C2, C3, C4, C5]; Ck is ``N x C_k x H/2^k x W/2^k``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for name in STAGES:
            x = getattr(self, name)(x)
            out.append(x)
        return out

    @property
    def in_channels(self) -> int:
        return self.conv1.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x in_channels x H x W`` -> C5 ``N x C x H/32 x W/32``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def feature_sizes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """``(h, w)`` of C2..C5 for an input of ``height x width``."""
        return tuple((stage_side(height, s), stage_side(width, s)) for s in range(len(STAGES)))

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors under torchvision's names: this module's own state dict."""
        return self.state_dict()

    def load_library_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads tensors under torchvision's names, strictly."""
        self.load_state_dict(state_dict, strict=True)


def first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` (the stem) that takes ``in_channels`` channels."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )


def _last_bn(stage: nn.Module) -> nn.BatchNorm2d:
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def _torchvision(name: str) -> Callable[..., ResNetBackbone]:
    def build(in_channels: int = 3) -> ResNetBackbone:
        return ResNetBackbone(getattr(tvm, name)(weights=None), in_channels)

    build.__name__ = name
    return build


#: name -> function that builds a randomly initialised backbone (``in_channels`` optional, 3 by default)
BACKBONES: dict[str, Callable[..., ResNetBackbone]] = {name: _torchvision(name) for name in ARCHS}

Backbone = ResNetBackbone | TimmBackbone  # what build_backbone returns


def build_backbone(arch: str, in_channels: int = 3) -> Backbone:
    """Builds a randomly initialised backbone, its first convolution taking ``in_channels``: a registry name, or
    ``timm/<name>`` for a timm model (:class:`~densecl.models.timm_backbone.TimmBackbone`)."""
    if is_timm_arch(arch):
        return TimmBackbone(arch.removeprefix(TIMM_PREFIX), in_channels)
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}, or timm/<name>")
    return BACKBONES[arch](in_channels)


def grid_sides(arch: str, side: int) -> tuple[int, ...]:
    """Sides of C2..C5 of ``arch`` for a square input of ``side`` pixels (no weights are built)."""
    if is_timm_arch(arch):
        return tuple(h for h, _ in feature_sizes(arch.removeprefix(TIMM_PREFIX), side, side))
    return tuple(stage_side(side, s) for s in range(len(STAGES)))


def check_grid(arch: str, crop_size: int) -> int:
    """The side of ``arch``'s C5 grid for ``crop_size``; :class:`InputError` (one line) below 2 x 2."""
    side = grid_sides(arch, crop_size)[-1]
    if side < 2:
        smallest = _smallest_crop(arch, crop_size)
        raise InputError(
            f"crop_size {crop_size} gives {arch} a {side}x{side} C5 grid; DenseCL needs at least 2x2: use crop_size "
            f">= {smallest}"
        )
    return side


def _smallest_crop(arch: str, below: int) -> int:
    """The smallest crop whose C5 grid is at least 2 x 2 (the grid grows with the crop)."""
    low, high = below, max(2 * below, 8)
    while grid_sides(arch, high)[-1] < 2:
        low, high = high, 2 * high
    while high - low > 1:  # grid(low) < 2 <= grid(high)
        middle = (low + high) // 2
        low, high = (low, middle) if grid_sides(arch, middle)[-1] >= 2 else (middle, high)
    return high


def torchvision_classifier(arch: str) -> tvm.ResNet:
    """The torchvision model whose state dict a backbone's matches (plus ``fc``)."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    return getattr(tvm, arch)(weights=None)
