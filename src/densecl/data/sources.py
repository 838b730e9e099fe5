"""Unlabeled images for pre-training: where they come from and how they are read.

Sources (:func:`image_source`): a directory tree (recursive, common
extensions), a text file of paths, a COCO annotation file, or the embedded
``scenes``; each gives an image's size (from the header), the decoded image,
and the file's bytes (the ``gpu`` data backend decodes those itself).
Unreadable files are skipped, one warning each, never a crash; every mode PIL
knows becomes RGB (:func:`densecl.images.open_rgb`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image

from densecl.data.geometry import draft_reduction
from densecl.data.transforms import GeometricTwoViews
from densecl.errors import InputError
from densecl.formats.coco import coco_image_paths
from densecl.images import IMAGE_EXTENSIONS, open_rgb

T = TypeVar("T")


class ImageFiles:
    """A list of image files; ``load(i)`` returns an RGB image or ``None`` if unreadable."""

    def __init__(self, paths: Sequence[Path], origin: str) -> None:
        if not paths:
            raise InputError(f"no images found in {origin}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
        self.paths = list(paths)
        self.origin = origin
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def size(self, index: int) -> tuple[int, int] | None:
        """``(width, height)`` from the file's header (nothing decoded), or ``None`` if unreadable."""
        try:
            with Image.open(self.paths[index]) as image:
                return image.size
        except Exception as e:  # PIL raises many types for bad files
            self._warn(index, f"cannot read image {self.paths[index]} ({type(e).__name__}: {e}); skipping it")
            return None

    def load(self, index: int, draft_side: int = 0) -> Image.Image | None:
        """The RGB image; a JPEG with ``draft_side`` > 0 decodes at a reduced scale whose sides stay >= it."""
        try:
            return open_rgb(self.paths[index], fix="skipping it", draft_side=draft_side)
        except InputError as e:
            self._warn(index, str(e))
            return None

    def read(self, index: int) -> bytes | None:
        """The file's bytes, or ``None`` if unreadable."""
        try:
            return self.paths[index].read_bytes()
        except OSError as e:
            self._warn(index, f"cannot read image {self.paths[index]} ({type(e).__name__}: {e}); skipping it")
            return None

    def _warn(self, index: int, message: str) -> None:
        if index not in self._warned:  # one warning per file (per worker process)
            self._warned.add(index)
            print(f"densecl: warning: {message}", file=sys.stderr)


class SceneImages:
    """The embedded procedural ``scenes`` images (no download, deterministic in the seed)."""

    def __init__(self, length: int, seed: int, size: int) -> None:
        from densecl.scenes import ScenesDataset

        self.scenes = ScenesDataset(length=length, seed=seed, size=size)
        self.origin = f"scenes(length={length}, seed={seed}, size={size})"

    def __len__(self) -> int:
        return len(self.scenes)

    def size(self, index: int) -> tuple[int, int]:
        return self.scenes.size, self.scenes.size

    def load(self, index: int, draft_side: int = 0) -> Image.Image:
        return self.scenes.image(index)

    def read(self, index: int) -> None:
        return None  # made in memory: no file


def image_source(
    data: str, scenes_length: int = 2000, scenes_size: int = 128, seed: int = 0
) -> ImageFiles | SceneImages:
    """Resolves ``--data``: ``scenes``, a directory, a ``.txt`` list, or a COCO ``.json``."""
    if data == "scenes":
        return SceneImages(scenes_length, seed, scenes_size)
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(
            f"data path {path} does not exist; give a folder of images, a .txt list, a COCO .json, or 'scenes'"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        return ImageFiles(files, f"folder {path}")
    if path.suffix == ".json":
        return ImageFiles(coco_image_paths(path), f"COCO file {path}")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    files = [_resolve(path.parent, ln) for ln in lines if ln and not ln.startswith("#")]
    return ImageFiles(files, f"list {path}")


def _resolve(root: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / p


def first_readable(source: ImageFiles | SceneImages, indices: Iterable[int]) -> tuple[int, int, Image.Image]:
    """``(skipped, index, image)``: the first of ``indices`` whose image reads, and how many did not.

    Raises:
        InputError: none of them reads.
    """
    for skipped, index in enumerate(indices):
        image = source.load(index)
        if image is not None:
            return skipped, index, image
    raise InputError(f"no readable image in {getattr(source, 'origin', 'the data')}")


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
        reduction = draft_reduction(geometry)
        image = self.source.load(i, draft_side=min(size) // reduction if reduction > 1 else 0)
        if image is None:
            return None
        im_q, im_k = self.two_views.render(image, geometry, decoded_reduction(size, image.size, reduction))
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
