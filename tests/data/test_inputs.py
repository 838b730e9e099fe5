"""A run's input from its images: channels, bands, statistics, no data, disagreeing folders, the N-channel views.

Run: ``.venv/bin/python -m pytest tests/data/test_inputs.py``
"""

import dataclasses

import numpy as np
import pytest
import torch
from _image_files import write_dicom, write_png16, write_tiff
from PIL import Image

from densecl.config import PretrainConfig
from densecl.data.jitter import BandJitter, _rotate_hue
from densecl.data.sources import TwoViewDataset
from densecl.data.transforms import GeometricTwoViews
from densecl.errors import InputError
from densecl.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from densecl.inputs.resolve import resolve_inputs
from densecl.inputs.sources import ImagesDisagree, image_source
from densecl.inputs.stats import sample_indices

CROP = 48


def resolved(folder, **settings):
    cfg = dataclasses.replace(PretrainConfig(), data=str(folder), crop_size=CROP, **settings)
    source = image_source(cfg.data)
    cfg, spec, line = resolve_inputs(cfg, source)
    return cfg, spec, line, source


def views(folder, seed=3, **settings):
    """The two views train.py's data set gives for image 0 of ``folder`` with ``seed``."""
    cfg, spec, _, source = resolved(folder, **settings)
    dataset = TwoViewDataset(source, GeometricTwoViews(CROP, 0.2, inputs=spec, jitter=cfg.jitter))
    im_q, im_k, _, _ = dataset[(0, seed)]
    return im_q, im_k


def four_band_folder(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 65535, (4, 40, 56), dtype=np.uint16) for _ in range(n)]
    for i, a in enumerate(arrays):
        write_tiff(folder / f"{i}.tif", a)
    return arrays


def test_a_four_band_folder_resolves_to_four_channels_and_its_own_statistics(tmp_path) -> None:
    arrays = four_band_folder(tmp_path / "ms")
    cfg, spec, line, _ = resolved(tmp_path / "ms")
    everything = np.stack(arrays).astype(np.float64)  # N x 4 x H x W
    mean, std = everything.mean(axis=(0, 2, 3)), everything.std(axis=(0, 2, 3))
    assert cfg.in_channels == 4 and spec.channels == 4 and spec.photo is False and cfg.jitter == "channels"
    np.testing.assert_allclose(spec.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(spec.std, std, rtol=1e-6)
    assert cfg.mean == ",".join(f"{m:.7g}" for m in mean) and "measured on 3 images" in line
    im_q, im_k = views(tmp_path / "ms")
    assert im_q.shape == im_k.shape == (4, CROP, CROP) and im_q.dtype == torch.float32


def test_bands_choose_and_order_the_channels(tmp_path) -> None:
    four_band_folder(tmp_path / "ms")
    cfg, spec, _, _ = resolved(tmp_path / "ms", bands="4,3,2")
    assert cfg.in_channels == 3 and spec.bands == (4, 3, 2) and cfg.bands == "4,3,2"
    _, full, _, _ = resolved(tmp_path / "ms")
    assert spec.mean == tuple(full.mean[b - 1] for b in (4, 3, 2))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"in_channels": 3}, r"--in-channels 3, but the images give 4 channels \(.*0\.tif\)"),
        ({"bands": "5"}, r"--bands 5 asks for band 5 but .*0\.tif has 4 bands"),
        ({"mean": "1,2,3,4"}, "give --mean and --std together"),
        ({"mean": "1,2", "std": "1,2"}, "--mean has 2 values but there are 4 input channels"),
        ({"jitter": "rgb"}, "--jitter rgb needs 3 channels"),
        ({"pixels": "photo"}, "--pixels photo, but .* is not an 8-bit photo"),
        ({"data_backend": "gpu"}, "--data-backend gpu decodes 8-bit JPEG photos; .* use --data-backend cpu"),
    ],
)
def test_settings_that_contradict_the_images_are_one_line(tmp_path, settings, message) -> None:
    four_band_folder(tmp_path / "ms")
    with pytest.raises(InputError, match=message) as caught:
        resolved(tmp_path / "ms", **settings)
    assert "\n" not in str(caught.value)


