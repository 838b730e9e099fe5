"""Where a view's pixels come from: one augmented view's crop, flip and rotation as a map of points.

A view is the box ``(top, left, height, width)`` of the image, resized to
``size x size``, mirrored left-right when ``flip``, then rotated by ``angle``
degrees counter-clockwise (as seen on screen) about its centre. This is the
geometric half of the MoCo-v2 augmentation (RandomResizedCrop and horizontal
flip, plus an optional small rotation), drawn with an explicit generator, so
the pixel of the image behind every point of a view is known. The dense
correspondence instrument scores matches against it, and pre-training can use
it to pair query and key locations by geometry instead of by feature argmax.

Points are continuous pixel coordinates ``(x, y)``: pixel ``(col, row)``
covers ``[col, col + 1) x [row, row + 1)`` and has its centre at
``(col + 0.5, row + 0.5)``. Resizing with pixel-centre alignment (PyTorch's
``align_corners=False``) scales these coordinates exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range
JPEG_REDUCTIONS = (8, 4, 2, 1)  # the scales libjpeg decodes at directly (PIL's draft mode)
_CROP_TRIES = 10  # RandomResizedCrop's attempts before it falls back to a centre crop


@dataclass(frozen=True)
class ViewGeometry:
    """One view: the image box it shows, its side in pixels, mirror and rotation."""

    top: int
    left: int
    height: int
    width: int
    size: int
    flip: bool = False
    angle: float = 0.0  # degrees, counter-clockwise on screen

    def to_view(self, xy: torch.Tensor) -> torch.Tensor:
        """Image points -> view points. ``xy``: ``N x 2`` (x, y); returns ``N x 2``."""
        x = (xy[:, 0] - self.left) * (self.size / self.width)
        y = (xy[:, 1] - self.top) * (self.size / self.height)
        if self.flip:
            x = self.size - x
        return self._rotate(torch.stack([x, y], dim=1), self.angle)

    def to_image(self, xy: torch.Tensor) -> torch.Tensor:
        """View points -> image points, the inverse of :meth:`to_view`. ``N x 2`` -> ``N x 2``."""
        xy = self._rotate(xy, -self.angle)
        x, y = xy[:, 0], xy[:, 1]
        if self.flip:
            x = self.size - x
        return torch.stack([x * (self.width / self.size) + self.left, y * (self.height / self.size) + self.top], dim=1)

    def shows(self, xy_view: torch.Tensor) -> torch.Tensor:
        """Which view points show the image: inside the view and, before the rotation, inside the crop.

        A rotation leaves the view's corners filled with a constant; a point that
        the rotation moved there is not part of the image content. ``N x 2`` -> ``N`` bool.
        """
        unrotated = self._rotate(xy_view, -self.angle)
        return _inside(xy_view, self.size) & _inside(unrotated, self.size)

    def apply(self, image, reduction: int = 1):
        """Renders the view: a PIL image, or a ``C x H x W`` tensor -> ``C x size x size`` (same dtype).

        ``reduction`` > 1: ``image`` is the view's image decoded at ``1/reduction``
        of its size (a JPEG in draft mode, PIL only); its pixel ``(col, row)``
        covers the image's ``[col, col + 1) x [row, row + 1)`` times ``reduction``,
        so the box is scaled to it and resampled from there.
        """
        if reduction == 1:
            view = F.resized_crop(
                image, self.top, self.left, self.height, self.width, [self.size, self.size], antialias=True
            )
        else:
            box = (self.left, self.top, self.left + self.width, self.top + self.height)
            view = image.resize(
                (self.size, self.size), Image.Resampling.BILINEAR, box=tuple(v / reduction for v in box)
            )
        if self.flip:
            view = F.horizontal_flip(view)
        if self.angle:
            view = F.rotate(view, self.angle, interpolation=InterpolationMode.BILINEAR)
        return view

    def _rotate(self, xy: torch.Tensor, angle: float) -> torch.Tensor:
        # counter-clockwise on screen is clockwise in (x right, y down) coordinates
        if not angle:
            return xy
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        centre = self.size / 2
        dx, dy = xy[:, 0] - centre, xy[:, 1] - centre
        return torch.stack([c * dx + s * dy + centre, -s * dx + c * dy + centre], dim=1)


def _inside(xy: torch.Tensor, size: int) -> torch.Tensor:
    return (xy >= 0).all(dim=1) & (xy < size).all(dim=1)


def sample_crop(
    width: int,
    height: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """A random box ``(top, left, height, width)`` with the distribution of torchvision's RandomResizedCrop.

    Area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``;
    up to ten draws for a box that fits, then the largest centred box whose
    aspect ratio lies in ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(_CROP_TRIES):
        target = area * _uniform(scale, generator)
        aspect = math.exp(_uniform(log_ratio, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_view(
    width: int,
    height: int,
    size: int,
    generator: torch.Generator,
    min_scale: float = 0.2,
    max_angle: float = 0.0,
) -> ViewGeometry:
    """A random view of a ``width x height`` image: a MoCo-v2 crop, a coin-flip mirror, a rotation.

    The rotation angle is uniform in ``[-max_angle, max_angle]`` degrees (0: none, as in training).
    """
    top, left, h, w = sample_crop(width, height, (min_scale, 1.0), generator)
    flip = bool(torch.rand((), generator=generator) < 0.5)
    angle = _uniform((-max_angle, max_angle), generator) if max_angle else 0.0
    return ViewGeometry(top, left, h, w, size, flip, angle)


def draft_reduction(views: Sequence[ViewGeometry]) -> int:
    """How much smaller a JPEG may be decoded for these views without losing resolution.

    The largest of 8, 4, 2, 1 at which every view's box still spans at least
    ``size`` pixels a side: each view is then still a shrink (or the identity)
    of the reduced image, never an enlargement. (RandomResizedCrop's smallest box
    is ``sqrt(min_scale * 3/4)`` of a square image's side, 0.39 at the default
    0.2, so a rule fixed before the boxes are drawn could halve only images more
    than 5.2 x the crop; decided per pair of boxes it reduces far more often.)
    """
    for n in JPEG_REDUCTIONS:
        if all(min(v.height, v.width) >= n * v.size for v in views):
            return n
    return 1


def cell_centres(grid: tuple[int, int], size: int | tuple[int, int]) -> torch.Tensor:
    """Centres of the cells of an ``h x w`` feature map spread over a view, row-major.

    Args:
        grid: ``(h, w)`` of the feature map.
        size: the view's side, or its ``(height, width)``; a cell covers
            ``height/h x width/w`` pixels (32 x 32 for C5 at multiples of 32).

    Returns:
        ``h*w x 2`` float64 (x, y) view points; row ``i * w + j`` is cell ``(i, j)``.
    """
    (h, w), (height, width) = grid, (size, size) if isinstance(size, int) else size
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * (height / h)
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * (width / w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class CellMatch(NamedTuple):
    """Where each cell centre of one view lies in another view (row-major cells of the first view)."""

    shown: torch.Tensor  # S bool: both views show the image point at the cell centre
    cell: torch.Tensor  # S long: the other view's cell holding that point (meaningless where not shown)
    point: torch.Tensor  # S x 2: that point in the other view's pixels


def corresponding_cells(
    g1: ViewGeometry, g2: ViewGeometry, grid1: tuple[int, int], grid2: tuple[int, int]
) -> CellMatch:
    """The ground truth of dense matching: for each cell of view 1, the cell of view 2 showing the same image point."""
    query = cell_centres(grid1, g1.size)  # S x 2 view-1 points
    point = g2.to_view(g1.to_image(query))  # S x 2 the same image points in view 2
    return CellMatch(g1.shows(query) & g2.shows(point), cell_of(point, grid2, g2.size), point)


def cell_of(xy: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """Row-major index of the feature-map cell that holds each view point (clamped to the grid). ``N x 2`` -> ``N``."""
    h, w = grid
    col = (xy[:, 0] * (w / size)).floor().long().clamp(0, w - 1)
    row = (xy[:, 1] * (h / size)).floor().long().clamp(0, h - 1)
    return row * w + col


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
