import json

import numpy as np
import pytest
import torch
from PIL import Image

from densecl.data.sampler import EpochSampler
from densecl.data.sources import TwoViewDataset
from densecl.data.transforms import GeometricTwoViews
from densecl.errors import InputError
from densecl.inputs.files.photo import to_rgb
from densecl.inputs.sources import image_source


def _write_images(folder, n=3, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


@pytest.mark.parametrize(
    "mode, array",
    [
        ("L", np.full((4, 4), 200, np.uint8)),
        ("I;16", np.full((4, 4), 65535, np.uint16)),
        ("RGBA", np.dstack([np.full((4, 4, 3), 10, np.uint8), np.zeros((4, 4), np.uint8)])),
    ],
)
def test_modes_become_rgb(mode, array):
    image = Image.fromarray(array, mode=mode) if mode != "I;16" else Image.fromarray(array)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 4)
    expected = {"L": 200, "I;16": 255, "RGBA": 255}[mode]  # fully transparent -> white
    assert np.asarray(rgb)[0, 0].tolist() == [expected] * 3


def test_palette_and_cmyk_become_rgb(tmp_path):
    Image.new("P", (4, 4), 3).save(tmp_path / "p.png")
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    source = image_source(str(tmp_path))
    assert [source.load(i).mode for i in range(len(source))] == ["RGB", "RGB"]


def test_directory_tree_is_recursive_and_filters_extensions(tmp_path):
    _write_images(tmp_path / "a" / "b", 2)
    _write_images(tmp_path / "c", 1)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(image_source(str(tmp_path))) == 3


def test_text_list_and_coco_json(tmp_path):
    _write_images(tmp_path / "train2017", 3)
    (tmp_path / "list.txt").write_text("# my images\ntrain2017/im0.png\n\ntrain2017/im2.png\n")
    assert len(image_source(str(tmp_path / "list.txt"))) == 2
    (tmp_path / "annotations").mkdir()
    coco = {"images": [{"id": i, "file_name": f"im{i}.png"} for i in range(3)], "annotations": []}
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    source = image_source(str(tmp_path / "annotations" / "instances_train2017.json"))
    assert len(source) == 3 and source.load(2).size == (40, 40)


