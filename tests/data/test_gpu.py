"""The gpu data backend on CPU tensors: worker items, batched rendering against torchvision, fall-backs, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from densecl.data import gpu
from densecl.data.colour import ColourParams
from densecl.data.sources import TwoViewDataset
from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, GeometricTwoViews
from densecl.inputs.sources import image_source

CPU = torch.device("cpu")


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colours with some detail: survives JPEG, shows every colour operation."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def _folder(tmp_path):
    _photo(90, 70, 0).save(tmp_path / "a.jpg", quality=95)
    _photo(80, 100, 1).save(tmp_path / "b.png")
    _photo(70, 70, 2).convert("L").save(tmp_path / "c.jpg")
    _photo(60, 60, 3).convert("CMYK").save(tmp_path / "d.jpg")
    good = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "e.jpg").write_bytes(good[: len(good) // 2])  # truncated
    return image_source(str(tmp_path))  # a.jpg b.png c.jpg d.jpg e.jpg


def test_plain_jpegs_are_told_apart_from_everything_else(tmp_path):
    source = _folder(tmp_path)
    sizes = [gpu.plain_jpeg_size(source.read(i)) for i in range(len(source))]
    assert sizes == [(90, 70), None, (70, 70), None, None]  # PNG, CMYK and truncated go to the CPU decoder


def test_worker_items_draw_the_cpu_paths_geometry_and_skip_unreadable_files(tmp_path):
    source = _folder(tmp_path)
    views = GeometricTwoViews(32, 0.2, grid=(2, 2))
    encoded, cpu = gpu.EncodedTwoViewDataset(source, views), TwoViewDataset(source, views)
    for index in range(4):  # the readable files (past an unreadable one the two draw differently, alike)
        item = encoded[(index, 7)]
        assert torch.equal(item.match, cpu[(index, 7)][2])  # same boxes from the same seed, hence the same match
        assert torch.equal(item.item, torch.tensor([index, 7]))
    a, b, e = encoded[(0, 7)], encoded[(1, 7)], encoded[(4, 7)]
    assert a.encoded and bytes(a.data.numpy()) == (tmp_path / "a.jpg").read_bytes()
    assert not b.encoded and b.data.shape == (3, 100, 80) and b.data.dtype == torch.uint8
    assert e.skipped == 1 and a.skipped == 0 and e.encoded  # truncated e.jpg -> the next one, a.jpg
    assert all(torch.equal(x, y) for x, y in zip(a.colour, encoded[(0, 7)].colour))  # reproducible from the seed
    assert not torch.equal(a.colour.factors, encoded[(0, 8)].colour.factors)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        g_q, g_k = views.geometry(90, 70)
    assert a.boxes.tolist() == [[g.top, g.left, g.height, g.width] for g in (g_q, g_k)]
    assert a.flips.tolist() == [g_q.flip, g_k.flip]


def _reference_view(
    image: torch.Tensor, box, flip: bool, colour: ColourParams, v: int, crop: int, kernel: int
) -> torch.Tensor:
    """One view made by torchvision's functional ops, one image at a time."""
    top, left, h, w = box
    x = TF.resized_crop(image.float() / 255, top, left, h, w, [crop, crop], antialias=True)
    if colour.jitter[v]:
        b, c, s, hue = colour.factors[v].tolist()
        ops = [
            lambda y: TF.adjust_brightness(y, b),
            lambda y: TF.adjust_contrast(y, c),
            lambda y: TF.adjust_saturation(y, s),
            lambda y: TF.adjust_hue(y, hue),
        ]
        for k in colour.order[v].tolist():
            x = ops[k](x)
    if colour.grayscale[v]:
        x = TF.rgb_to_grayscale(x, 3)
    if colour.blur[v]:
        x = TF.gaussian_blur(x, [kernel, kernel], [float(colour.sigma[v])] * 2)
    if flip:
        x = TF.horizontal_flip(x)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_a_rendered_batch_equals_torchvision_one_view_at_a_time(tmp_path):
    source = _folder(tmp_path)
    crop = 32
    encoded = gpu.EncodedTwoViewDataset(source, GeometricTwoViews(crop, 0.2))
    pairs = [encoded[(i, seed)] for i, seed in [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (0, 6)]]
    batch = gpu.collate(pairs)
    jitter = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True], [False, False]])
    grey = torch.tensor([[False, True], [False, False], [True, False], [False, False], [True, False], [False, False]])
    blur = torch.tensor([[True, False], [False, True], [True, True], [False, False], [False, True], [False, False]])
    batch = batch._replace(colour=batch.colour._replace(jitter=jitter, grayscale=grey, blur=blur))  # every branch
    im_q, im_k, match, skipped = gpu.DeviceBatches([], CPU, crop, TwoViewDataset(source, encoded.two_views)).render(
        batch
    )
    assert im_q.shape == im_k.shape == (6, 3, crop, crop) and im_q.is_contiguous() and match.shape == (6, 0)
    assert skipped.tolist() == [0] * 6
    for n, pair in enumerate(pairs):
        image = torch.from_numpy(np.array(source.load(int(pair.item[0])))).permute(2, 0, 1)
        colour = ColourParams(*(field[n] for field in batch.colour))
        for v, ours in enumerate((im_q[n], im_k[n])):
            ref = _reference_view(image, pair.boxes[v].tolist(), bool(pair.flips[v]), colour, v, crop, 3)
            torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)


