"""Pre-training's two views of each image, from an image source (:mod:`densecl.inputs.sources`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from densecl.data.geometry import draft_reduction
from densecl.data.transforms import GeometricTwoViews, image_size
from densecl.errors import InputError
from densecl.inputs.sources import ImageFiles, SceneImages

T = TypeVar("T")


def first_that_reads(source: ImageFiles | SceneImages, start: int, attempt: Callable[[int], T | None]) -> tuple[int, T]:
    """``(skipped, result)``: ``attempt`` on ``start``, ``start + 1``, ... (wrapping) until it gives something.

    ``attempt(index)`` returns None for an image that does not read; the
    data sets replace such an image by the next readable one.

    Raises:
        InputError: no image of ``source`` reads.
    """
    n = len(source)
    for skipped in range(n):
        result = attempt((start + skipped) % n)
        if result is not None:
            return skipped, result
    raise InputError(f"no readable image in {source.origin}")


class TwoViewDataset(torch.utils.data.Dataset):
    """Two augmented views per image, reproducible from ``(index, seed)``.

    Items are requested as ``(index, seed)`` pairs (see
    :class:`densecl.data.sampler.EpochSampler`); the augmentation randomness is
    drawn from the global generator seeded with ``seed`` (inside
    ``fork_rng``), so a resumed run sees exactly the views it would have seen,
    whatever the number of workers. An unreadable image is replaced by the next
    readable one; the item reports how many it skipped.

    Each image is decoded once for both views, after their boxes are drawn from
    its header's size: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size when
    both boxes still span the crop size there (PIL's draft mode, libjpeg's
    scaled decoding: much faster for large photos), so no view loses resolution.
    Returns the query view, the key view, the geometric match of their dense
    cells (empty: match by features) and the number of images skipped.
    """

    def __init__(self, source: ImageFiles | SceneImages, two_views: GeometricTwoViews) -> None:
        self.source = source
        self.two_views = two_views

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            skipped, (im_q, im_k, match) = first_that_reads(self.source, index, self._views)
        return im_q, im_k, match, skipped

    def _views(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        size = self.source.size(i)
        if size is None:
            return None
        geometry = self.two_views.geometry(*size)
        reduction = draft_reduction(geometry) if self.two_views.decodes_reduced else 1
        image = self.source.load(i, draft_side=min(size) // reduction if reduction > 1 else 0)
        if image is None:
            return None
        im_q, im_k = self.two_views.render(image, geometry, decoded_reduction(size, image_size(image), reduction))
        return im_q, im_k, self.two_views.match(geometry)


def decoded_reduction(size: tuple[int, int], decoded: tuple[int, int], reduction: int) -> int:
    """1 if the image came out at its full ``size``, else ``reduction`` (checked: PIL's draft gives ``ceil(size /
    reduction)``).
    """
    if decoded == size:
        return 1  # not a JPEG: draft mode does nothing
    expected = tuple(-(-side // reduction) for side in size)
    if decoded != expected:
        raise RuntimeError(
            f"a JPEG of {size} decoded in draft mode at 1/{reduction} came out {decoded}, not {expected}"
        )
    return reduction
