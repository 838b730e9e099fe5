"""A FIFO queue of past keys, one key per column (the layout of MoCo and DenseCL)."""

from __future__ import annotations

import torch
from torch import nn


class KeyQueue(nn.Module):
    """``D x K`` ring buffer of L2-normalised keys with a write pointer.

    Both buffers are saved in the state dict, so a resumed run continues with
    exactly the negatives it had.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, dim: int, length: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        keys = torch.randn(dim, length, generator=generator)
        self.register_buffer("keys", nn.functional.normalize(keys, dim=0))  # D x K
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        """Overwrites the oldest ``B`` columns with ``k`` (``B x D``), wrapping around.

        Raises:
            ValueError: if ``B`` does not divide the queue length (the pointer
                would stop matching the oldest keys).
        """
        b, length = k.shape[0], len(self)
        if length % b:
            raise ValueError(f"queue length {length} is not divisible by the global batch size {b}")
        # the pointer stays on the device: reading it (int(self.ptr)) would make the host wait for the GPU every step
        columns = (self.ptr + torch.arange(b, device=self.ptr.device)) % length  # B: ptr .. ptr + B - 1
        self.keys.index_copy_(1, columns, k.T.to(self.keys.dtype))
        self.ptr.add_(b).remainder_(length)
