"""Full training state on disk: written atomically, read strictly.

A checkpoint is a ``torch.save``d dict that describes itself::

    format: "densecl", version: 1
    config:      the resolved PretrainConfig as a dict
    model:       DenseCL.state_dict(): both encoders, both queues and pointers
    optimizer, scaler (None unless fp16), step, epoch, iters_per_epoch
    rng:         torch CPU (and CUDA) generator states

Nothing in it needs pickle beyond tensors and plain Python values, so it
loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from densecl.errors import InputError

FORMAT = "densecl"
VERSION = 1


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` to a temporary file in the same folder, then renames it over ``path``.

    A crash or a full disk mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a training checkpoint written by :func:`save`.

    Raises:
        InputError: missing, unreadable, or not a densecl training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for bad files
        raise InputError(f"cannot read checkpoint {path} ({type(e).__name__}): is the file complete?") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not a densecl training checkpoint (for other weights use --init)")
    if state.get("version") != VERSION:
        raise InputError(f"{path} has checkpoint version {state.get('version')}; this densecl reads version {VERSION}")
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
