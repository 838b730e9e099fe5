"""Where a run's images come from and how each one loads, checked to be of one kind.

Sources (:func:`image_source`): a directory tree (recursive, the extensions of
:data:`densecl.inputs.files.EXTENSIONS`, DICOM files without one), a text file
of paths, a COCO annotation file, or the embedded ``scenes``; each gives an
image's size (from the header), the decoded image, and the file's bytes (the
``gpu`` data backend decodes those itself). Unreadable files are skipped, one
warning each, never a crash. An 8-bit image becomes an RGB photo as every mode
PIL knows always has; any other image keeps its stored values as ``C x H x W``
float bands (:mod:`densecl.inputs.files`).

Every image of a run must be of one kind and have the same bands: what the
first image is (:class:`Reading`, set with :meth:`ImageFiles.expect`) is
checked on every image loaded, and one that differs stops the run with one
line naming it and the first (:class:`ImagesDisagree`). So does a file that
needs a missing optional package (:class:`~densecl.inputs.files.CannotDecode`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.formats.coco import coco_image_paths
from densecl.inputs.files import EXTENSIONS, CannotDecode, Pixels, is_image_file, probe, read_values, to_bands


class ImagesDisagree(InputError):
    """Two images of one run differ in kind or in bands; stops the run (skipping would hide the other kind)."""


class Reading(NamedTuple):
    """How a run reads its images and what every one of them must be (None: not checked)."""

    values: bool = False  # 8-bit images as their stored values too, not as RGB photos
    bands: tuple[int, ...] | None = None  # 1-based bands to keep, in order; None: all
    photo: bool | None = None  # every image a photo (True) or bands of stored values (False)
    file_bands: int | None = None  # bands in every file (3 for photos)
    reference: str | None = None  # the image that set photo and file_bands, named when another differs

    def check(self, photo: bool, file_bands: int, path: Path | str, origin: str) -> None:
        """Raises :class:`ImagesDisagree` naming ``path`` and :attr:`reference` when they differ."""
        if self.photo is not None and photo != self.photo:
            kinds = {True: "an 8-bit photo", False: "a 16-bit, float, multi-band or DICOM image"}
            raise ImagesDisagree(
                f"{origin} mixes kinds of image: {self.reference} is {kinds[self.photo]}, {path} is {kinds[photo]}; "
                "pre-train on one kind (separate folders), or read 8-bit images as values with --pixels values"
            )
        if self.file_bands is not None and file_bands != self.file_bands:
            raise ImagesDisagree(
                f"{origin} mixes images of {self.file_bands} and {file_bands} bands: {self.reference} has "
                f"{self.file_bands}, {path} has {file_bands}; every image needs the same bands (separate folders)"
            )


class ImageFiles:
    """A list of image files; ``load(i)`` returns an RGB photo, ``C x H x W`` bands, or ``None`` if unreadable."""

    def __init__(self, paths: Sequence[Path], origin: str) -> None:
        if not paths:
            raise InputError(
                f"no images found in {origin}; expected files ending in {', '.join(EXTENSIONS)} (or DICOM files)"
            )
        self.paths = list(paths)
        self.origin = origin
        self.reading = Reading()
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def expect(self, reading: Reading) -> None:
        """How every image is read from now on, and what each must be (checked as it loads)."""
        self.reading = reading

    def size(self, index: int) -> tuple[int, int] | None:
        """``(width, height)`` from the file's header (nothing decoded), or ``None`` if unreadable.

        Raises:
            CannotDecode: the file needs a missing optional package or decoder.
        """
        try:
            info = probe(self.paths[index], values=self.reading.values)
        except CannotDecode:
            raise
        except InputError as e:
            self._warn(index, f"{e}; skipping it")
            return None
        return info.width, info.height

    def load(self, index: int, draft_side: int = 0) -> Pixels | None:
        """The image: an RGB photo (a JPEG with ``draft_side`` > 0 decodes at a reduced scale whose sides stay
        >= it), or ``C x H x W`` float bands, the chosen ones; ``None`` if unreadable.

        Raises:
            CannotDecode: the file needs a missing optional package or decoder.
            ImagesDisagree: the image is of another kind, or has other bands, than the first.
        """
        path = self.paths[index]
        try:
            read = read_values(path, draft_side, fix="skipping it", values=self.reading.values)
        except CannotDecode:
            raise
        except InputError as e:
            self._warn(index, str(e))
            return None
        photo = isinstance(read, Image.Image)
        self.reading.check(photo, 3 if photo else read[0].shape[0], path, self.origin)
        if photo:
            return read
        try:
            return to_bands(*read, self.reading.bands, path)
        except InputError as e:
            raise ImagesDisagree(str(e)) from None  # a band the file lacks: every file lacks it

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

        self.reading = Reading()

    def __len__(self) -> int:
        return len(self.scenes)

    def expect(self, reading: Reading) -> None:
        self.reading = reading

    def size(self, index: int) -> tuple[int, int]:
        return self.scenes.size, self.scenes.size

    def load(self, index: int, draft_side: int = 0) -> Pixels:
        """The RGB photo, or with ``--pixels values`` its three bands of values 0..255."""
        image = self.scenes.image(index)
        if not self.reading.values:
            return image
        array = np.moveaxis(np.asarray(image), -1, 0)
        return to_bands(array, None, self.reading.bands, Path(self.origin))

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
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        return ImageFiles(files, f"folder {path}")
    if path.suffix == ".json":
        return ImageFiles(coco_image_paths(path), f"COCO file {path}")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    files = [_resolve(path.parent, ln) for ln in lines if ln and not ln.startswith("#")]
    return ImageFiles(files, f"list {path}")


def _resolve(root: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / p
