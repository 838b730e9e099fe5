"""torchvision: a flat state dict that ``torchvision.models.<arch>()`` loads with only ``fc`` missing.

model = torchvision.models.resnet50()
model.load_state_dict(torch.load("r50_densecl.pth"), strict=False)  # missing: fc.weight, fc.bias

Weights for another number of input channels (``conv1.weight`` of shape
``64 x C x 7 x 7``) need ``model.conv1`` replaced by a ``Conv2d(C, 64, 7, 2, 3,
bias=False)`` first; the usage text prints that line and the input's mean and std.
"""

from __future__ import annotations

from pathlib import Path

import torch

from densecl.export import inputs
from densecl.weights import BackboneWeights

SUMMARY = "flat state dict, torchvision ResNet names, no fc (.pth)"


def plain_state_dict(weights: BackboneWeights) -> dict[str, torch.Tensor]:
    """The tensors as standalone contiguous CPU copies (a view would drag its whole storage into the file)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.state_dict.items()}


def write(weights: BackboneWeights, path: Path) -> None:
    torch.save(plain_state_dict(weights), path)


def usage(path: Path, weights: BackboneWeights) -> str:
    conv = inputs.first_conv_line(weights)
    return "\n".join(
        [
            f"model = torchvision.models.{weights.arch}()",
            *([conv] if conv else []),
            f'missing, unexpected = model.load_state_dict(torch.load("{path}"), strict=False)',
            "assert missing == ['fc.weight', 'fc.bias'] and not unexpected  # the classifier starts fresh",
            inputs.comment(weights),
        ]
    )
