"""The neck: MoCo-v2's global MLP head and DenseCL's dense projection head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class GlobalHead(nn.Module):
    """MoCo-v2 projection: global average pool -> Linear -> ReLU -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, c5: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` -> ``N x D``."""
        return self.mlp(c5.mean(dim=(2, 3)))


class DenseHead(nn.Module):
    """DenseCL's dense projection (supplementary A).

    [adaptive average pool to G x G] -> Conv1x1 -> ReLU -> Conv1x1.

    Args:
        num_grid: side ``G`` of the output grid, or ``None`` to keep the C5 grid.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_grid: int | None = None) -> None:
        super().__init__()
        self.num_grid = num_grid
        self.mlp = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, 1)
        )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The grid the head works on; the matching pools backbone features the same way."""
        return x if self.num_grid is None else nn.functional.adaptive_avg_pool2d(x, self.num_grid)

    def forward(self, c5: torch.Tensor) -> torch.Tensor:
        """``N x C x H x W`` -> ``N x D x G x G`` (``G = H`` without pooling)."""
        return self.mlp(self.pool(c5))


class EncoderOutput(NamedTuple):
    """What one view gives; all unnormalised, ``S`` = number of grid locations."""

    global_: torch.Tensor  # N x D      global head output (q or k)
    dense: torch.Tensor | None  # N x D x S  dense head output (r or t); None without a dense head
    features: torch.Tensor | None  # N x C x S  backbone C5 on the same grid, for matching; None likewise


class Encoder(nn.Module):
    """Backbone and neck: the query encoder, and (as a copy) the momentum encoder.

    ``dense=False`` builds no dense head (MoCo-v2 at its own cost): the output's
    ``dense`` and ``features`` are None.
    """

    def __init__(
        self, backbone: nn.Module, hidden_dim: int, out_dim: int, num_grid: int | None, dense: bool = True
    ) -> None:
        super().__init__()
        c = backbone.out_channels
        self.backbone = backbone
        self.global_head = GlobalHead(c, hidden_dim, out_dim)
        self.dense_head = DenseHead(c, hidden_dim, out_dim, num_grid) if dense else None

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        c5 = self.backbone(x)  # N x C x H x W
        if self.dense_head is None:
            return EncoderOutput(self.global_head(c5), None, None)
        return EncoderOutput(
            global_=self.global_head(c5),
            dense=self.dense_head(c5).flatten(2),
            features=self.dense_head.pool(c5).flatten(2),
        )
