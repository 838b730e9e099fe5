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
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.export import inputs
from densecl.export.torchvision import plain_state_dict
from densecl.weights import BackboneWeights

SUMMARY = "torchvision names for timm's file route, pretrained_cfg_overlay=dict(file=..., num_classes=0) (.pth)"


def write(weights: BackboneWeights, path: Path) -> None:
    torch.save(plain_state_dict(weights), path)


def usage(path: Path, weights: BackboneWeights) -> str:
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