def test_nodata_is_left_out_of_the_statistics_and_filled_with_the_mean(tmp_path) -> None:
    folder = tmp_path / "geo"
    folder.mkdir()
    a = np.full((2, 40, 40), 100, np.uint16)
    a[0, :20] = 300
    a[:, 30:] = 9999  # no data
    write_tiff(folder / "a.tif", a, nodata=9999)
    b = np.full((2, 40, 40), 7, np.uint16)
    b[1, 0, 0] = 0  # --nodata 7 makes the rest of b no data
    write_tiff(folder / "b.tif", b)
    _, spec, _, _ = resolved(folder, nodata=7.0)
    valid = a[0, :30].ravel()  # b's channel 0 is all 7: no data
    assert spec.mean[0] == pytest.approx(valid.mean()) and spec.std[0] == pytest.approx(valid.std())
    assert spec.mean[1] == pytest.approx(np.concatenate([a[1, :30].ravel(), [0]]).mean())
    for seed in range(4):
        im_q, im_k = views(folder, seed=seed, nodata=7.0)
        assert torch.isfinite(im_q).all() and torch.isfinite(im_k).all()


@pytest.mark.parametrize("kind", ["bands", "kind"])
def test_a_folder_whose_images_disagree_stops_with_one_line_naming_one_of_each(tmp_path, kind) -> None:
    folder = tmp_path / "mixed"
    four_band_folder(folder, n=2)
    if kind == "bands":
        write_tiff(folder / "z.tif", np.zeros((3, 40, 56), np.uint16))
        expected = r"mixes images of 4 and 3 bands: .*0\.tif has 4, .*z\.tif has 3"
    else:
        Image.new("RGB", (56, 40)).save(folder / "z.jpg")
        expected = r"mixes kinds of image: .*0\.tif is a 16-bit.*, .*z\.jpg is an 8-bit photo"
    with pytest.raises(ImagesDisagree, match=expected) as caught:
        resolved(folder)
    assert "\n" not in str(caught.value)


