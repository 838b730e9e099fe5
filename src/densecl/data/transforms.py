"""MoCo-v2 augmentation (the views DenseCL pre-trains on): two views of one image drawn as explicit geometry
(pre-training, the matching ablation, the correspond picture), and the colour half as a torchvision transform.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from densecl.data import colour
from densecl.data.geometry import ViewGeometry, corresponding_cells, sample_view
from densecl.data.jitter import BandJitter
from densecl.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from densecl.inputs.files import image_size

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NO_MATCH", "GeometricTwoViews", "image_size"]


def moco_v2_photometric(crop_size: int = 224) -> v2.Compose:
    """MoCo-v2's colour augmentation: jitter (p 0.8), grayscale (p 0.2), Gaussian blur, sigma in [0.1, 2] (p 0.5).

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

    The crop, flip and colour augmentation have the distribution of MoCo-v2's
    (RandomResizedCrop with scale (min_scale, 1), :func:`moco_v2_photometric`,
    horizontal flip; the flip comes before the colour steps, with which it
    commutes). Drawing the boxes first (:meth:`geometry`, from the image's size
    alone) lets a JPEG be decoded at a reduced scale where both boxes allow it
    (:func:`~densecl.data.geometry.draft_reduction`), and gives the match of
    dense cells: ``match[i]`` is the row-major key cell of query cell ``i`` on
    the ``grid`` of the dense head, or -1 where the key view does not show that
    point, the positives of the matching ablation (``dense_matching:
    geometry``); without a ``grid`` the match is :data:`NO_MATCH` (the paper:
    match by features).

    ``inputs`` says what the network takes (:class:`~densecl.inputs.InputSpec`).
    Photos as they are (RGB, no bands chosen) take the path above, normalised
    with ``inputs``' mean and std (ImageNet's by default). Any other image (a
    ``C x H x W`` float tensor of stored values, or a photo with bands chosen)
    has its no-data pixels set to the channel mean, then the same crop and flip
    (the geometry and the match do not depend on the channels), the photometric
    rule for N channels (:mod:`densecl.data.jitter`, mode ``jitter``) and the
    normalisation.
    """

    def __init__(
        self,
        crop_size: int,
        min_scale: float,
        grid: tuple[int, int] | None = None,
        photometric: bool = True,
        inputs: InputSpec | None = None,
        jitter: str = "rgb",
    ) -> None:
        self.crop_size, self.min_scale, self.grid = crop_size, min_scale, grid
        self.inputs = inputs or InputSpec()
        self.photometric = moco_v2_photometric(crop_size) if photometric else (lambda image: image)
        self.band_photometric = (
            BandJitter(self.inputs.channels, jitter, crop_size) if photometric else (lambda image: image)
        )

    @property
    def decodes_reduced(self) -> bool:
        """Whether a JPEG may be decoded at a reduced scale (photos as they are: the PIL path)."""
        return self.inputs.plain_rgb

    def geometry(self, width: int, height: int) -> tuple[ViewGeometry, ViewGeometry]:
        """The query and key views' geometry on a ``width x height`` image, drawn from the global generator."""
        g = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))  # from the caller's seeded state
        return sample_view(width, height, self.crop_size, g, self.min_scale), sample_view(
            width, height, self.crop_size, g, self.min_scale
        )

    def render(
        self, image, geometry: tuple[ViewGeometry, ViewGeometry], reduction: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two normalised ``C x crop x crop`` views of an image (a PIL photo possibly decoded at ``1/reduction``,
        or ``C x H x W`` bands), colour from the global generator.
        """
        if self.inputs.takes_as_photo(image):
            im_q, im_k = (self.inputs.finish_photo(self.photometric(view.apply(image, reduction))) for view in geometry)
            return im_q, im_k
        x = self.inputs.prepare(image)  # C x H x W float, no NaN
        photo = isinstance(image, Image.Image)
        im_q, im_k = (self.inputs.normalise(self.band_photometric(view.apply(x)), photo) for view in geometry)
        return im_q, im_k

    def match(self, geometry: tuple[ViewGeometry, ViewGeometry]) -> torch.Tensor:
        """``S`` long: the key cell of each query cell (-1: not shown), or :data:`NO_MATCH` without a grid."""
        if self.grid is None:
            return NO_MATCH
        shown, cell, _ = corresponding_cells(*geometry, self.grid, self.grid)
        return torch.where(shown, cell, -1)

    def views(self, image) -> tuple[torch.Tensor, torch.Tensor, ViewGeometry, ViewGeometry]:
        """The two normalised views of an image (PIL photo or bands) and their geometry, from the global generator."""
        geometry = self.geometry(*image_size(image))
        return *self.render(image, geometry), *geometry

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        im_q, im_k, g_q, g_k = self.views(image)
        return im_q, im_k, self.match((g_q, g_k))
