"""The batched colour augmentation: each operation against torchvision's, and its parameters' distribution."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from densecl.data.colour import (
    ColourParams,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_colour,
    blur_kernel_size,
    gaussian_blur,
    sample_colour,
)


def _images(n: int = 4, size: int = 24) -> torch.Tensor:
    """Random colours plus a grey patch and a pure-colour patch (hue's special cases)."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    x[:, :, :4, :4] = 0.5  # max == min
    x[:, 0, 4:8, :4], x[:, 1:, 4:8, :4] = 1.0, 0.0  # pure red
    return x


@pytest.mark.parametrize(
    "ours, theirs, factors",
    [
        (adjust_brightness, TF.adjust_brightness, [0.6, 0.9, 1.2, 1.4]),
        (adjust_contrast, TF.adjust_contrast, [0.6, 0.9, 1.2, 1.4]),
        (adjust_saturation, TF.adjust_saturation, [0.6, 0.9, 1.2, 1.4]),
        (adjust_hue, TF.adjust_hue, [-0.1, -0.03, 0.05, 0.1]),
    ],
)
def test_each_jitter_operation_matches_torchvision_per_sample(ours, theirs, factors):
    x = _images(len(factors))
    got = ours(x.clone(), torch.tensor(factors))
    for i, f in enumerate(factors):
        torch.testing.assert_close(got[i], theirs(x[i], f), atol=1e-5, rtol=0)


def test_blur_matches_torchvision_per_sample():
    x = _images(3, 32)
    sigma = torch.tensor([0.1, 0.7, 2.0])
    got = gaussian_blur(x, sigma, 7)
    for i, s in enumerate(sigma.tolist()):
        torch.testing.assert_close(got[i], TF.gaussian_blur(x[i], [7, 7], [s, s]), atol=1e-5, rtol=0)


def test_blur_kernel_is_a_tenth_of_the_crop_and_odd():
    assert [blur_kernel_size(s) for s in (224, 96, 64, 20)] == [23, 9, 7, 3]


def test_apply_colour_follows_each_samples_order_and_switches():
    # sample 0: jitter in the order hue, saturation, contrast, brightness, then grayscale and blur;
    # sample 1: nothing; sample 2: jitter in the natural order only
    x = _images(3)
    params = ColourParams(
        jitter=torch.tensor([True, False, True]),
        order=torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3], [0, 1, 2, 3]]),
        factors=torch.tensor([[1.3, 0.7, 1.2, 0.08], [1.4, 1.4, 1.4, 0.1], [0.8, 1.1, 0.6, -0.05]]),
        grayscale=torch.tensor([True, False, False]),
        blur=torch.tensor([True, False, False]),
        sigma=torch.tensor([1.5, 2.0, 2.0]),
    )
    got = apply_colour(x.clone(), params, kernel_size=5)

    def reference(image, b, c, s, h, order):
        fns = [
            lambda y: TF.adjust_brightness(y, b),
            lambda y: TF.adjust_contrast(y, c),
            lambda y: TF.adjust_saturation(y, s),
            lambda y: TF.adjust_hue(y, h),
        ]
        for k in order:
            image = fns[k](image)
        return image

    first = TF.gaussian_blur(
        TF.rgb_to_grayscale(reference(x[0], 1.3, 0.7, 1.2, 0.08, [3, 2, 1, 0]), 3), [5, 5], [1.5, 1.5]
    )
    torch.testing.assert_close(got[0], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], x[1], atol=0, rtol=0)
    torch.testing.assert_close(got[2], reference(x[2], 0.8, 1.1, 0.6, -0.05, [0, 1, 2, 3]), atol=1e-5, rtol=0)


def test_parameters_have_moco_v2s_distribution():
    n = 24_000
    p = sample_colour(n, torch.Generator().manual_seed(0))
    tol = 4 * math.sqrt(0.25 / n)  # four standard errors of a proportion
    assert p.jitter.float().mean().item() == pytest.approx(0.8, abs=tol)
    assert p.grayscale.float().mean().item() == pytest.approx(0.2, abs=tol)
    assert p.blur.float().mean().item() == pytest.approx(0.5, abs=tol)

    def uniform_std(lo, hi):
        return (hi - lo) / math.sqrt(12)

    for column, (lo, hi) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        f = p.factors[:, column]
        assert lo <= f.min() and f.max() <= hi and f.max() - f.min() > 0.99 * (hi - lo)
        assert f.mean().item() == pytest.approx((lo + hi) / 2, abs=0.01 * (hi - lo))
        assert f.std().item() == pytest.approx(uniform_std(lo, hi), rel=0.02)
    assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0 and p.sigma.mean().item() == pytest.approx(1.05, abs=0.02)
    # all 24 orders of the four operations, equally often
    counts = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in p.order.tolist():
        counts[tuple(row)] += 1
    assert all(abs(c - n / 24) < 5 * math.sqrt(n / 24) for c in counts.values())
    assert torch.equal(
        sample_colour(5, torch.Generator().manual_seed(1)).factors,
        sample_colour(5, torch.Generator().manual_seed(1)).factors,
    )
