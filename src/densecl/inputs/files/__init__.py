"""Reading an image file as the values it holds: 8-bit photos, 16-bit and float images, bands, DICOM, ``.npy``.

:func:`read_image` gives one of two kinds of image:

- a **photo**: an 8-bit image (JPEG, 8-bit PNG, BMP, GIF, WebP, an 8-bit TIFF
  with one to three samples or with alpha) as an RGB PIL image, exactly as
  :func:`densecl.inputs.files.photo.open_rgb` reads it (grayscale, palette and alpha
  become RGB; a JPEG may decode at a reduced scale). Every RGB run before
  other inputs existed reads its images this way, unchanged;
- **bands**: anything else (a 16-bit or float PNG or TIFF, a multi-band TIFF
  or GeoTIFF, DICOM, a ``.npy`` array) as a ``C x H x W`` float32 tensor of
  the values stored, never rounded to 8 bits; NaN marks pixels without data
  (NaN in the file, or a GeoTIFF's own nodata value).

One module per file format: :mod:`~densecl.inputs.files.tiff` (tifffile),
:mod:`~densecl.inputs.files.dicom` (pydicom), :mod:`~densecl.inputs.files.png` (16-bit
PNG), :mod:`~densecl.inputs.files.npy`. tifffile, imagecodecs and pydicom are
optional (``pip install 'densecl[tiff,dicom]'``): a file that needs a missing
one raises :class:`CannotDecode` naming the extra, and so does a file in an
encoding no installed decoder reads (a compressed DICOM transfer syntax, for
example). A :class:`CannotDecode` stops a run: it concerns every file of its
kind, so skipping the file, as an unreadable one is skipped, would silently
drop them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from densecl.errors import InputError
from densecl.inputs.files.photo import open_rgb

EXTENSIONS: dict[str, str] = {
    **dict.fromkeys((".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".pbm"), "pil"),
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".npy": "npy",
}
"""The one list of file name endings (lower case) taken for images, each with its reader; a file without an ending
counts when it is DICOM (:func:`is_dicom`)."""
PHOTO_EXTENSIONS = tuple(e for e, reader in EXTENSIONS.items() if reader in ("pil", "png", "tiff"))
"""The endings of files PIL can read as photos (the scene composer's cut-outs and backgrounds)."""

Pixels = Image.Image | torch.Tensor
"""What :func:`read_image` returns: an RGB photo, or ``C x H x W`` float32 bands."""


class CannotDecode(InputError):
    """A well-formed file this installation cannot decode (a missing optional package, an unsupported encoding).

    Unlike an unreadable file, which is skipped, it stops the run: the other files of its kind fail the same way.
    """


class ImageInfo(NamedTuple):
    """What a file's header says, nothing decoded."""

    width: int
    height: int
    bands: int  # 3 for a photo (read as RGB whatever its mode)
    photo: bool  # an 8-bit image read as RGB in [0, 1]; False: bands of stored values
    kind: str  # for messages: "8-bit photo", "uint16 TIFF", "DICOM int16", ...


def is_dicom(path: Path) -> bool:
    """The DICOM preamble's ``DICM`` marker at byte 128 (what a file without a name ending is recognised by)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_image_file(path: Path) -> bool:
    """A file a folder search takes: a known ending, or no ending and DICOM."""
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return True
    return (suffix == "" or not suffix[1:].isalpha()) and is_dicom(path)  # scanners name files 1.2.840...; no ending


def _format(path: Path) -> str:
    """The reader of a file: by its ending (:data:`EXTENSIONS`), DICOM by its marker, else PIL."""
    reader = EXTENSIONS.get(path.suffix.lower())
    if reader is None and is_dicom(path):
        return "dicom"
    return reader or "pil"


def probe(path: str | Path, values: bool = False) -> ImageInfo:
    """The file's size, bands and kind from its header (``values``: an 8-bit image's own bands, not RGB).

    Raises:
        CannotDecode: the file needs an optional package that is missing.
        InputError: the file is unreadable (one line naming it).
    """
    path = Path(path)
    fmt = _format(path)
    try:
        if fmt == "tiff":
            from densecl.inputs.files.tiff import tiff_info

            info = tiff_info(path)
            return _photo_values_info(path, info) if values and info.photo else info
        if fmt == "dicom":
            from densecl.inputs.files.dicom import dicom_info

            return dicom_info(path)
        if fmt == "npy":
            from densecl.inputs.files.npy import npy_info

            return npy_info(path)
        if fmt == "png":
            from densecl.inputs.files.png import png_info

            info = png_info(path)
            if info is not None:
                return info
        info = _pil_info(path)
        return _photo_values_info(path, info) if values and info.photo else info
    except InputError:
        raise
    except Exception as e:  # the readers raise many types for bad files
        raise InputError(f"cannot read image {path} ({type(e).__name__}: {e})") from None


def read_image(
    path: str | Path,
    draft_side: int = 0,
    bands: tuple[int, ...] | None = None,
    fix: str = "fix or remove it",
    values: bool = False,
) -> Pixels:
    """Reads an image file: an RGB photo, or ``C x H x W`` float32 bands (see the module docstring).

    Args:
        draft_side: > 0 lets a JPEG photo decode at a reduced scale whose sides stay >= this.
        bands: 1-based band numbers to keep, in this order (``(4, 3, 2)``); selected before the
            conversion to float, so unused bands cost no conversion. A photo is returned whole:
            its bands are chosen after scaling (:meth:`densecl.inputs.InputSpec.tensor`).
        fix: what the user should do, the end of an unreadable file's message.
        values: read 8-bit images as their stored values too (bands, one a channel of the file:
            grayscale 1, RGB 3, RGBA 4), not as RGB photos.

    Raises:
        CannotDecode: the file needs a missing optional package or an unsupported decoder.
        InputError: unreadable, or fewer bands than ``bands`` names:
            ``cannot read image <path> (<error>); <fix>``.
    """
    read = read_values(path, draft_side, fix, values)
    return read if isinstance(read, Image.Image) else to_bands(*read, bands, Path(path))


def read_values(
    path: str | Path, draft_side: int = 0, fix: str = "fix or remove it", values: bool = False
) -> Image.Image | tuple[np.ndarray, float | None]:
    """:func:`read_image` before bands are chosen: an RGB photo, or ``(C x H x W stored values, nodata)``."""
    path = Path(path)
    fmt = _format(path)
    try:
        if fmt == "tiff":
            from densecl.inputs.files.tiff import read_tiff

            read = read_tiff(path)
        elif fmt == "dicom":
            from densecl.inputs.files.dicom import read_dicom

            read = read_dicom(path)
        elif fmt == "npy":
            from densecl.inputs.files.npy import read_npy

            read = read_npy(path)
        elif fmt == "png":
            from densecl.inputs.files.png import read_png

            read = read_png(path)
        else:
            read = None
        if read is None and values:
            read = _photo_values(path)
    except CannotDecode:
        raise
    except InputError as e:
        raise InputError(f"{e}; {fix}") from None
    except Exception as e:  # the readers raise many types for bad files
        raise InputError(f"cannot read image {path} ({type(e).__name__}: {e}); {fix}") from None
    if read is None:  # a photo: PIL, as every RGB run has read it
        return open_rgb(path, fix=fix, draft_side=draft_side)
    return read


_VALUE_MODES = {
    "P": "RGB",
    "PA": "RGBA",
    "1": "L",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "La": "LA",
    "RGBa": "RGBA",
}


def _photo_values(path: Path) -> tuple[np.ndarray, None]:
    """An 8-bit image's stored values, one band a channel of the file (a palette becomes RGB)."""
    with Image.open(path) as image:
        image.load()
        if image.mode in _VALUE_MODES:
            image = image.convert(_VALUE_MODES[image.mode])
        array = np.asarray(image)
    return (array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)), None


