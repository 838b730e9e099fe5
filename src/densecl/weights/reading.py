"""Reading checkpoint files without running code from them, and finding the state dict inside.

``torch.load(weights_only=True)`` first; checkpoints that also pickle arbitrary
objects (mmengine's message hub, timm's argparse namespace) are re-read with an
unpickler that allows only tensors, numpy arrays and plain containers and turns
every other object into an inert placeholder. ``.pkl`` files get that
unpickler directly; ``.safetensors`` files go through the safetensors library.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import pickle
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from densecl import checkpoint as training_checkpoint
from densecl.config import is_timm_arch
from densecl.errors import InputError
from densecl.weights.messages import few, first_line


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Loads a checkpoint file without executing code from it.

    Raises:
        InputError: missing, unreadable, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint '{path}' does not exist or is not a file; check the path")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    readers = [_read_torch, _read_pickle]
    if path.suffix == ".pkl" and not zipfile.is_zipfile(path):
        readers.reverse()
    errors = []
    for reader in readers:
        try:
            return reader(path)
        except Exception as e:  # any failure means "try the next reader"
            errors.append(first_line(e))
    raise InputError(
        f"cannot read checkpoint '{path}': it is truncated or not a PyTorch, pickle or safetensors file "
        f"({errors[0]}); re-download or re-export it"
    )


class DescribedTensors(dict):
    """A flat state dict whose file also describes its input (a safetensors header's ``input`` entry) and, for a
    timm model, names it (the header's ``arch``: timm models cannot be told apart by their tensors)."""

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], input: Mapping[str, Any] | None, arch: str | None = None
    ) -> None:
        super().__init__(tensors)
        self.input = input
        self.arch = arch


def _read_safetensors(path: Path) -> DescribedTensors:
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise InputError(f"reading '{path}' needs the safetensors package; pip install safetensors") from e
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # the library raises its own error types
        raise InputError(
            f"cannot read safetensors file '{path}': it is truncated or not a safetensors file "
            f"({first_line(e)}); re-download or re-export it"
        ) from e
    try:  # written by densecl's safetensors export; other files have none
        described = json.loads(metadata["input"]) if "input" in metadata else None
    except ValueError:
        raise InputError(f"'{path}' describes its input with damaged JSON; re-export it") from None
    arch = metadata.get("arch")  # densecl's export names its model; a ResNet is recognised by its tensors instead
    return DescribedTensors(
        tensors, described if isinstance(described, Mapping) else None, arch if is_timm_arch(arch) else None
    )


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Pickled objects beyond tensors (mmengine's message hub, timm's args):
        # re-read with placeholders for them. Corrupt files fail here as well.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PLACEHOLDER_PICKLE)


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _PlaceholderUnpickler(f, encoding="latin1").load()


class _Placeholder:
    """Stands in for any pickled object outside the allow-list; runs none of its code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:  # dict-like objects are rebuilt item by item
        pass

    def append(self, value: Any) -> None:  # ... and list-like ones element by element
        pass

    def extend(self, values: Any) -> None:
        pass


@functools.cache
def _allowed_globals() -> dict[str, Any]:
    """What a checkpoint may name: torch's own weights-only allow-list plus numpy arrays."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except ImportError:  # private API moved: keep the essentials
        allowed = {"collections.OrderedDict": collections.OrderedDict}
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # pickle protocol 5
    scalar = np.float32(0).__reduce__()[0]
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spellings
        allowed[f"{core}.multiarray._reconstruct"] = reconstruct
        allowed[f"{core}.multiarray.scalar"] = scalar
        allowed[f"{core}.numeric._frombuffer"] = frombuffer
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    return allowed


class _PlaceholderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _allowed_globals().get(f"{module}.{name}", _Placeholder)


_PLACEHOLDER_PICKLE = types.SimpleNamespace(
    __name__="densecl_placeholder_pickle",
    Unpickler=_PlaceholderUnpickler,
    load=lambda f, **kwargs: _PlaceholderUnpickler(f, **kwargs).load(),
)


# --------------------------------------------------------------------------- containers


class Unwrapped(NamedTuple):
    """The state dict found in a checkpoint."""

    state: dict[str, torch.Tensor]  # numpy arrays turned into tensors
    container: str  # "densecl", "meta" (OpenMMLab), "timm", "state_dict", "model" or "flat"
    config_arch: str | None  # the arch a densecl checkpoint's config (or a safetensors export's header) names
    input: Mapping[str, Any] | None = None  # what the input is: a densecl config, or an export's "input" entry


def unwrap(obj: Any, where: str) -> Unwrapped:
    """Finds the state dict in a loaded checkpoint.

    Raises:
        InputError: no dict, no state dict in it, or values that are not tensors.
    """
    if not isinstance(obj, Mapping):
        raise InputError(
            f"{where} holds a {type(obj).__name__}, not a checkpoint dict; pass a state dict or checkpoint file"
        )
    config_arch, described = None, None
    if training_checkpoint.is_training_checkpoint(obj):
        state, config = training_checkpoint.model_and_config(obj, where)
        config_arch = config.get("arch") if isinstance(config, Mapping) else getattr(config, "arch", None)
        described = config if isinstance(config, Mapping) else None
        kind = "densecl"
    elif isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
        kind = "meta" if "meta" in obj else "timm" if {"arch", "version"} <= obj.keys() else "state_dict"
        meta = obj.get("meta")
        if isinstance(meta, Mapping) and isinstance(meta.get("input"), Mapping):
            described = meta["input"]  # written by densecl's OpenMMLab export
    elif isinstance(obj.get("model"), Mapping):
        state, kind = obj["model"], "model"
    else:
        state, kind = obj, "flat"
        described = getattr(obj, "input", None)  # a safetensors header's description (DescribedTensors)
        config_arch = getattr(obj, "arch", None)  # ... and its timm model
    if not isinstance(state, Mapping) or not state:
        raise InputError(f"{where} has no state dict (top-level keys: {few(obj)}); pass a model checkpoint")
    tensors, odd = {}, []
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
        elif isinstance(value, np.ndarray):
            tensors[str(key)] = torch.from_numpy(np.array(value))  # a writable copy
        else:
            odd.append(str(key))
    if odd:
        raise InputError(
            f"{where} is not a state dict of tensors: {few(odd)} hold {type(state[odd[0]]).__name__}; "
            "pass a model checkpoint"
        )
    return Unwrapped(tensors, kind, config_arch, described)
