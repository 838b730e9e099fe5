"""Which registered ResNet a torchvision-named state dict is: exact key and shape comparison."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import torch

from densecl.errors import InputError
from densecl.models.backbones import BACKBONES
from densecl.weights.messages import shape_difference


def guess_arch(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The registered backbone with exactly these torchvision keys and shapes, or None.

    The first convolution may take any number of input channels (grayscale, multispectral); the rest is exact.
    """
    shapes = _shapes(state_dict)
    for arch in BACKBONES:
        if _reference_shapes(arch) == shapes:
            return arch
    return None


def fit_arch(target: Mapping[str, torch.Tensor], wanted: str | None, fmt: str, where: str) -> str:
    """The registered arch the tensors fit exactly; the config's arch, if one is named, must be it.

    Raises:
        InputError: ``wanted`` is unknown or does not fit, or no registered arch fits.
    """
    shapes = _shapes(target)
    if wanted is not None:
        if wanted not in BACKBONES:
            raise InputError(
                f"{where} names arch {wanted!r}, which is not one of {', '.join(BACKBONES)}; use a known arch"
            )
        if _reference_shapes(wanted) != shapes:
            raise InputError(
                f"{where}: its config says {wanted} but {_difference(wanted, shapes)}; the file is inconsistent"
            )
        return wanted
    arch = guess_arch(target)
    if arch is None:
        closest = max(BACKBONES, key=lambda a: _overlap(_reference_shapes(a), shapes))
        raise InputError(
            f"{where}: the {fmt} backbone fits no supported ResNet ({', '.join(BACKBONES)}); "
            f"against the closest, {closest}, {_difference(closest, shapes)}; pass a checkpoint of one of these"
        )
    return arch


class ResNetShape(NamedTuple):
    """What configs of other libraries need to rebuild the same ResNet."""

    depth: int  # 18, 34, 50, 101, 152
    bottleneck: bool
    groups: int  # 3x3-conv groups (32 for ResNeXt)
    width_per_group: int  # 3x3-conv channels per group in the first stage (64 for ResNet-50, 4 for ResNeXt-50 32x4d)


def resnet_shape(state_dict: Mapping[str, torch.Tensor]) -> ResNetShape:
    """Reads depth, block type and group width off torchvision-named tensors."""
    blocks = {tuple(k.split(".")[:2]) for k in state_dict if k.startswith("layer")}
    bottleneck = "layer1.0.conv3.weight" in state_dict
    conv2 = state_dict["layer1.0.conv2.weight"]  # width x width/groups x 3 x 3
    groups = conv2.shape[0] // conv2.shape[1]
    return ResNetShape(
        depth=len(blocks) * (3 if bottleneck else 2) + 2,
        bottleneck=bottleneck,
        groups=groups,
        width_per_group=conv2.shape[0] // groups,
    )


@functools.cache
def _reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        return _shapes(BACKBONES[arch]().state_dict())


def in_channels_of(state_dict: Mapping[str, torch.Tensor], stem: str = "conv1.weight") -> int:
    """Input channels of the first convolution, the weight ``stem`` (3 for RGB)."""
    weight = state_dict.get(stem)
    return int(weight.shape[1]) if weight is not None and weight.ndim == 4 else 3


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Keys and shapes, the first convolution's input channels set to 3 (any number fits a registered arch)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    stem = shapes.get("conv1.weight")
    if stem is not None and len(stem) == 4:
        shapes["conv1.weight"] = (stem[0], 3, *stem[2:])
    return shapes


def _overlap(reference: Mapping[str, tuple], shapes: Mapping[str, tuple]) -> int:
    return sum(1 for k, s in shapes.items() if reference.get(k) == s)


def _difference(arch: str, shapes: Mapping[str, tuple[int, ...]]) -> str:
    return shape_difference(_reference_shapes(arch), shapes)
