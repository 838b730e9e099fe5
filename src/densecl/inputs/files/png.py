"""PNG beyond 8 bits: 16-bit grayscale through PIL, 16-bit colour through imagecodecs.

PIL reads a 16-bit grayscale PNG as it is (mode ``I;16``) but a 16-bit RGB or
RGBA one only as 8 bits, so those are decoded with imagecodecs (the ``tiff``
extra). The PNG header (``IHDR``) says which is which before anything is
decoded. A 16-bit colour PNG keeps all its channels (alpha included: drop it
with ``--bands 1,2,3``); gray with alpha likewise gives two bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densecl.inputs.files import ImageInfo, missing_extra, pil_bands

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (3: palette indices)


def _header(path: Path) -> tuple[int, int, int, int] | None:
    """``(width, height, bit depth, colour type)`` from the IHDR chunk, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24], head[25]


def _colour16(header: tuple[int, int, int, int] | None) -> bool:
    return header is not None and header[2] == 16 and header[3] in (2, 4, 6)


def _imagecodecs(path: Path):
    try:
        import imagecodecs
    except ImportError:
        raise missing_extra(path, "imagecodecs", "tiff", "a 16-bit colour PNG") from None
    return imagecodecs


def png_info(path: Path) -> ImageInfo | None:
    """The info of a 16-bit colour PNG; None for any other PNG (PIL's header tells)."""
    header = _header(path)
    if not _colour16(header):
        return None
    _imagecodecs(path)  # a missing package stops at the header, before any training starts
    width, height, _, colour = header
    return ImageInfo(width, height, CHANNELS[colour], False, "16-bit colour PNG")


def read_png(path: Path) -> tuple[np.ndarray, None] | None:
    """``(C x H x W uint16, None)`` for a PNG beyond 8 bits; None for a photo (PIL reads it as RGB)."""
    if not _colour16(_header(path)):
        return pil_bands(path)
    array = _imagecodecs(path).png_decode(path.read_bytes())  # H x W x C uint16
    return np.moveaxis(array, -1, 0), None
