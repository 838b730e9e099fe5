"""timm: the torchvision-named state dict, loaded through timm's documented local-file route.

timm's ResNet names are torchvision's. ``pretrained_cfg_overlay=dict(file=PATH,
num_classes=0)`` tells timm the file has no classifier, so it drops ``fc`` from
the load (strict otherwise) and builds a headless model; add ``num_classes=N``
for a fresh N-way classifier. Without ``num_classes=0`` in the overlay timm
takes the file for a 1000-class checkpoint and fails on the missing ``fc``
unless the model's own ``num_classes`` differs from 1000.
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.export.torchvision import plain_state_dict
from densecl.weights import BackboneWeights

SUMMARY = "torchvision names for timm's file route, pretrained_cfg_overlay=dict(file=..., num_classes=0) (.pth)"


def write(weights: BackboneWeights, path: Path) -> None:
    torch.save(plain_state_dict(weights), path)


def usage(path: Path, weights: BackboneWeights) -> str:
    return (
        f'model = timm.create_model("{weights.arch}", pretrained=True,\n'
        f'                          pretrained_cfg_overlay=dict(file="{path}", num_classes=0))\n'
        "# headless (features); add num_classes=N for a fresh N-way classifier"
    )
