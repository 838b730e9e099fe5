"""DICOM through pydicom: the stored values with the modality transform applied (rescale slope and intercept).

The values are those ``pydicom.pixels.apply_modality_lut`` gives: ``stored *
RescaleSlope + RescaleIntercept`` (Hounsfield units for CT), or the modality
LUT where the file has one. ``MONOCHROME1`` images (larger stored values are
darker) are inverted first, ``(2^BitsStored - 1) - stored``, so larger is
brighter in every file of a folder. Colour images (``SamplesPerPixel`` 3)
give three bands, YBR converted to RGB by pydicom. One frame per file: a
multi-frame file stops with one line (write its frames as files).

A compressed transfer syntax needs its decoder (pydicom's plugins, e.g.
pylibjpeg or gdcm); when none is installed the file stops the run with one
line naming the syntax and the packages that decode it, before any pixel is
read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densecl.errors import InputError
from densecl.inputs.files import CannotDecode, ImageInfo, missing_extra


def _pydicom(path: Path):
    try:
        import pydicom
    except ImportError:
        raise missing_extra(path, "pydicom", "dicom", "DICOM") from None
    return pydicom


def _header(path: Path, pixels: bool = False):
    """The dataset (its pixel data only with ``pixels``), checked: one frame, a decoder installed."""
    pydicom = _pydicom(path)
    ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"cannot read image {path} (a DICOM file without an image: no Rows and Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"cannot read image {path} (a multi-frame DICOM of {frames} frames): densecl reads one 2-D image a "
            "file; write the frames as separate files"
        )
    _check_decoder(ds, path)
    return ds


def _check_decoder(ds, path: Path) -> None:
    """Raises :class:`CannotDecode` naming the transfer syntax when no installed plugin decodes it."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise CannotDecode(
            f"cannot decode {path}: its transfer syntax {uid.name} ({uid}) has no decoder in pydicom; convert the "
            "files to an uncompressed syntax (e.g. gdcmconv --raw)"
        ) from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        raise CannotDecode(
            f"cannot decode {path}: its pixel data is compressed as {uid.name} ({uid}) and no installed package "
            f"decodes it; install one of: {needs} (or convert the files to an uncompressed syntax)"
        )


def dicom_info(path: Path) -> ImageInfo:
    ds = _header(path)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    kind = f"DICOM {ds.get('BitsStored', ds.get('BitsAllocated', '?'))}-bit {ds.get('Modality', '')}".rstrip()
    return ImageInfo(int(ds.Columns), int(ds.Rows), samples, False, kind)


def read_dicom(path: Path) -> tuple[np.ndarray, None]:
    """``(C x H x W float64 values, None)``: the modality transform applied."""
    from pydicom.pixels import apply_modality_lut

    ds = _header(path, pixels=True)  # checked before the pixel data is decoded
    stored = ds.pixel_array
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        stored = (2 ** int(ds.get("BitsStored", ds.BitsAllocated)) - 1) - stored.astype(np.float64)
    values = apply_modality_lut(stored, ds) if int(ds.get("SamplesPerPixel", 1) or 1) == 1 else stored
    values = np.asarray(values)
    return (values[None] if values.ndim == 2 else np.moveaxis(values, -1, 0)), None
