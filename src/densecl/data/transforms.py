"""MoCo-v2 augmentation (the views DenseCL pre-trains on), two independent views per image, and two views with known geometry (the matching ablation, the correspond picture)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from densecl.data.geometry import ViewGeometry, corresponding_cells, sample_view

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def moco_v2_view(crop_size: int = 224, min_scale: float = 0.2) -> v2.Compose:
    """One MoCo-v2 view: random resized crop, colour jitter (p 0.8), grayscale (p 0.2),
    Gaussian blur with sigma in [0.1, 2] (p 0.5), horizontal flip, ImageNet normalisation.

    PIL image in, ``3 x crop x crop`` float32 tensor out.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(crop_size, scale=(min_scale, 1.0), antialias=True),
            *moco_v2_photometric(crop_size).transforms,
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def moco_v2_photometric(crop_size: int = 224) -> v2.Compose:
    """The colour half of :func:`moco_v2_view`: jitter (p 0.8), grayscale (p 0.2), blur (p 0.5).

    The blur kernel is about a tenth of the crop (23 px at 224), as in SimCLR.
    Works on PIL images and on uint8 or float image tensors.
    """
    kernel = max(3, int(0.1 * crop_size) // 2 * 2 + 1)
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        ]
    )


NO_MATCH = torch.empty(0, dtype=torch.long)  # views whose dense locations are paired by features, not geometry


class TwoViews:
    """Applies ``transform`` twice, independently: the query and key views (and :data:`NO_MATCH`)."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transform(image), self.transform(image), NO_MATCH


class GeometricTwoViews:
    """Two MoCo-v2 views drawn as explicit geometry, and which key cell shows each query cell's centre.

    The crop, flip and colour augmentation have the distribution of
    :func:`moco_v2_view` (flip comes before the colour steps, with which it
    commutes). ``match[i]`` is the row-major key cell of query cell ``i`` on
    the ``grid`` of the dense head, or -1 where the key view does not show
    that point: the positives of the matching ablation (``dense_matching: geometry``).
    """

    def __init__(self, crop_size: int, min_scale: float, grid: tuple[int, int] | None = None, photometric: bool = True) -> None:
        self.crop_size, self.min_scale, self.grid = crop_size, min_scale, grid
        self.photometric = moco_v2_photometric(crop_size) if photometric else (lambda image: image)
        self.finish = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def views(self, image) -> tuple[torch.Tensor, torch.Tensor, ViewGeometry, ViewGeometry]:
        """The two normalised views of a PIL image and their geometry, drawn from the global generator."""
        g = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))  # from the caller's seeded state
        width, height = image.size
        g_q, g_k = (sample_view(width, height, self.crop_size, g, self.min_scale) for _ in range(2))
        im_q, im_k = (self.finish(self.photometric(view.apply(image))) for view in (g_q, g_k))
        return im_q, im_k, g_q, g_k

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        im_q, im_k, g_q, g_k = self.views(image)
        shown, cell, _ = corresponding_cells(g_q, g_k, self.grid, self.grid)
        return im_q, im_k, torch.where(shown, cell, -1)
