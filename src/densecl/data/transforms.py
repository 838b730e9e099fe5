"""MoCo-v2 augmentation (the views DenseCL pre-trains on): one view as a torchvision transform, and two views of one
image drawn as explicit geometry (pre-training, the matching ablation, the correspond picture).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from densecl.data import colour
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

    The blur kernel is about a tenth of the crop (23 px at 224, as in SimCLR).
    Works on PIL images and on uint8 or float image tensors. The ``gpu`` data
    backend applies the same with per-sample parameters (:mod:`densecl.data.colour`).
    """
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(*colour.JITTER)], p=colour.P_JITTER),
            v2.RandomGrayscale(p=colour.P_GRAYSCALE),
            v2.RandomApply(
                [v2.GaussianBlur(colour.blur_kernel_size(crop_size), sigma=colour.BLUR_SIGMA)], p=colour.P_BLUR
            ),
        ]
    )


NO_MATCH = torch.empty(0, dtype=torch.long)  # views whose dense locations are paired by features, not geometry


class GeometricTwoViews:
    """Two MoCo-v2 views of one image, drawn as explicit geometry: the views pre-training sees.

    The crop, flip and colour augmentation have the distribution of
    :func:`moco_v2_view` (flip comes before the colour steps, with which it
    commutes). Drawing the boxes first (:meth:`geometry`, from the image's size
    alone) lets a JPEG be decoded at a reduced scale where both boxes allow it
    (:func:`~densecl.data.geometry.draft_reduction`), and gives the match of
    dense cells: ``match[i]`` is the row-major key cell of query cell ``i`` on
    the ``grid`` of the dense head, or -1 where the key view does not show that
    point, the positives of the matching ablation (``dense_matching:
    geometry``); without a ``grid`` the match is :data:`NO_MATCH` (the paper:
    match by features).
    """

    def __init__(
        self, crop_size: int, min_scale: float, grid: tuple[int, int] | None = None, photometric: bool = True
    ) -> None:
        self.crop_size, self.min_scale, self.grid = crop_size, min_scale, grid
        self.photometric = moco_v2_photometric(crop_size) if photometric else (lambda image: image)
        self.finish = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def geometry(self, width: int, height: int) -> tuple[ViewGeometry, ViewGeometry]:
        """The query and key views' geometry on a ``width x height`` image, drawn from the global generator."""
        g = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))  # from the caller's seeded state
        return sample_view(width, height, self.crop_size, g, self.min_scale), sample_view(
            width, height, self.crop_size, g, self.min_scale
        )

    def render(
        self, image, geometry: tuple[ViewGeometry, ViewGeometry], reduction: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two normalised ``3 x crop x crop`` views of a PIL image (decoded at ``1/reduction``), colour from the
        global generator.
        """
        im_q, im_k = (self.finish(self.photometric(view.apply(image, reduction))) for view in geometry)
        return im_q, im_k

    def match(self, geometry: tuple[ViewGeometry, ViewGeometry]) -> torch.Tensor:
        """``S`` long: the key cell of each query cell (-1: not shown), or :data:`NO_MATCH` without a grid."""
        if self.grid is None:
            return NO_MATCH
        shown, cell, _ = corresponding_cells(*geometry, self.grid, self.grid)
        return torch.where(shown, cell, -1)

    def views(self, image) -> tuple[torch.Tensor, torch.Tensor, ViewGeometry, ViewGeometry]:
        """The two normalised views of a PIL image and their geometry, drawn from the global generator."""
        geometry = self.geometry(*image.size)
        return *self.render(image, geometry), *geometry

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        im_q, im_k, g_q, g_k = self.views(image)
        return im_q, im_k, self.match((g_q, g_k))
