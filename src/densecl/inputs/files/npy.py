"""``.npy`` arrays: ``H x W`` (one band), ``C x H x W`` or ``H x W x C``.

A 3-D array's band axis is its first when that is no longer than the last,
else its last (``4 x 256 x 256`` and ``256 x 256 x 4`` are both four bands).
Any numeric dtype; NaN marks pixels without data. Read without pickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densecl.errors import InputError
from densecl.inputs.files import ImageInfo


def _open(path: Path) -> np.ndarray:
    array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header now, the data when sliced
    if array.ndim not in (2, 3) or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(
            f"cannot read image {path} (a {array.dtype} array of shape {array.shape}): an image array is numeric "
            "H x W, C x H x W or H x W x C"
        )
    return array


def _band_first(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[None]
    return array if array.shape[0] <= array.shape[2] else np.moveaxis(array, 2, 0)


def npy_info(path: Path) -> ImageInfo:
    array = _open(path)
    c, h, w = _band_first(array).shape
    return ImageInfo(w, h, c, False, f"{array.dtype.name} array")


def read_npy(path: Path) -> tuple[np.ndarray, None]:
    return np.asarray(_band_first(_open(path))), None
