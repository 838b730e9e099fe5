"""Which torch device a ``--device`` value (or a config's ``device``) means.

The one place that turns ``auto``, ``cpu``, ``cuda``, ``cuda:N`` into a
device and refuses a CUDA device on a machine without one, for pre-training,
evaluation and the correspondence picture alike.
"""

from __future__ import annotations

import torch

from densecl.errors import InputError


def device_type(requested: str) -> str:
    """``"cuda"`` or ``"cpu"``: what ``requested`` will run on, before the process knows its rank."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if requested.startswith("cuda") else "cpu"


def resolve_device(requested: str, local_rank: int | None = None) -> torch.device:
    """The device for ``requested``.

    Args:
        requested: ``auto`` (CUDA when available, else the CPU), ``cpu``,
            ``cuda``, ``cuda:N`` or any other torch device string.
        local_rank: under torchrun, the process's GPU: a bare ``cuda`` (or
            ``auto`` on a GPU machine) becomes ``cuda:local_rank``. ``None``
            leaves ``cuda`` as torch's current device.

    Raises:
        InputError: a CUDA device without a CUDA GPU, or a string that names no device.
    """
    name = requested
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {requested} asked for, but this machine has no CUDA GPU; pass --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {requested} is not a device; use cpu, cuda, cuda:N or auto") from None
