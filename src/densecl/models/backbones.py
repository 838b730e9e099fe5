"""ResNet backbones: torchvision ResNets without ``avgpool`` and ``fc``.

The contract every backbone keeps (timm-style): ``forward(x)`` returns the C5
feature map ``N x C x H/32 x W/32`` and ``out_channels`` is ``C``. Parameter
names are exactly torchvision's (``conv1.weight``, ``layer1.0.bn1.weight``,
...), so a backbone state dict loads into ``torchvision.models.<arch>()`` with
only ``fc.*`` missing, and the authors' ``encoder_q.0.*`` tensors map by
prefix alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tvm

from densecl.config import ARCHS

STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet trunk: stem and four stages, no pooling or classifier.

    Args:
        resnet: a torchvision ``ResNet``; its modules are adopted, not copied.
    """

    def __init__(self, resnet: tvm.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.out_channels: int = resnet.fc.in_features
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x 3 x H x W`` -> C5 ``N x C x H/32 x W/32``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _last_bn(stage: nn.Module) -> nn.BatchNorm2d:
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def _torchvision(name: str) -> Callable[[], ResNetBackbone]:
    def build() -> ResNetBackbone:
        return ResNetBackbone(getattr(tvm, name)(weights=None))

    build.__name__ = name
    return build


#: name -> function that builds a randomly initialised backbone
BACKBONES: dict[str, Callable[[], ResNetBackbone]] = {name: _torchvision(name) for name in ARCHS}


def build_backbone(arch: str) -> ResNetBackbone:
    """Builds a randomly initialised backbone by registry name."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[arch]()


def torchvision_classifier(arch: str) -> tvm.ResNet:
    """The torchvision model whose state dict a backbone's matches (plus ``fc``)."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
    return getattr(tvm, arch)(weights=None)
