"""Test images written by the formats' own writers: tifffile, pydicom, imagecodecs, PIL, numpy.

Each writer stores exactly the array it is given, so a test knows every value a reader must return.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_tiff(path: Path, array: np.ndarray, band_last: bool = False, nodata: float | None = None) -> Path:
    """``C x H x W`` (or ``H x W``) -> a TIFF, bands planar (band-first) or interleaved (band-last)."""
    tifffile = pytest.importorskip("tifffile")
    tags = [(42113, "s", 0, f"{nodata:g}", True)] if nodata is not None else []
    if array.ndim == 3 and band_last:
        interleaved = np.moveaxis(array, 0, -1)
        tifffile.imwrite(path, interleaved, photometric="minisblack", planarconfig="contig", extratags=tags)
    else:
        tifffile.imwrite(path, array, photometric="minisblack", extratags=tags)
    return path


def write_dicom(
    path: Path,
    array: np.ndarray,
    slope: float | None = None,
    intercept: float | None = None,
    transfer_syntax: str | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
) -> Path:
    """``H x W`` uint16 -> a DICOM file (secondary capture), with rescale slope and intercept when given."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if transfer_syntax is None:
        ds.PixelData = array.astype(np.uint16).tobytes()
    else:  # a compressed syntax: an encapsulated fragment (decoding it is what must fail, one line)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8\x00\x00\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).Rows == array.shape[0]
    return path


def write_png16(path: Path, array: np.ndarray) -> Path:
    """``H x W`` uint16 with PIL, ``H x W x 3|4`` uint16 with imagecodecs (PIL writes no 16-bit colour PNG)."""
    if array.ndim == 2:
        Image.fromarray(array.astype(np.uint16)).save(path)
    else:
        imagecodecs = pytest.importorskip("imagecodecs")
        path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(array, dtype=np.uint16)))
    return path


def sixteen_bit_ramp(height: int, width: int, bands: int = 1, seed: int = 0) -> np.ndarray:
    """``bands x H x W`` uint16 values spread over the 16-bit range, with neighbours 1 apart (8 bits lose them)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1000, 60000, size=(bands, height, width))
    return (base - base % 2 + np.indices((height, width)).sum(0) % 2).astype(np.uint16)
