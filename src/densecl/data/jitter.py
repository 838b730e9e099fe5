"""MoCo-v2's photometric augmentation for views of any number of channels: the rule for N bands.

Photos (8-bit RGB, no bands chosen) keep torchvision's MoCo-v2 transforms
(:func:`densecl.data.transforms.moco_v2_photometric`). Every other view, a
``C x H x W`` float tensor of stored values (not yet normalised), gets:

- with probability 0.8, the jitter, its operations in a random order, each
  factor uniform in ``[0.6, 1.4]`` (MoCo-v2's strength 0.4):

  - brightness: ``x <- b * x``;
  - contrast: ``x <- c * x + (1 - c) * m``, ``m`` the mean of the view;
  - ``jitter: image`` (the default for one channel): one ``b`` and one ``c`` for
    the whole view, ``m`` its mean over all channels and pixels;
  - ``jitter: channels`` (the default for two or more bands that are not the
    file's own RGB): one ``b`` and one ``c`` drawn for each band, ``m`` that
    band's own mean, since the bands of a multispectral sensor vary apart (gain,
    atmosphere, season, illumination);
  - ``jitter: rgb`` (the default for a file's own three channels, 16-bit RGB
    for example): torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1), brightness,
    contrast against the luma mean, saturation and hue, in a random order;
- ``rgb`` only: grayscale (the luma in all three channels) with probability 0.2;
- Gaussian blur, sigma uniform in ``[0.1, 2]``, probability 0.5, every channel
  alike (kernel about a tenth of the crop), as for photos.

Hue, saturation and grayscale need colour: they act on three RGB channels
only. No operation clamps: stored values have no white level (a photo's 1.0).
Hue is rotated on the view divided by its maximum (a rotation keeps the
maximum, so nothing is clipped), negative values taken as 0. Random numbers
come from torch's global generator, which the data set seeds per item.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

from densecl.data import colour

MODES = ("auto", "rgb", "channels", "image")


def default_mode(channels: int, file_rgb: bool) -> str:
    """``auto``: ``rgb`` for three channels that are the file's own RGB, ``image`` for one, else ``channels``."""
    if channels == 3 and file_rgb:
        return "rgb"
    return "image" if channels == 1 else "channels"


class BandJitter:
    """The photometric augmentation of one ``C x H x W`` float view (see the module docstring)."""

    def __init__(self, channels: int, mode: str, crop_size: int) -> None:
        if mode not in MODES[1:]:
            raise ValueError(f"jitter must be one of {', '.join(MODES[1:])}, got {mode!r}")
        if mode == "rgb" and channels != 3:
            raise ValueError(f"jitter rgb needs 3 channels, got {channels}")
        self.channels, self.mode, self.kernel = channels, mode, colour.blur_kernel_size(crop_size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        brightness, contrast, saturation, hue = colour.JITTER
        if float(torch.rand(())) < colour.P_JITTER:
            ops = 4 if self.mode == "rgb" else 2
            for op in torch.randperm(ops).tolist():
                if op == colour.BRIGHTNESS:
                    x = x * self._factors(brightness)
                elif op == colour.CONTRAST:
                    c = self._factors(contrast)
                    x = c * x + (1 - c) * self._mean(x)
                elif op == colour.SATURATION:
                    s = _uniform(1 - saturation, 1 + saturation)
                    x = s * x + (1 - s) * _luma(x)
                else:
                    x = _rotate_hue(x, _uniform(-hue, hue))
        if self.mode == "rgb" and float(torch.rand(())) < colour.P_GRAYSCALE:
            x = _luma(x).expand_as(x).clone()
        if float(torch.rand(())) < colour.P_BLUR:
            sigma = _uniform(*colour.BLUR_SIGMA)
            x = F.gaussian_blur(x, [self.kernel, self.kernel], [sigma, sigma])
        return x

    def _factors(self, strength: float) -> torch.Tensor:
        """One factor for the view, or (``channels``) one a band: ``1 x 1 x 1`` or ``C x 1 x 1``."""
        n = self.channels if self.mode == "channels" else 1
        return (1 - strength + 2 * strength * torch.rand(n)).view(n, 1, 1)

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "channels":
            return x.mean(dim=(1, 2), keepdim=True)  # C x 1 x 1
        if self.mode == "rgb":
            return _luma(x).mean()  # torchvision: the mean of the grayscale image
        return x.mean()


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _luma(x: torch.Tensor) -> torch.Tensor:
    """``3 x H x W`` -> ``1 x H x W``, torchvision's weights."""
    return colour.grayscale(x[None])[0]


def _rotate_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    x = x.clamp(min=0)
    scale = x.amax().clamp(min=torch.finfo(x.dtype).tiny)
    return colour.adjust_hue(x[None] / scale, torch.tensor([shift]))[0] * scale