def test_an_image_that_disagrees_beyond_the_statistics_sample_stops_at_start(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "mixed"
    four_band_folder(folder, n=2)
    write_tiff(folder / "z.tif", np.zeros((3, 40, 56), np.uint16))
    import densecl.inputs.stats as stats

    monkeypatch.setattr(stats, "sample_indices", lambda n, k=256: [0, 1])  # the statistics' sample misses z.tif
    with pytest.raises(ImagesDisagree, match=r"z\.tif has 3"):  # every header is read: before anything is built
        resolved(folder)


def test_every_header_of_a_large_folder_is_checked_with_a_progress_bar(tmp_path, monkeypatch, capsys) -> None:
    import densecl.inputs.stats as stats

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(30):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{i:03d}.png")
    write_png16(folder / "017b.png", np.zeros((8, 8), np.uint16))  # one 16-bit image in the middle
    monkeypatch.setattr(stats, "PROGRESS_FROM", 10)
    with pytest.raises(ImagesDisagree, match=r"000\.png is an 8-bit photo.*017b\.png is a 16-bit"):
        stats.inspect(image_source(str(folder)))
    assert "checking image headers" in capsys.readouterr().err


def sixteen_bit_pair(folder, kind):
    """Two copies of one image that differ by one 16-bit step at one pixel (8 bits would read them equal)."""
    base = np.full((40, 56), 1000, np.uint16)  # 1000 and 1001 are both 4 in 8 bits (round(x / 257))
    base[::3] += 7
    stepped = base.copy()
    stepped[20, 28] += 1
    assert np.array_equal(np.rint(base / 257), np.rint(stepped / 257))
    for name, array in (("a", base), ("b", stepped)):
        sub = folder / name
        sub.mkdir(parents=True)
        if kind == "tiff":
            write_tiff(sub / "0.tif", np.stack([array, array + 5, array + 9, array + 2]))
            write_tiff(sub / "1.tif", np.stack([array + 3] * 4))
        elif kind == "png":
            write_png16(sub / "0.png", array)
            write_png16(sub / "1.png", array + 3)
        else:
            write_dicom(sub / "0.dcm", array, slope=1.0, intercept=-1024.0, bits_stored=16)
            write_dicom(sub / "1.dcm", array + 3, slope=1.0, intercept=-1024.0, bits_stored=16)
    return folder / "a", folder / "b"


@pytest.mark.parametrize("kind", ["tiff", "png", "dicom"])
def test_a_16_bit_step_that_8_bits_would_lose_changes_what_the_model_gets(tmp_path, kind) -> None:
    a, b = sixteen_bit_pair(tmp_path, kind)
    settings = {"mean": ",".join(["1000"] * (4 if kind == "tiff" else 1))}
    settings["std"] = settings["mean"]
    for seed in range(3):  # the views of the same seed: same crop and jitter, one input pixel apart
        (qa, ka), (qb, kb) = views(a, seed, **settings), views(b, seed, **settings)
        assert not torch.equal(qa, qb) or not torch.equal(ka, kb)
        assert (qa - qb).abs().max() < 1e-2  # one step in a thousand, spread by resampling


def test_photos_keep_exactly_the_views_of_before(tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    cfg, spec, line, source = resolved(folder)
    assert spec == InputSpec() and cfg.mean == "0.485,0.456,0.406" and "ImageNet's" in line
    before = TwoViewDataset(image_source(str(folder)), GeometricTwoViews(CROP, 0.2))  # as every RGB run did
    now = TwoViewDataset(source, GeometricTwoViews(CROP, 0.2, inputs=spec, jitter=cfg.jitter))
    for seed in range(3):
        for x, y in zip(before[(1, seed)][:2], now[(1, seed)][:2]):
            assert torch.equal(x, y)
    assert spec.statistics(photo=True) == (IMAGENET_MEAN, IMAGENET_STD)


def test_8_bit_grayscale_as_values_is_one_channel(tmp_path) -> None:
    folder = tmp_path / "xray"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40), 10 * (i + 1), np.uint8)).save(folder / f"{i}.png")
    cfg, spec, _, _ = resolved(folder, pixels="values")
    assert cfg.in_channels == 1 and spec.mean == (15.0,) and spec.std == (5.0,) and cfg.jitter == "image"


def test_channels_jitter_scales_each_band_on_its_own_and_image_jitter_all_alike() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1).expand(4, 8, 8).clone()
    torch.manual_seed(0)
    jitter = BandJitter(4, "channels", crop_size=8)
    distinct = set()
    for _ in range(20):  # constant bands: contrast against each band's own mean is a no-op, brightness one a band
        y = jitter(x)
        distinct.add(len({round(v, 5) for v in (y[:, 0, 0] / x[:, 0, 0]).tolist()}))
    assert distinct == {1, 4}  # not jittered (p 0.2), or four factors
    x_same = torch.full((4, 8, 8), 5.0)
    jitter = BandJitter(4, "image", crop_size=8)
    for _ in range(20):
        y = jitter(x_same)
        assert torch.allclose(y, y[0].expand_as(y))  # a constant view stays one value in every band


def test_hue_rotation_of_stored_values_is_the_photo_rotation_scaled() -> None:
    from densecl.data.colour import adjust_hue

    x = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = adjust_hue(x[None] / x.max(), torch.tensor([0.07]))[0] * x.max()
    assert torch.allclose(_rotate_hue(x * 5000.0, 0.07), expected * 5000.0, rtol=1e-5)


def test_sample_indices_spread_over_the_whole_set() -> None:
    assert sample_indices(5, 256) == [0, 1, 2, 3, 4]
    picked = sample_indices(10_000, 4)
    assert picked == [0, 3333, 6666, 9999]


