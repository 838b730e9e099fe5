"""View geometry: the point map agrees with the rendered pixels, and crops follow RandomResizedCrop."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from densecl.data.geometry import ViewGeometry, cell_centres, cell_of, sample_crop, sample_view


def _dot(width: int, height: int, x: int, y: int) -> torch.Tensor:
    image = torch.zeros(1, height, width)
    image[0, y, x] = 1.0
    return image


def _brightest(view: torch.Tensor) -> tuple[float, float]:
    """The intensity-weighted centre of a rendered dot, as an (x, y) view point."""
    weights = view[0].clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(view.shape[1]), torch.arange(view.shape[2]), indexing="ij")
    total = weights.sum()
    return float((weights * (cols + 0.5)).sum() / total), float((weights * (rows + 0.5)).sum() / total)


def test_crop_and_flip_by_hand():
    g = ViewGeometry(top=10, left=20, height=40, width=80, size=20, flip=False)
    # x: (60 - 20) * 20/80 = 10; y: (30 - 10) * 20/40 = 10
    assert g.to_view(torch.tensor([[60.0, 30.0]])).tolist() == [[10.0, 10.0]]
    mirrored = ViewGeometry(10, 20, 40, 80, 20, flip=True)
    assert mirrored.to_view(torch.tensor([[30.0, 10.0]])).tolist() == [[17.5, 0.0]]  # x: 20 - 2.5


def test_rotation_by_hand():
    # 90 degrees counter-clockwise on screen: a point right of the centre goes above it
    g = ViewGeometry(0, 0, 20, 20, 20, angle=90.0)
    x, y = g.to_view(torch.tensor([[15.5, 5.5]]))[0].tolist()
    assert (x, y) == pytest.approx((5.5, 4.5))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("angle", [0.0, 90.0, -90.0])
def test_point_map_follows_the_rendered_pixels(flip, angle):
    # a single bright pixel of the image lands where to_view says, for crop, flip and rotation
    g = ViewGeometry(top=8, left=4, height=32, width=32, size=32, flip=flip, angle=angle)
    image = _dot(48, 48, x=23, y=17)
    expected = g.to_view(torch.tensor([[23.5, 17.5]]))[0]
    seen = _brightest(g.apply(image))
    assert seen == pytest.approx(expected.tolist(), abs=0.05)


def test_point_map_with_resize_and_small_rotation():
    # a 3x3 block survives antialiased resizing and a 10 degree rotation; its centre moves as predicted
    image = torch.zeros(1, 64, 64)
    image[0, 29:32, 39:42] = 1.0  # centre (40.5, 30.5)
    g = ViewGeometry(top=12, left=16, height=40, width=40, size=30, flip=True, angle=10.0)
    expected = g.to_view(torch.tensor([[40.5, 30.5]]))[0]
    assert _brightest(g.apply(image)) == pytest.approx(expected.tolist(), abs=0.3)


def test_to_image_inverts_to_view():
    g = ViewGeometry(top=3, left=5, height=50, width=70, size=40, flip=True, angle=-12.5)
    points = torch.rand(100, 2, dtype=torch.float64) * 80
    assert torch.allclose(g.to_image(g.to_view(points)), points, atol=1e-9)


def test_shows_excludes_the_corners_a_rotation_fills():
    g = ViewGeometry(0, 0, 40, 40, 40, angle=45.0)
    centre, corner = torch.tensor([[20.0, 20.0], [1.0, 1.0]]).unbind(0)
    assert g.shows(torch.stack([centre, corner])).tolist() == [True, False]
    assert g.shows(torch.tensor([[-1.0, 5.0]])).tolist() == [False]


def test_cells():
    centres = cell_centres((2, 4), size=32)
    assert centres[:4].tolist() == [[4.0, 8.0], [12.0, 8.0], [20.0, 8.0], [28.0, 8.0]]
    assert centres[4].tolist() == [4.0, 24.0]
    assert cell_of(centres, (2, 4), 32).tolist() == list(range(8))
    assert cell_of(torch.tensor([[31.9, 15.9], [0.0, 16.0]]), (2, 4), 32).tolist() == [3, 4]


def test_crop_distribution_matches_torchvision():
    # area fraction and aspect ratio of 4000 boxes against torchvision's own sampler
    n, width, height, scale = 4000, 300, 200, (0.2, 1.0)
    g = torch.Generator().manual_seed(0)
    ours = [sample_crop(width, height, scale, g) for _ in range(n)]
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = [RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]

    def stats(boxes):
        area = torch.tensor([h * w / (width * height) for _, _, h, w in boxes])
        log_ratio = torch.tensor([math.log(w / h) for _, _, h, w in boxes])
        centre_x = torch.tensor([(left + w / 2) / width for _, left, _, w in boxes])
        return area.mean(), area.std(), log_ratio.mean(), log_ratio.std(), centre_x.mean()

    for a, b in zip(stats(ours), stats(theirs)):
        assert float(a) == pytest.approx(float(b), abs=0.02)
    for top, left, h, w in ours:
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width


def test_crop_falls_back_to_a_centred_box():
    # a 1000 x 10 strip: no box of ratio <= 4/3 reaches the area asked, so the centre box is taken
    g = torch.Generator().manual_seed(0)
    assert sample_crop(1000, 10, (0.9, 1.0), g) == (0, 493, 10, 13)  # left (1000 - 13) // 2


def test_sample_view_is_seeded_and_flips_half_the_time():
    a = [sample_view(100, 80, 32, torch.Generator().manual_seed(s), max_angle=15) for s in range(200)]
    b = [sample_view(100, 80, 32, torch.Generator().manual_seed(s), max_angle=15) for s in range(200)]
    assert a == b
    assert 70 < sum(v.flip for v in a) < 130
    assert all(-15 <= v.angle <= 15 for v in a) and len({v.angle for v in a}) > 100


# --------------------------------------------------------------------------- pre-training views with known geometry


def _coordinate_image(width: int, height: int):
    """An RGB image whose red and green channels encode each pixel's x and y (0..255 over the image)."""
    from PIL import Image

    x = torch.linspace(0, 255, width).round().to(torch.uint8).expand(height, width)
    y = torch.linspace(0, 255, height).round().to(torch.uint8)[:, None].expand(height, width)
    return Image.fromarray(torch.stack([x, y, torch.zeros_like(x)], dim=2).numpy())