def to_bands(array: np.ndarray, nodata: float | None, bands: tuple[int, ...] | None, path: Path) -> torch.Tensor:
    """``C x H x W`` stored values -> float32 tensor, ``bands`` selected first, no-data pixels NaN."""
    if bands is not None:
        check_bands(bands, array.shape[0], path)
        array = array[[b - 1 for b in bands]]
    out = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if nodata_marks(nodata, array.dtype):
        out[torch.from_numpy(np.ascontiguousarray(array == np.asarray(nodata, dtype=array.dtype)))] = float("nan")
    return out


def nodata_marks(nodata: float | None, dtype: np.dtype) -> bool:
    """Whether ``nodata`` is a value that pixels of ``dtype`` can hold (then it marks them); NaN only floats hold.

    A value outside an integer type's range, or with a fraction, marks nothing: cast, it would wrap onto a real
    value (-9999 on uint16 is 55537).
    """
    if nodata is None:
        return False
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return not np.isnan(nodata)  # NaN pixels are no data anyway
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(nodata).is_integer() and info.min <= nodata <= info.max
    return dtype.kind == "b" and nodata in (0, 1)


def check_bands(bands: tuple[int, ...], available: int, path: Path | str) -> None:
    """Raises :class:`InputError` when ``bands`` names a band the file does not have."""
    if max(bands) > available:
        raise InputError(
            f"--bands {','.join(map(str, bands))} asks for band {max(bands)} but {path} has {available} band"
            f"{'s' if available != 1 else ''}; name bands 1..{available}"
        )


