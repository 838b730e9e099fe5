"""Opening an 8-bit image file as an RGB photo: the one place that does it.

Every mode PIL knows (grayscale, palette, RGBA, CMYK, 16-bit, float) becomes
RGB; a file PIL cannot decode, or a truncated one, is an
:class:`~densecl.errors.InputError` of one line that names the file and says
what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from densecl.errors import InputError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. 16-bit and float grayscale are rescaled by their range, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if image.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(a, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | Path, what: str = "image", fix: str = "fix or remove it", draft_side: int = 0) -> Image.Image:
    """Reads the image file ``path`` as RGB (see :func:`to_rgb`).

    Args:
        what: the file's role, for the message (``"image"``, ``"background"``).
        fix: what the user should do, the end of the message.
        draft_side: > 0 lets a JPEG decode at a reduced scale whose sides stay
            >= this (much faster for large photos that are shrunk anyway).

    Raises:
        InputError: ``cannot read <what> <path> (<error>); <fix>``.
    """
    try:
        with Image.open(path) as image:
            if draft_side:
                image.draft("RGB", (draft_side, draft_side))
            image.load()
            return to_rgb(image)
    except Exception as e:  # PIL raises many types for bad files (OSError, ValueError, SyntaxError, ...)
        raise InputError(f"cannot read {what} {path} ({type(e).__name__}: {e}); {fix}") from None
