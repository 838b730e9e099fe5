"""RGB weights for another number of input channels: the first convolution adapted as timm adapts it.

``--init`` with ImageNet or DenseCL RGB weights on 1-channel (X-ray, CT) or
N-channel (multispectral) data keeps every pretrained layer; only the first
convolution (a ResNet's ``conv1.weight``, ``64 x 3 x 7 x 7``; a timm model's
``pretrained_cfg['first_conv']``) must take another number of channels.
The rule is timm's ``adapt_input_conv``, so the numbers agree with a timm
model created with ``in_chans``:

- one channel: the sum of the RGB filters, which is their mean scaled by 3/1.
  A gray image fed as three equal channels met exactly these weights, so each
  filter's response to it is unchanged;
- N channels: the RGB filters repeated (R, G, B, R, G, B, ...) up to N,
  scaled by 3/N, so the summed response to N equal channels stays what it
  was for three.

Everything after the first convolution expects what it learnt from, which
is why the scale matters: with per-channel normalised inputs of similar
spread, the first activations keep their size.
"""

from __future__ import annotations

import math

import torch

STEM = "conv1.weight"


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``O x I x k x k`` filters -> ``O x in_channels x k x k`` (see the module docstring); unchanged if equal.

    Raises:
        ValueError: ``in_channels`` < 1.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    channels = weight.shape[1]
    if in_channels == channels:
        return weight
    w = weight.float()
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_channels / channels), 1, 1)[:, :in_channels] * (channels / in_channels)
    return w.to(weight.dtype)


def fit_input_channels(
    state_dict: dict[str, torch.Tensor], in_channels: int, where: str, stem: str = STEM
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict with its first convolution (key ``stem``) adapted to ``in_channels``, and the one line that
    says so (None: unchanged)."""
    weight = state_dict[stem]
    if weight.shape[1] == in_channels:
        return state_dict, None
    adapted = {**state_dict, stem: adapt_input_conv(weight, in_channels)}
    rule = (
        "the sum of its filters"
        if in_channels == 1
        else f"its filters repeated and scaled by {weight.shape[1]}/{in_channels}"
    )
    note = (
        f"{where}: the first convolution{'' if stem == STEM else f' ({stem})'} takes {weight.shape[1]} channels, "
        f"this model {in_channels}: "
        f"adapted as timm's adapt_input_conv does ({rule}); every other layer is loaded as it is"
    )
    return adapted, note
