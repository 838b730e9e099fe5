"""MoCo-v2's colour augmentation: its constants, and the batched form with per-sample parameters.

The CPU views (:func:`densecl.data.transforms.moco_v2_photometric`) apply
torchvision's transforms one image at a time; the ``gpu`` data backend draws
the same parameters per sample (:func:`sample_colour`) and applies them to a
whole batch at once (:func:`apply_colour`). Every operation here follows
torchvision's ``transforms.v2.functional`` on float images in ``[0, 1]``
(tested against it); the device is the input's, so CPU tensors work too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

JITTER = (0.4, 0.4, 0.4, 0.1)  # ColorJitter strengths: brightness, contrast, saturation, hue
P_JITTER = 0.8
P_GRAYSCALE = 0.2
P_BLUR = 0.5
BLUR_SIGMA = (0.1, 2.0)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's luma (ITU-R 601-2)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # ColorJitter's operation numbers (its fn_idx)


def blur_kernel_size(crop_size: int) -> int:
    """The blur kernel's side: about a tenth of the crop, odd, >= 3 (23 px at 224, as in SimCLR)."""
    return max(3, int(0.1 * crop_size) // 2 * 2 + 1)


class ColourParams(NamedTuple):
    """The colour augmentation of ``N`` images (a leading ``N`` on every field)."""

    jitter: torch.Tensor  # N bool: colour jitter applied (p 0.8)
    order: torch.Tensor  # N x 4 long: the jitter's operations in the order applied (a permutation of 0..3)
    factors: torch.Tensor  # N x 4 float: brightness, contrast, saturation factors and hue shift
    grayscale: torch.Tensor  # N bool (p 0.2)
    blur: torch.Tensor  # N bool (p 0.5)
    sigma: torch.Tensor  # N float: the blur's sigma, uniform in [0.1, 2]


def sample_colour(n: int, generator: torch.Generator) -> ColourParams:
    """Parameters of ``n`` independent draws of MoCo-v2's colour augmentation.

    As torchvision's ``RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8)``,
    ``RandomGrayscale(0.2)``, ``RandomApply(GaussianBlur(sigma=(0.1, 2)), p=0.5)``:
    factors uniform in ``[0.6, 1.4]``, hue shift uniform in ``[-0.1, 0.1]``, the
    four operations in a uniformly random order.
    """

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    b, c, s, h = JITTER
    factors = torch.stack(
        [uniform(1 - b, 1 + b, n), uniform(1 - c, 1 + c, n), uniform(1 - s, 1 + s, n), uniform(-h, h, n)], dim=1
    )
    return ColourParams(
        jitter=torch.rand(n, generator=generator) < P_JITTER,
        order=torch.rand(n, 4, generator=generator).argsort(dim=1),  # uniform over the 24 orders
        factors=factors,
        grayscale=torch.rand(n, generator=generator) < P_GRAYSCALE,
        blur=torch.rand(n, generator=generator) < P_BLUR,
        sigma=uniform(*BLUR_SIGMA, n),
    )


def apply_colour(x: torch.Tensor, params: ColourParams, kernel_size: int) -> torch.Tensor:
    """Jitter, grayscale and blur, each sample with its own parameters (in place where it can).

    Args:
        x: ``N x 3 x H x W`` float images in ``[0, 1]``, on any device.
        params: ``N`` samples' parameters, on the CPU (they choose which samples
            each operation touches, without a device synchronisation).
        kernel_size: the blur kernel's side (:func:`blur_kernel_size`).

    Returns:
        ``N x 3 x H x W``, the augmented images.
    """
    factors = params.factors.to(x.device, non_blocking=True)
    sigma = params.sigma.to(x.device, non_blocking=True)
    ops = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast, SATURATION: adjust_saturation, HUE: adjust_hue}
    for position in range(4):  # a sample's k-th operation is order[k]
        for op, fn in ops.items():  # _on calls the lambda at once: binding fn and op late is safe
            _on(x, params.jitter & (params.order[:, position] == op), lambda s, i: fn(s, factors[i, op]))  # noqa: B023
    _on(x, params.grayscale, lambda s, i: grayscale(s).expand_as(s))
    _on(x, params.blur, lambda s, i: gaussian_blur(s, sigma[i], kernel_size))
    return x


def _on(x: torch.Tensor, mask: torch.Tensor, fn) -> None:
    """``x[mask] = fn(x[mask], index)`` for a CPU mask; ``index`` is on ``x``'s device."""
    index = mask.nonzero().squeeze(1)
    if len(index):
        index = index.to(x.device, non_blocking=True)
        x[index] = fn(x[index], index)


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.to(torch.float32).view(-1, 1, 1, 1)  # N -> N x 1 x 1 x 1


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma. ``N x 3 x H x W`` -> ``N x 1 x H x W``."""
    r, g, b = x.unbind(dim=1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = _per_sample(ratio)
    return (ratio * x + (1 - ratio) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scales every channel by ``factor`` (``N``), clamped to ``[0, 1]``."""
    return (x * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blends each image with the mean of its luma."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blends each image with its luma."""
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates the hue by ``shift`` (``N``, in turns) through HSV, as torchvision and PIL do."""
    h, s, v = _rgb_to_hsv(x).unbind(dim=1)
    h = (h + shift.to(torch.float32).view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(h, s, v)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    grey = maxc == minc  # hue and saturation 0 there (and no division by zero)
    span = maxc - minc
    s = span / torch.where(grey, torch.ones_like(maxc), maxc)
    span = torch.where(grey, torch.ones_like(span), span)
    rc, gc, bc = (maxc - r) / span, (maxc - g) / span, (maxc - b) / span
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, torch.zeros_like(h), h)
    return torch.stack(((h / 6.0 + 1.0).fmod(1.0), s, maxc), dim=1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.long().remainder_(6)
    p = (v * (1 - s)).clamp_(0, 1)
    q = (v * (1 - s * f)).clamp_(0, 1)
    t = (v * (1 - s * (1 - f))).clamp_(0, 1)
    vpqt = torch.stack((v, p, q, t), dim=1)  # N x 4 x H x W
    # for each sector i of the hue circle, which of v, p, q, t are r, g and b
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=h.device)
    return vpqt.gather(1, select[:, i].movedim(0, 1))  # N x 3 x H x W


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur with one ``sigma`` per image (``N``), reflect-padded, as torchvision's.

    Separable: a horizontal then a vertical pass, one grouped convolution each.
    ``N x C x H x W`` -> same.
    """
    n, c, height, width = x.shape
    lim = (kernel_size - 1) / 2
    t = torch.linspace(-lim, lim, kernel_size, device=x.device)
    kernel = torch.softmax(-0.5 * (t / sigma.to(torch.float32).view(-1, 1)) ** 2, dim=1)  # N x K, rows sum to 1
    weight = kernel.repeat_interleave(c, dim=0)  # N*C x K
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, weight.view(n * c, 1, 1, kernel_size), groups=n * c)  # along x
    y = F.conv2d(y, weight.view(n * c, 1, kernel_size, 1), groups=n * c)  # along y
    return y.view(n, c, height, width)
