"""ResNet backbones: torchvision ResNets without ``avgpool`` and ``fc``.

The contract every backbone keeps (timm-style): ``forward(x)`` returns the C5
feature map ``N x C x H/32 x W/32`` and ``out_channels`` is ``C``. Parameter
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

from densecl.config import ARCHS
from densecl.inputs import InputSpec

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


def build_backbone(arch: str, in_channels: int = 3) -> ResNetBackbone:
    """Builds a randomly initialised backbone by registry name, its first convolution taking ``in_channels``."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[arch](in_channels)


def torchvision_classifier(arch: str) -> tvm.ResNet:
    """The torchvision model whose state dict a backbone's matches (plus ``fc``)."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    return getattr(tvm, arch)(weights=None)
