"""Reading every kind of image file: stored values exactly, no-data, the one-line errors.

Run: ``.venv/bin/python -m pytest tests/test_pixels.py``
"""

import sys

import numpy as np
import pytest
import torch
from _image_files import sixteen_bit_ramp, write_dicom, write_png16, write_tiff
from PIL import Image

from densecl.errors import InputError
from densecl.inputs.files import CannotDecode, is_image_file, probe, read_image
from densecl.inputs.files.photo import open_rgb


@pytest.mark.parametrize("band_last", [False, True])
def test_a_four_band_16_bit_tiff_reads_exactly_band_first_or_band_last(tmp_path, band_last) -> None:
    array = sixteen_bit_ramp(12, 20, bands=4)
    path = write_tiff(tmp_path / "a.tif", array, band_last=band_last)
    info = probe(path)
    assert (info.width, info.height, info.bands, info.photo) == (20, 12, 4, False)
    x = read_image(path)
    assert x.dtype == torch.float32 and x.shape == (4, 12, 20)
    assert torch.equal(x, torch.from_numpy(array.astype(np.float32)))
    assert torch.equal(read_image(path, bands=(4, 2)), x[[3, 1]])


def test_a_geotiff_nodata_value_and_nan_become_nan(tmp_path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    array[0, 0, 0] = np.nan
    x = read_image(write_tiff(tmp_path / "geo.tif", array, nodata=5))
    assert torch.isnan(x).sum() == 2 and torch.isnan(x[0, 0, 0]) and torch.isnan(x[0, 1, 1])  # 5 is at (0, 1, 1)
    assert x[0, 1, 2] == 6


def test_a_tiff_without_the_gdal_nodata_tag_has_no_nan(tmp_path) -> None:
    x = read_image(write_tiff(tmp_path / "a.tif", np.zeros((3, 4, 5), np.uint16)))
    assert not torch.isnan(x).any()


def test_16_bit_grayscale_png_keeps_every_value(tmp_path) -> None:
    array = sixteen_bit_ramp(8, 9)[0]
    x = read_image(write_png16(tmp_path / "g.png", array))
    assert x.shape == (1, 8, 9) and torch.equal(x[0], torch.from_numpy(array.astype(np.float32)))
    assert probe(tmp_path / "g.png").bands == 1


def test_16_bit_rgb_png_keeps_every_value(tmp_path) -> None:
    array = np.moveaxis(sixteen_bit_ramp(8, 9, bands=3), 0, -1)
    x = read_image(write_png16(tmp_path / "c.png", array))
    assert x.shape == (3, 8, 9) and torch.equal(x, torch.from_numpy(np.moveaxis(array, -1, 0).astype(np.float32)))


def test_dicom_applies_rescale_slope_and_intercept(tmp_path) -> None:
    stored = np.array([[0, 1, 2], [1000, 2047, 4095]], np.uint16)
    x = read_image(write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0))
    assert x.shape == (1, 2, 3)
    assert x[0].tolist() == [[-1024.0, -1022.0, -1020.0], [976.0, 3070.0, 7166.0]]
    info = probe(tmp_path / "ct.dcm")
    assert (info.width, info.height, info.bands, info.photo) == (3, 2, 1, False)


def test_monochrome1_dicom_is_inverted_so_larger_is_brighter(tmp_path) -> None:
    stored = np.array([[0, 4095]], np.uint16)
    x = read_image(write_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1"))
    assert x[0].tolist() == [[4095.0, 0.0]]


def test_a_dicom_file_without_an_ending_is_found_and_read(tmp_path) -> None:
    path = write_dicom(tmp_path / "1.2.840.1", np.ones((4, 4), np.uint16))
    assert is_image_file(path) and not is_image_file(tmp_path / "notes")
    assert read_image(path).shape == (1, 4, 4)


def test_a_compressed_dicom_without_its_decoder_is_one_line_naming_the_syntax(tmp_path) -> None:
    from pydicom.uid import JPEGLSLossless

    path = write_dicom(tmp_path / "ls.dcm", np.ones((4, 4), np.uint16), transfer_syntax=JPEGLSLossless)
    for read in (probe, read_image):
        with pytest.raises(CannotDecode) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and "JPEG-LS Lossless" in message and "install" in message


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("tifffile", lambda p: write_tiff(p / "a.tif", np.zeros((4, 5, 6), np.uint16)), "tiff"),
        ("pydicom", lambda p: write_dicom(p / "a.dcm", np.zeros((5, 6), np.uint16)), "dicom"),
        ("imagecodecs", lambda p: write_png16(p / "a.png", np.zeros((5, 6, 3), np.uint16)), "tiff"),
    ],
)
def test_a_file_that_needs_a_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, module, make, extra):
    path = make(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if not installed
    for read in (probe, read_image):
        with pytest.raises(CannotDecode) as caught:
            read(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and f"pip install 'densecl[{extra}]'" in message


def test_without_tifffile_a_one_band_16_bit_tiff_still_reads_through_pil(tmp_path, monkeypatch) -> None:
    array = sixteen_bit_ramp(5, 6)[0]
    path = write_tiff(tmp_path / "g.tif", array)
    monkeypatch.setitem(sys.modules, "tifffile", None)
    assert torch.equal(read_image(path)[0], torch.from_numpy(array.astype(np.float32)))


@pytest.mark.parametrize("shape", [(3, 6, 7), (6, 7, 3), (6, 7)])
def test_npy_arrays_band_first_band_last_or_2d(tmp_path, shape) -> None:
    array = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    np.save(tmp_path / "a.npy", array)
    x = read_image(tmp_path / "a.npy")
    expected = array[None] if array.ndim == 2 else (array if shape[0] == 3 else np.moveaxis(array, -1, 0))
    assert torch.equal(x, torch.from_numpy(expected.astype(np.float32)))


def test_8_bit_photos_read_exactly_as_before(tmp_path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).save(tmp_path / "g.png")
    pytest.importorskip("tifffile").imwrite(tmp_path / "rgb.tif", rng.integers(0, 255, (40, 60, 3), np.uint8))
    for name in ("p.jpg", "g.png", "rgb.tif"):
        image = read_image(tmp_path / name)
        assert isinstance(image, Image.Image) and image.mode == "RGB" and probe(tmp_path / name).photo
        assert np.array_equal(np.asarray(image), np.asarray(open_rgb(tmp_path / name)))
    assert read_image(tmp_path / "p.jpg", draft_side=10).size == open_rgb(tmp_path / "p.jpg", draft_side=10).size


def test_8_bit_images_as_values_keep_their_own_bands(tmp_path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey).save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png", values=True)
    assert x.shape == (1, 3, 4) and x[0].tolist() == grey.astype(float).tolist()
    assert probe(tmp_path / "g.png", values=True).bands == 1


def test_asking_for_a_band_the_file_lacks_is_one_line(tmp_path) -> None:
    path = write_tiff(tmp_path / "a.tif", np.zeros((4, 5, 6), np.uint16))
    with pytest.raises(InputError, match=r"--bands 5,1 asks for band 5 but .*a\.tif has 4 bands"):
        read_image(path, bands=(5, 1))
