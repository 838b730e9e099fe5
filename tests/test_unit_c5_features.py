import pytest
import torch
from torch import nn

from densecl.matches import unit_c5_features


def test_unit_c5_features_are_unit_length_at_every_location():
    backbone = nn.Conv2d(3, 4, kernel_size=32, stride=32)  # stands in for C5: one cell per 32 x 32 pixels
    f = unit_c5_features(backbone, torch.randn(2, 3, 64, 96))
    assert f.shape == (2, 4, 2, 3)
    assert torch.allclose(f.norm(dim=1), torch.ones(2, 2, 3))
    assert not f.requires_grad  # no graph is kept for a picture


def test_unit_c5_features_keep_the_direction():
    backbone = nn.Identity()
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # 1 x 2 x 1 x 1: the vector (3, 4) at one location
    assert unit_c5_features(backbone, x).flatten().tolist() == pytest.approx([0.6, 0.8])
