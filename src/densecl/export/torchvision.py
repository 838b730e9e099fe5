"""torchvision: a flat state dict that ``torchvision.models.<arch>()`` loads with only ``fc`` missing.

model = torchvision.models.resnet50()
model.load_state_dict(torch.load("r50_densecl.pth"), strict=False)  # missing: fc.weight, fc.bias
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.weights import BackboneWeights

SUMMARY = "flat state dict, torchvision ResNet names, no fc (.pth)"


def plain_state_dict(weights: BackboneWeights) -> dict[str, torch.Tensor]:
    """The tensors as standalone contiguous CPU copies (a view would drag its whole storage into the file)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.state_dict.items()}


def write(weights: BackboneWeights, path: Path) -> None:
    torch.save(plain_state_dict(weights), path)


def usage(path: Path, weights: BackboneWeights) -> str:
    return (
        f"model = torchvision.models.{weights.arch}()\n"
        f'missing, unexpected = model.load_state_dict(torch.load("{path}"), strict=False)\n'
        "assert missing == ['fc.weight', 'fc.bias'] and not unexpected  # the classifier starts fresh"
    )