def test_geometric_views_match_cells_that_show_the_same_image_point():
    from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, GeometricTwoViews

    views = GeometricTwoViews(crop_size=64, min_scale=0.3, grid=(4, 4))
    views.photometric = lambda image: image  # colour augmentation would hide the coordinates
    image = _coordinate_image(160, 120)
    mean, std = torch.tensor(IMAGENET_MEAN)[:2, None, None], torch.tensor(IMAGENET_STD)[:2, None, None]
    matched = 0
    for seed in range(20):
        torch.manual_seed(seed)
        im_q, im_k, match = views(image)
        assert match.shape == (16,) and match.dtype == torch.long and int(match.min()) >= -1 and int(match.max()) < 16
        xy_q, xy_k = ((v[:2] * std + mean) * 255 for v in (im_q, im_k))  # 2 x 64 x 64 encoded coordinates
        for i, j in enumerate(match.tolist()):
            if j < 0:
                continue
            matched += 1
            cq = xy_q[:, (i // 4) * 16 + 8, (i % 4) * 16 + 8]  # the pixel at each cell centre
            ck = xy_k[:, (j // 4) * 16 + 8, (j % 4) * 16 + 8]
            # same image point up to one cell of the key view (at most the whole image: 255 / 4 per cell)
            assert (cq - ck).abs().max() <= 255 / 4 * 1.0 + 2, (seed, i, j)
    assert matched > 100


def test_geometric_views_are_seeded_like_the_default_ones():
    from densecl.data.transforms import GeometricTwoViews

    views = GeometricTwoViews(crop_size=32, min_scale=0.2, grid=(2, 2))
    image = _coordinate_image(64, 48)
    torch.manual_seed(3)
    a = views(image)
    torch.manual_seed(3)
    b = views(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
