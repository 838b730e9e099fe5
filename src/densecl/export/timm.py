"""timm: the torchvision-named state dict, loaded through timm's documented local-file route.

timm's ResNet names are torchvision's. ``pretrained_cfg_overlay=dict(file=PATH,
num_classes=0)`` tells timm the file has no classifier, so it drops ``fc`` from
the load (strict otherwise) and builds a headless model; add ``num_classes=N``
for a fresh N-way classifier. Without ``num_classes=0`` in the overlay timm
takes the file for a 1000-class checkpoint and fails on the missing ``fc``
unless the model's own ``num_classes`` differs from 1000.

Weights for ``C`` input channels load into ``timm.create_model(..., in_chans=C)``:
timm loads a first convolution that already has the model's shape unchanged
(``input_size=(C, ...)`` in the overlay tells it the file was made for C
channels); the overlay also carries the input's mean and std.

A timm backbone (``--arch timm/<name>``) is written under timm's names: every
layer up to the last feature map, which is ``timm.create_model(name)`` less
the head that DenseCL never trained (the classifier, and where a family has
them the layers between: ConvNeXt's ``head.norm``, EfficientNet's
``conv_head`` and ``bn2``). That is exactly the state dict of timm's model after
``prune_intermediate_layers(indices=4, prune_norm=True, prune_head=True)``,
which loads it strictly. timm's file route loads it too: with
``features_only=True`` (the feature maps as pre-trained), or with
``num_classes=N`` and ``num_classes=0`` in the overlay (a classifier). In both
the model's classes differ from the overlay's, so timm drops its classifier
and loads non-strictly (``load_pretrained``): the head starts fresh and every
tensor of the file lands (the tests check both, family by family).
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.config import TIMM_PREFIX, is_timm_arch
from densecl.export import inputs
from densecl.export.torchvision import plain_state_dict
from densecl.models.timm_backbone import meta_backbone
from densecl.weights import BackboneWeights

SUMMARY = (
    "torchvision names for timm's file route, pretrained_cfg_overlay=dict(file=..., num_classes=0); timm's names for a "
    "timm/<name> backbone (.pth)"
)


def write(weights: BackboneWeights, path: Path) -> None:
    torch.save(plain_state_dict(weights), path)


def usage(path: Path, weights: BackboneWeights) -> str:
    if is_timm_arch(weights.arch):
        return timm_usage(path, weights)
    overlay = f'file="{path}", num_classes=0'
    chans = ""
    if weights.in_channels != 3:  # timm loads a first conv that already has the model's shape as it is
        chans = f" in_chans={weights.in_channels},"
        overlay += f", input_size=({weights.in_channels}, 224, 224)"
    stats = inputs.statistics(weights)
    if stats is not None:
        overlay += f", mean={tuple(stats[0])}, std={tuple(stats[1])}"
    return (
        f'model = timm.create_model("{weights.arch}", pretrained=True,{chans}\n'
        f"                          pretrained_cfg_overlay=dict({overlay}))\n"
        "# headless (features); add num_classes=N for a fresh N-way classifier\n" + inputs.comment(weights)
    )


def timm_usage(path: Path, weights: BackboneWeights) -> str:
    """How timm loads a timm backbone's file: its feature maps, or a classifier with a fresh head."""
    name = str(weights.arch).removeprefix(TIMM_PREFIX)
    overlay, chans = f'file="{path}"', ""
    if weights.in_channels != 3:
        chans = f" in_chans={weights.in_channels},"
        overlay += f", input_size=({weights.in_channels}, 224, 224)"
    stats = inputs.statistics(weights)
    if stats is not None:
        overlay += f", mean={tuple(stats[0])}, std={tuple(stats[1])}"
    head = sorted({key.rsplit(".", 1)[0] for key in meta_backbone(name).head_keys})
    return (
        f'model = timm.create_model("{name}", pretrained=True, features_only=True,{chans}\n'
        f"                          pretrained_cfg_overlay=dict({overlay}))\n"
        "# the pre-trained feature maps; or a classifier on them (N classes):\n"
        f'model = timm.create_model("{name}", pretrained=True, num_classes=N,{chans}\n'
        f"                          pretrained_cfg_overlay=dict({overlay}, num_classes=0))\n"
        f"# the file stops at the last feature map: timm starts the head ({', '.join(head)}) fresh\n"
        + inputs.comment(weights)
    )
