"""TIFF and GeoTIFF: 8-bit photos through PIL, everything else as bands through tifffile.

A TIFF is a photo (read by PIL, as before) when its samples are 8-bit and
it has one to three of them, or four with the last one alpha, or a palette,
and it has no GeoTIFF nodata value: an 8-bit orthophoto with one has no-data
collars, so it is read as bands of stored values whose nodata pixels are
marked (and left out of the statistics and the views).
Any other TIFF (16- or 32-bit, float, more bands, four bands without alpha
such as red, green, blue and near-infrared) is read with tifffile as bands.
The first image series is read (a pyramid's full resolution). Its axes may
be band-last (``YXS``, samples per pixel) or band-first (``SYX``, ``CYX``, a
planar or page-per-band file): one axis besides Y and X becomes the bands.
A GeoTIFF's nodata value (the ``GDAL_NODATA`` tag) marks pixels without data.

Without tifffile a TIFF that PIL reads as an 8-bit photo or a one-band 16-bit
or float image is still read; any other needs the ``tiff`` extra.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.inputs.files import PHOTO_MODES, CannotDecode, ImageInfo, _pil_info, missing_extra, nodata_marks, pil_bands

GDAL_NODATA = 42113  # the GeoTIFF tag holding the nodata value as text


class _NodataParsedHere(logging.Filter):
    """Drops tifffile's warning about a nodata value its file's type cannot hold: :func:`_layout` reads the tag
    itself, and such a value marks nothing (:func:`densecl.inputs.files.nodata_marks`); a folder of such files would
    otherwise print two lines a file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "GDAL_NODATA" not in record.getMessage()


logging.getLogger("tifffile").addFilter(_NodataParsedHere())
ALPHA = (1, 2)  # ExtraSamples: associated, unassociated alpha
PALETTE = 3  # PhotometricInterpretation


def _tifffile(path: Path):
    try:
        import tifffile
    except ImportError:
        raise missing_extra(path, "tifffile", "tiff", "a TIFF that is not an 8-bit photo") from None
    return tifffile


def _layout(path: Path):
    """``(shape, axes, dtype, photo, nodata)`` of the first series, from the header."""
    tifffile = _tifffile(path)
    with tifffile.TiffFile(path) as tif:
        series, page = tif.series[0], tif.pages[0]
        shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
        photometric, extrasamples = int(page.photometric), tuple(int(e) for e in page.extrasamples)
        tag = page.tags.get(GDAL_NODATA)
        nodata = _parse_nodata(tag.value, path) if tag is not None else None
    kept = [(n, a) for n, a in zip(shape, axes) if n > 1 or a in "YX"]
    if [a for _, a in kept if a in "YX"] != ["Y", "X"] or len(kept) > 3:
        raise InputError(
            f"cannot read image {path} (TIFF axes {axes} of shape {shape}): densecl reads a 2-D image with at "
            "most one band axis besides Y and X"
        )
    samples = next((n for n, a in kept if a not in "YX"), 1)
    photo = (
        dtype == np.uint8
        and (samples in (1, 2, 3) or photometric == PALETTE or (samples == 4 and extrasamples[-1:] in ((1,), (2,))))
        and not nodata_marks(nodata, dtype)
    )
    return tuple(n for n, _ in kept), "".join(a for _, a in kept), dtype, photo, nodata


def _pil_reads(path: Path) -> bool:
    """Whether PIL alone reads the TIFF whole as it must be read: an 8-bit photo without a nodata value, or one
    page of one 16- or 32-bit sample."""
    try:
        with Image.open(path) as image:
            samples = image.tag_v2.get(277, 1)  # SamplesPerPixel
            one_band = samples == 1 and getattr(image, "n_frames", 1) == 1 and image.mode in ("I;16", "I;16B", "I", "F")
            return (image.mode in PHOTO_MODES and GDAL_NODATA not in image.tag_v2) or one_band
    except Exception:  # PIL cannot read it at all
        return False


def _parse_nodata(text, path: Path) -> float | None:
    try:
        return float(str(text).strip().strip("\x00"))
    except ValueError:
        return None  # a malformed tag marks nothing


def tiff_info(path: Path) -> ImageInfo:
    try:
        shape, axes, dtype, photo, nodata = _layout(path)
    except CannotDecode:  # no tifffile: what PIL reads alone, else the missing extra
        if _pil_reads(path):
            return _pil_info(path)
        raise
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    if photo:
        return ImageInfo(width, height, 3, True, "8-bit photo")
    bands = shape[[a not in "YX" for a in axes].index(True)] if len(axes) == 3 else 1
    marks = f" with nodata {nodata:g}" if nodata_marks(nodata, dtype) else ""
    return ImageInfo(width, height, bands, False, f"{dtype.name} TIFF{marks}")


def read_tiff(path: Path) -> tuple[np.ndarray, float | None] | None:
    """``(C x H x W stored values, nodata)``, or None for a photo (PIL reads it)."""
    try:
        shape, axes, _, photo, nodata = _layout(path)
    except CannotDecode as e:  # no tifffile: what PIL reads alone, else the missing extra
        if _pil_reads(path):
            return pil_bands(path)
        raise e from None
    if photo:
        return None
    import tifffile

    array = tifffile.imread(path, series=0, maxworkers=1).reshape(shape)  # one decoding thread per data worker
    if len(axes) == 2:
        array = array[None]
    else:
        array = np.moveaxis(array, [a not in "YX" for a in axes].index(True), 0)  # C x H x W
    return array, None if nodata is None or math.isnan(nodata) else nodata