def test_device_batches_count_cpu_decoded_images_and_remake_what_the_device_cannot_decode(
    tmp_path, monkeypatch, capsys
):
    source = _folder(tmp_path)
    views = GeometricTwoViews(32, 0.2, grid=(2, 2))
    loader = torch.utils.data.DataLoader(
        gpu.EncodedTwoViewDataset(source, views),
        batch_size=5,
        sampler=[(i, 10 + i) for i in range(5)],
        collate_fn=gpu.collate,
    )
    fallback = TwoViewDataset(source, views)
    batches = gpu.DeviceBatches(loader, CPU, 32, fallback)
    decode = gpu.decode
    monkeypatch.setattr(
        gpu, "decode", lambda batch, device: [None if i == 2 else x for i, x in enumerate(decode(batch, device))]
    )
    ((im_q, im_k, match, skipped),) = list(batches)
    assert batches.cpu_decoded == 2 and batches.remade == 1  # b.png and d.jpg (CMYK); c.jpg remade
    err = capsys.readouterr().err
    assert err.count("is not a plain JPEG") == 1 and "b.png" in err
    q, k, m, s = fallback[(2, 12)]  # the CPU path's views of the item the device could not decode
    assert torch.equal(im_q[2], q) and torch.equal(im_k[2], k) and torch.equal(match[2], m)
    assert skipped.tolist() == [0, 0, 0, 0, 1] and match.shape == (5, 4)
    assert torch.isfinite(im_q).all() and torch.isfinite(im_k).all()


def test_gpu_backend_without_a_gpu_is_one_line_before_anything_is_built(tmp_path, capsys):
    from tests.test_train import pretrain

    assert pretrain(tmp_path, "--device", "cpu", "--data-backend", "gpu") == 2
    assert pretrain(tmp_path, "--data-backend", "tpu") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--data-backend gpu decodes and augments on a CUDA GPU" in err[0] and "cpu" in err[0]
    assert "data_backend must be one of cpu, gpu" in err[1]
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("matching", ["features", "geometry"])
@pytest.mark.slow
def test_pretraining_runs_on_the_gpu_backends_path(tmp_path, monkeypatch, capsys, matching):
    # the whole loop through DeviceBatches, with the device check lifted so it runs on the CPU
    from densecl import checkpoint, train
    from tests.test_train import metrics, pretrain

    monkeypatch.setattr(train, "check_data_backend", lambda backend, device: None)
    args = ("--epochs", "1", "--data-backend", "gpu", "--dense-matching", matching, "--max-iters", "2")
    assert pretrain(tmp_path, *args) == 0
    assert checkpoint.load(tmp_path / "checkpoint.pt").step == 2
    assert all(np.isfinite(row["loss"]) for row in metrics(tmp_path) if "loss" in row)
    out = capsys.readouterr()
    assert (
        "8 images were not plain JPEGs" in out.out and out.err.count("is not a plain JPEG") == 1
    )  # scenes: all on the CPU


def test_a_jpeg_decodes_the_same_in_the_worker_and_on_the_device(tmp_path):
    # decode_jpeg and PIL agree on a JPEG (both libjpeg on the CPU): the two backends start from the same pixels
    _photo(50, 40).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    batch = gpu.collate([gpu.EncodedTwoViewDataset(image_source(str(tmp_path)), GeometricTwoViews(32, 0.2))[(0, 0)]])
    (decoded,) = gpu.decode(batch, CPU)
    pil = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert (decoded.int() - pil.int()).abs().max() <= 1


def test_the_device_normalises_with_the_runs_mean_and_std_as_the_cpu_path_does(tmp_path):
    from densecl.inputs import InputSpec

    source = _folder(tmp_path)
    measured = InputSpec(3, True, None, (0.25, 0.5, 0.75), (0.5, 0.25, 0.125))  # given or measured, not ImageNet's
    views = GeometricTwoViews(32, 0.2, inputs=measured)
    encoded = gpu.EncodedTwoViewDataset(source, views)
    batch = gpu.collate([encoded[(0, 1)]])
    batch = batch._replace(colour=batch.colour._replace(jitter=torch.zeros(1, 2, dtype=torch.bool),
                                                        grayscale=torch.zeros(1, 2, dtype=torch.bool),
                                                        blur=torch.zeros(1, 2, dtype=torch.bool)))  # fmt: skip
    im_q, _, _, _ = gpu.DeviceBatches([], CPU, 32, TwoViewDataset(source, views)).render(batch)
    image = torch.from_numpy(np.array(source.load(0))).permute(2, 0, 1)
    top, left, h, w = batch.boxes[0, 0].tolist()
    x = TF.resized_crop(image.float() / 255, top, left, h, w, [32, 32], antialias=True)
    x = TF.horizontal_flip(x) if bool(batch.flips[0, 0]) else x
    expected = TF.normalize(x, [0.25, 0.5, 0.75], [0.5, 0.25, 0.125])
    torch.testing.assert_close(im_q[0], expected, atol=2e-3, rtol=0)
