"""Unlabeled images for pre-training: where they come from and how they are read.

Sources (:func:`image_source`): a directory tree (recursive, common
extensions), a text file of paths, a COCO annotation file, or the embedded
``scenes``. Unreadable files are skipped, one warning each, never a crash;
every mode PIL knows becomes RGB (:func:`densecl.images.open_rgb`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from densecl.errors import InputError
from densecl.formats.coco import coco_image_paths
from densecl.images import IMAGE_EXTENSIONS, open_rgb


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

    def load(self, index: int) -> Image.Image | None:
        try:
            return open_rgb(self.paths[index], fix="skipping it")
        except InputError as e:
            if index not in self._warned:  # one warning per file (per worker process)
                self._warned.add(index)
                print(f"densecl: warning: {e}", file=sys.stderr)
            return None


class SceneImages:
    """The embedded procedural ``scenes`` images (no download, deterministic in the seed)."""

    def __init__(self, length: int, seed: int, size: int) -> None:
        from densecl.scenes import ScenesDataset

        self.scenes = ScenesDataset(length=length, seed=seed, size=size)
        self.origin = f"scenes(length={length}, seed={seed}, size={size})"

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, index: int) -> Image.Image:
        return self.scenes.image(index)


def image_source(data: str, scenes_length: int = 2000, scenes_size: int = 128, seed: int = 0) -> ImageFiles | SceneImages:
    """Resolves ``--data``: ``scenes``, a directory, a ``.txt`` list, or a COCO ``.json``."""
    if data == "scenes":
        return SceneImages(scenes_length, seed, scenes_size)
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(f"data path {path} does not exist; give a folder of images, a .txt list, a COCO .json, or 'scenes'")
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


class TwoViewDataset(torch.utils.data.Dataset):
    """Two augmented views per image, reproducible from ``(index, seed)``.

    Items are requested as ``(index, seed)`` pairs (see
    :class:`densecl.data.sampler.EpochSampler`); the augmentation randomness is
    drawn from a generator seeded with ``seed``, so a resumed run sees exactly
    the views it would have seen, whatever the number of workers. An
    unreadable image is replaced by the next readable one; the item reports how
    many it skipped. ``two_views`` returns the query view, the key view and the
    geometric match of their dense cells (empty: match by features).
    """

    def __init__(self, source: ImageFiles | SceneImages, two_views) -> None:
        self.source = source
        self.two_views = two_views

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        index, seed = item
        n = len(self.source)
        skipped, _, image = first_readable(self.source, ((index + k) % n for k in range(n)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            im_q, im_k, match = self.two_views(image)
        return im_q, im_k, match, skipped
