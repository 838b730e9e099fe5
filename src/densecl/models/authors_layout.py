"""The authors' DenseCL checkpoint layout and this project's model names: one table, one owner.

The authors' model is ``encoder_q = Sequential(backbone, neck)`` with a
momentum copy ``encoder_k`` and two queues with pointers. It registers the
query backbone a second time as ``backbone`` (so every ``encoder_q.0.*`` tensor
is stored twice), mmselfsup 0.x registers the neck a second time as ``neck``,
and the contrastive ``head`` is the loss, with no parameters of its own.

:data:`PARTS` maps each part of that layout to the same tensors in
``DenseCL.state_dict()``. ``DenseCL.load_authors_state_dict`` /
``authors_state_dict`` and the backbone importer (:mod:`densecl.weights`)
both read it, and both apply one rule to the extra registrations:

- ``backbone.*`` must equal ``encoder_q.0.*`` and ``neck.*`` must equal
  ``encoder_q.1.*``, tensor for tensor (:data:`COPIES`); checked, then skipped.
- ``head.*`` is skipped (:data:`IGNORED`): the authors' head holds no
  parameters, so nothing stored there is state the model needs.

Everything else must be a part of the table; the loaders refuse other keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from densecl.errors import InputError

QUERY_BACKBONE = "encoder_q.0."  # the network people fine-tune
QUERY_NECK = "encoder_q.1."  # global head ``mlp`` and dense head ``mlp2``
MOMENTUM = "encoder_k."  # the momentum (key) encoder: backbone ``0.`` and neck ``1.``


class Part(NamedTuple):
    """One part of the authors' checkpoint and where this project's DenseCL keeps it."""

    authors: str  # a prefix (ends in ".") or, for a buffer, the exact key
    ours: str  # the same, in DenseCL.state_dict()
    role: str  # "backbone" (query), "head" (query heads), "momentum" or "queue"

    def rename(self, key: str, source: str, target: str) -> str | None:
        """``key`` spelled by ``source`` ("authors"/"ours") -> ``target``'s spelling; None if not in this part."""
        src, dst = getattr(self, source), getattr(self, target)
        if not src.endswith("."):
            return dst if key == src else None
        return dst + key[len(src) :] if key.startswith(src) else None


PARTS: tuple[Part, ...] = (
    Part(QUERY_BACKBONE, "encoder.backbone.", "backbone"),
    Part(QUERY_NECK + "mlp.", "encoder.global_head.mlp.", "head"),
    Part(QUERY_NECK + "mlp2.", "encoder.dense_head.mlp.", "head"),
    Part(MOMENTUM + "0.", "momentum_encoder.backbone.", "momentum"),
    Part(MOMENTUM + "1.mlp.", "momentum_encoder.global_head.mlp.", "momentum"),
    Part(MOMENTUM + "1.mlp2.", "momentum_encoder.dense_head.mlp.", "momentum"),
    Part("queue", "global_queue.keys", "queue"),  # D x K, one key per column
    Part("queue_ptr", "global_queue.ptr", "queue"),  # int64, shape (1,)
    Part("queue2", "dense_queue.keys", "queue"),
    Part("queue2_ptr", "dense_queue.ptr", "queue"),
)
#: (prefix, prefix it must equal tensor for tensor): second registrations of a query module
COPIES: tuple[tuple[str, str], ...] = (("backbone.", QUERY_BACKBONE), ("neck.", QUERY_NECK))
#: prefixes holding nothing the model needs
IGNORED: tuple[str, ...] = ("head.",)
#: the authors' buffer names (MoCo's ``queue``/``queue_ptr`` among them)
BUFFERS: tuple[str, ...] = tuple(p.authors for p in PARTS if p.role == "queue")


#: this project's spellings of the dense head and dense queue (what a MoCo-v2 model does not have)
DENSE_PARTS: tuple[str, ...] = ("encoder.dense_head.", "momentum_encoder.dense_head.", "dense_queue.")


def is_dense(keys: set[str]) -> bool:
    """Whether ``keys`` hold the dense head or dense queue: DenseCL, not the MoCo that shares the rest."""
    dense = [p.authors for p in PARTS if p.ours.startswith(("encoder.dense_head.", "dense_queue."))]
    return any(k in dense or k.startswith(tuple(d for d in dense if d.endswith("."))) for k in keys)


def ours(role: str) -> tuple[str, ...]:
    """This project's spellings of the parts with ``role``."""
    return tuple(p.ours for p in PARTS if p.role == role)


def copy_source(key: str, copies: tuple[tuple[str, str], ...] = COPIES) -> str | None:
    """The key that ``key`` must be a copy of, if it is a second registration; else None."""
    return next((original + key[len(copy) :] for copy, original in copies if key.startswith(copy)), None)


def check_copy(state_dict: Mapping[str, torch.Tensor], key: str, original: str, where: str) -> None:
    """Raises unless ``state_dict[key]`` equals ``state_dict[original]`` in shape, dtype and values."""
    a, b = state_dict[key], state_dict.get(original)
    if b is None or a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
        raise InputError(
            f"{where}: {key} should be a copy of {original} but is not; "
            "the file's two copies of the query encoder disagree, re-export it from the training run"
        )


def from_authors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' full state dict -> this project's ``DenseCL.state_dict()`` keys.

    Accepts the bare state dict or a checkpoint with a ``state_dict`` entry.

    Raises:
        InputError: a key that is not part of the layout, or a second
            registration (``backbone.*``, ``neck.*``) that differs from its original.
    """
    if isinstance(state_dict.get("state_dict"), Mapping):
        state_dict = state_dict["state_dict"]
    where = "authors' checkpoint"
    out, unknown = {}, []
    for key, value in state_dict.items():
        if (copy_of := copy_source(key)) is not None:
            check_copy(state_dict, key, copy_of, where)
            continue
        if key.startswith(IGNORED):
            continue
        new = next((n for p in PARTS if (n := p.rename(key, "authors", "ours")) is not None), None)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise InputError(
            f"{where}: {len(unknown)} keys outside the DenseCL layout, e.g. {', '.join(unknown[:5])}; "
            "pass a DenseCL checkpoint in the authors' layout"
        )
    return out


def to_authors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's ``DenseCL.state_dict()`` -> the authors' layout, with the ``backbone.*`` copy."""
    out = {}
    for key, value in state_dict.items():
        new = next((n for p in PARTS if (n := p.rename(key, "ours", "authors")) is not None), None)
        if new is None:
            raise ValueError(f"{key} has no place in the authors' layout")
        out[new] = value
    backbone_copy, original = COPIES[0]
    for key in [k for k in out if k.startswith(original)]:
        out[backbone_copy + key[len(original) :]] = out[key]
    return out