def test_geometric_matching_is_the_same_for_bands_as_for_photos(tmp_path) -> None:
    four_band_folder(tmp_path / "ms", n=1)
    (tmp_path / "rgb").mkdir()
    Image.new("RGB", (56, 40)).save(tmp_path / "rgb" / "0.png")
    matches = []
    for folder in ("ms", "rgb"):
        cfg, spec, _, source = resolved(tmp_path / folder)
        two_views = GeometricTwoViews(CROP, 0.2, grid=(2, 2), inputs=spec, jitter=cfg.jitter)
        _, _, match, _ = TwoViewDataset(source, two_views)[(0, 11)]
        matches.append(match)
    assert matches[0].shape == (4,) and torch.equal(matches[0], matches[1])  # the geometry: size and seed only


def test_data_stats_prints_the_statistics_and_the_flags(tmp_path, capsys) -> None:
    from densecl.cli import main

    arrays = four_band_folder(tmp_path / "ms")
    assert main(["data", "stats", str(tmp_path / "ms"), "--bands", "4,1"]) == 0
    out = capsys.readouterr().out
    mean = np.stack(arrays).astype(np.float64).mean(axis=(0, 2, 3))
    assert "3 images; uint16 TIFF, stored values; 4 bands a file" in out
    assert f"--mean {mean[3]:.7g},{mean[0]:.7g} --std" in out


def test_an_8_bit_geotiff_with_a_nodata_value_is_read_as_stored_values_with_its_collars_masked(tmp_path) -> None:
    folder = tmp_path / "ortho"
    folder.mkdir()
    for name, shift in (("a", 0), ("b", 20)):
        rgb = np.full((3, 40, 40), 100 + shift, np.uint8)
        rgb[0] += 30
        rgb[:, :, :10] = 0  # a no-data collar, as GDAL writes orthophotos
        write_tiff(folder / f"{name}.tif", rgb, nodata=0)
    cfg, spec, line, _ = resolved(folder)
    assert spec.photo is False and spec.channels == 3 and cfg.pixels == "values"
    valid = np.array([130, 150])  # channel 0 of a and b, collars left out: the stored values, not [0, 1]
    assert spec.mean[0] == pytest.approx(valid.mean()) and spec.std[0] == pytest.approx(valid.std())
    assert "75.0% of their pixels with data" in line
    for seed in range(3):
        im_q, im_k = views(folder, seed=seed)
        assert torch.isfinite(im_q).all() and torch.isfinite(im_k).all()


def test_nodata_on_8_bit_photos_reads_their_stored_values_and_marks_them(tmp_path) -> None:
    folder = tmp_path / "png"
    folder.mkdir()
    for i in range(2):
        array = np.full((20, 20, 3), 50 + i, np.uint8)
        array[:5] = 255  # the no-data value of this folder
        Image.fromarray(array).save(folder / f"{i}.png")
    _, spec, line, _ = resolved(folder, nodata=255.0)
    assert spec.photo is False and spec.nodata == 255 and spec.mean == pytest.approx((50.5,) * 3)
    assert "75.0% of their pixels with data" in line
    with pytest.raises(InputError, match="^--nodata 255 marks stored values, but --pixels photo"):
        resolved(folder, nodata=255.0, pixels="photo")


def test_a_nodata_value_outside_the_files_type_marks_nothing(tmp_path) -> None:
    from densecl.inputs.files import read_image

    array = np.array([[[0, 55537, 9999]]], np.uint16)  # -9999 cast to uint16 would be 55537
    x = read_image(write_tiff(tmp_path / "a.tif", array, nodata=-9999))
    assert not torch.isnan(x).any() and x[0, 0, 1] == 55537
    y = read_image(write_tiff(tmp_path / "b.tif", array, nodata=0.5))  # a fraction: no integer equals it
    assert not torch.isnan(y).any()
    z = read_image(write_tiff(tmp_path / "c.tif", array, nodata=9999))
    assert torch.isnan(z).sum() == 1 and torch.isnan(z[0, 0, 2])