def test_missing_and_empty_paths_fail_with_one_line(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        image_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found in folder"):
        image_source(str(tmp_path / "empty"))


def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path, capsys):
    _write_images(tmp_path, 2)
    (tmp_path / "im0.png").write_bytes(b"not a png at all")
    good = (tmp_path / "im1.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    source = image_source(str(tmp_path))  # im0 (bad), im1 (good), truncated (bad)
    dataset = TwoViewDataset(source, GeometricTwoViews(32, 0.2))
    skipped = [dataset[(i, 0)][-1] for i in range(3)] + [dataset[(0, 1)][-1]]
    # a bad image is replaced by the next readable one (truncated -> im0, bad -> im1: two skips)
    assert skipped == [1, 0, 2, 1]
    err = capsys.readouterr().err
    assert err.count("densecl: warning: cannot read image") == 2  # once per file, not per access
    assert "im0.png" in err and "truncated.png" in err


def test_two_views_are_reproducible_from_the_seed_and_independent():
    source = image_source("scenes", scenes_length=4, scenes_size=64)
    dataset = TwoViewDataset(source, GeometricTwoViews(48, 0.2))
    a_q, a_k, match, _ = dataset[(1, 123)]
    b_q, b_k, _, _ = dataset[(1, 123)]
    c_q, _, _, _ = dataset[(1, 124)]
    assert a_q.shape == (3, 48, 48) and a_q.dtype == torch.float32 and match.numel() == 0  # matched by features
    assert torch.equal(a_q, b_q) and torch.equal(a_k, b_k)
    assert not torch.equal(a_q, a_k) and not torch.equal(a_q, c_q)


def test_sampler_shards_a_global_permutation_and_resumes():
    full = list(EpochSampler(10, batch_size=2, rank=0, world_size=1, seed=3, epoch=1))
    r0 = list(EpochSampler(10, batch_size=1, rank=0, world_size=2, seed=3, epoch=1))
    r1 = list(EpochSampler(10, batch_size=1, rank=1, world_size=2, seed=3, epoch=1))
    assert len(full) == 10 and sorted(i for i, _ in full) == list(range(10))
    assert [x for pair in zip(r0, r1) for x in pair] == full  # rank r takes slot r of every global batch
    resumed = list(EpochSampler(10, batch_size=2, seed=3, epoch=1, start_batch=2))
    assert resumed == full[4:]
    assert [i for i, _ in EpochSampler(10, 2, seed=3, epoch=2)] != [i for i, _ in full]
    assert len(list(EpochSampler(9, batch_size=4))) == 8  # drops the last partial batch


# --------------------------------------------------------------------------- JPEG draft decoding


def _coordinate_photo(path, width, height):
    """A JPEG whose red and green channels encode each pixel's x and y (smooth: JPEG keeps it)."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    Image.fromarray(np.stack([x, y, np.full_like(x, 128)], 2).round().astype(np.uint8)).save(path, quality=95)


def test_draft_reduction_is_the_largest_that_keeps_every_box_at_least_the_crop():
    from densecl.data.geometry import ViewGeometry, draft_reduction

    def box(h, w):
        return ViewGeometry(0, 0, h, w, size=64)

    assert draft_reduction([box(300, 400), box(520, 600)]) == 4  # 300 >= 4 * 64, < 8 * 64
    assert draft_reduction([box(512, 512), box(600, 513)]) == 8
    assert draft_reduction([box(127, 900), box(900, 900)]) == 1  # one small box decides
    assert draft_reduction([box(128, 128)]) == 2


def test_draft_decoding_is_used_for_jpegs_only(tmp_path):
    _coordinate_photo(tmp_path / "a.jpg", 1000, 750)
    Image.open(tmp_path / "a.jpg").save(tmp_path / "b.png")
    source = image_source(str(tmp_path))  # a.jpg, b.png
    assert source.size(0) == source.size(1) == (1000, 750)
    assert source.load(0, draft_side=750 // 4).size == (250, 188)  # ceil(750 / 4)
    assert source.load(1, draft_side=750 // 4).size == (1000, 750)


def test_views_of_a_draft_decoded_jpeg_show_the_same_image_points(tmp_path):
    # a large JPEG is decoded at 1/2..1/8 where both boxes allow it; the views must still show the boxes
    # drawn in full-image coordinates: compare with the views rendered from the full decode
    from densecl.data.geometry import draft_reduction
    from densecl.data.transforms import IMAGENET_STD

    _coordinate_photo(tmp_path / "a.jpg", 1000, 750)
    source = image_source(str(tmp_path))
    views = GeometricTwoViews(crop_size=128, min_scale=0.05, grid=(4, 4), photometric=False)
    dataset = TwoViewDataset(source, views)
    full = source.load(0)
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    reductions = []
    for seed in range(16):
        im_q, im_k, match, _ = dataset[(0, seed)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            geometry = views.geometry(*full.size)
            ref_q, ref_k = views.render(full, geometry)
        reductions.append(draft_reduction(geometry))
        for ours, ref in ((im_q, ref_q), (im_k, ref_k)):
            error = ((ours - ref) * std * 255).abs()  # in grey levels
            assert error.mean() < 1.5 and error.max() < 12, (seed, reductions[-1])
            assert torch.equal(ours, ref) == (reductions[-1] == 1)  # a reduced decode is not the full one
        assert torch.equal(match, views.match(geometry))  # the geometry, hence the match, is the full image's
    assert {2, 4} <= set(reductions)


def test_both_views_come_from_one_decode(tmp_path):
    _write_images(tmp_path, 2)
    source = image_source(str(tmp_path))
    loads = []
    load = source.load
    source.load = lambda i, draft_side=0: loads.append(i) or load(i, draft_side)
    dataset = TwoViewDataset(source, GeometricTwoViews(32, 0.2))
    for seed in range(3):
        dataset[(1, seed)]
    assert loads == [1, 1, 1]
