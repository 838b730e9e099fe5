"""OpenMMLab (mmdet, mmseg, mmpretrain): ``{"state_dict": {...}, "meta": {...}}`` with torchvision names.

mmcv/mmdet/mmpretrain ResNets name their parameters as torchvision does
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn1``,
``layer1.0.downsample.0/1``), so the names are written bare, with **no**
``backbone.`` prefix. Load them in a backbone config with
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` and no ``prefix``:
mmengine's ``Pretrained`` init reads ``state_dict`` and loads with
``strict=False``, so ``prefix='backbone.'`` would match nothing and load nothing
without an error. ``meta`` holds only strings, so ``torch.load(weights_only=True)``
(the default since torch 2.6) reads the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.export import inputs
from densecl.export.torchvision import plain_state_dict
from densecl.weights import BackboneWeights, resnet_shape

SUMMARY = "OpenMMLab checkpoint {state_dict, meta}, torchvision names, no prefix (.pth)"


def write(weights: BackboneWeights, path: Path) -> None:
    meta = {
        "exported_by": "densecl",
        "arch": str(weights.arch),
        "source_format": weights.source_format,
        "layout": "torchvision ResNet names without prefix; init_cfg=dict(type='Pretrained', checkpoint=...)",
        "input": weights.input_spec.to_config(),  # channels, bands, mean, std: densecl reads them back
    }
    torch.save({"state_dict": plain_state_dict(weights), "meta": meta}, path)


def backbone_config(path: Path | str, weights: BackboneWeights, norm: str = "SyncBN") -> str:
    """A ``backbone=dict(...)`` for mmdet / mmseg / mmpretrain that these weights fill."""
    shape = resnet_shape(weights.state_dict)
    if shape.groups > 1:
        kind = (
            f"type='ResNeXt', depth={shape.depth}, groups={shape.groups}, base_width={shape.width_per_group},"
            "  # mmpretrain calls base_width width_per_group"
        )
    elif shape.bottleneck and shape.width_per_group != 64:
        kind = f"type='ResNet', depth={shape.depth},  # wide ResNet: OpenMMLab has no width option, use another format"
    else:
        kind = f"type='ResNet', depth={shape.depth},"
    channels = [f"    in_channels={weights.in_channels},"] if weights.in_channels != 3 else []
    return "\n".join(
        [
            "backbone=dict(",
            f"    {kind}",
            *channels,
            "    style='pytorch',  # stride in the 3x3 conv, as torchvision",
            f"    norm_cfg=dict(type='{norm}', requires_grad=True),",
            "    norm_eval=False,",
            "    frozen_stages=-1,",
            f"    init_cfg=dict(type='Pretrained', checkpoint='{path}')),  # no prefix: the names are bare",
        ]
    )


def usage(path: Path, weights: BackboneWeights) -> str:
    return (
        "# mmdet / mmseg / mmpretrain: in model=dict(...)\n"
        + backbone_config(path, weights)
        + "\n"
        + data_preprocessor(weights)
        + "\n# mmseg: type='ResNet' (not ResNetV1c), and set model.pretrained=None"
    )


def data_preprocessor(weights: BackboneWeights) -> str:
    """The ``data_preprocessor`` mean and std: OpenMMLab feeds 0..255 RGB photos, other images as stored."""
    spec, stats = weights.input_spec, inputs.statistics(weights)
    if stats is None:
        return inputs.comment(weights)
    scale = 255.0 if spec.photo is not False else 1.0
    mean, std = (", ".join(f"{v * scale:.7g}" for v in values) for values in stats)
    rgb = ", bgr_to_rgb=True" if weights.in_channels == 3 and spec.photo is not False else ""
    return f"# data_preprocessor: mean=[{mean}], std=[{std}]{rgb}"