PHOTO_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa")
"""PIL modes of 8-bit images: read as RGB photos."""


def _pil_info(path: Path) -> ImageInfo:
    with Image.open(path) as image:
        if image.mode in PHOTO_MODES:
            return ImageInfo(image.width, image.height, 3, True, "8-bit photo")
        return ImageInfo(image.width, image.height, 1, False, f"{image.mode} {image.format}")


def _photo_values_info(path: Path, info: ImageInfo) -> ImageInfo:
    with Image.open(path) as image:
        mode = _VALUE_MODES.get(image.mode, image.mode)
    return info._replace(bands=len(mode), photo=False, kind=f"8-bit {mode}")


def pil_bands(path: Path) -> tuple[np.ndarray, None] | None:
    """A one-band image PIL reads beyond 8 bits (``I;16``, ``I``, ``F``) as ``1 x H x W``; None for a photo."""
    with Image.open(path) as image:
        if image.mode in PHOTO_MODES:
            return None
        image.load()
        return np.asarray(image)[None], None


def missing_extra(path: Path, package: str, extra: str, why: str) -> CannotDecode:
    """The one line for a file that needs an optional package."""
    return CannotDecode(
        f"reading {path} ({why}) needs the {package} package, which is not installed: pip install 'densecl[{extra}]'"
    )


def image_size(image: Pixels) -> tuple[int, int]:
    """``(width, height)`` of a PIL image or of a ``C x H x W`` tensor."""
    if isinstance(image, torch.Tensor):
        return image.shape[-1], image.shape[-2]
    return image.size


def preview(image: Pixels) -> Image.Image:
    """An RGB picture of an image for people to look at: a photo as it is; bands stretched from their 1st to
    99th percentile to 8 bits, the first three as RGB (one band as gray). Never fed to a network."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    x = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    x = torch.nan_to_num(x.float(), nan=0.0)
    lo, hi = torch.quantile(x.flatten()[:: max(1, x.numel() // 100_000)], torch.tensor([0.01, 0.99]))
    x = ((x - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def is_photo_array(array: np.ndarray) -> bool:
    """An ``H x W x 3`` uint8 array: what is saved as a JPEG or PNG photo."""
    return array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3


def save_image(folder: Path, name: str, array: np.ndarray, photo_suffix: str, **photo_options) -> str:
    """Saves ``H x W x C`` pixels as ``folder/name`` plus a suffix, and returns the file name.

    An 8-bit RGB array is a photo, saved by PIL with ``photo_suffix`` (``.jpg``, ``.png``) and ``photo_options``;
    any other (16-bit, more bands) a TIFF of its bands, band-first, by tifffile (the ``tiff`` extra).
    """
    if is_photo_array(array):
        Image.fromarray(array).save(folder / f"{name}{photo_suffix}", **photo_options)
        return f"{name}{photo_suffix}"
    try:
        import tifffile
    except ImportError:
        raise missing_extra(folder / f"{name}.tif", "tifffile", "tiff", "writing 16-bit or multi-band images") from None
    tifffile.imwrite(folder / f"{name}.tif", np.ascontiguousarray(np.moveaxis(array, -1, 0)), photometric="minisblack")
    return f"{name}.tif"
