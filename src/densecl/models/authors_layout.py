"""Key mapping between the authors' DenseCL checkpoints and this project's model.

The authors' model is ``encoder_q = Sequential(backbone, neck)`` with a
momentum copy ``encoder_k``, two queues with pointers, and the query backbone
registered a second time under ``backbone.`` (spec section 5). Named prefixes
with asserts, no key slicing.
"""

from __future__ import annotations

import torch

from densecl.errors import InputError

# authors' prefix -> this project's prefix
PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder_q.0.", "encoder.backbone."),
    ("encoder_q.1.mlp.", "encoder.global_head.mlp."),
    ("encoder_q.1.mlp2.", "encoder.dense_head.mlp."),
    ("encoder_k.0.", "momentum_encoder.backbone."),
    ("encoder_k.1.mlp.", "momentum_encoder.global_head.mlp."),
    ("encoder_k.1.mlp2.", "momentum_encoder.dense_head.mlp."),
)
BUFFERS: dict[str, str] = {
    "queue": "global_queue.keys",
    "queue_ptr": "global_queue.ptr",
    "queue2": "dense_queue.keys",
    "queue2_ptr": "dense_queue.ptr",
}
DUPLICATE_BACKBONE = "backbone."  # the authors' second copy of encoder_q.0


def _rename(key: str, pairs: tuple[tuple[str, str], ...], buffers: dict[str, str]) -> str | None:
    if key in buffers:
        return buffers[key]
    # longest prefix first: "encoder_q.1.mlp2." must win over "encoder_q.1.mlp."
    for src, dst in sorted(pairs, key=lambda p: -len(p[0])):
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def from_authors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' full state dict -> this project's ``DenseCL.state_dict()`` keys.

    Raises:
        InputError: a key that is not part of the layout, or a ``backbone.*``
            tensor that is not a copy of ``encoder_q.0.*``.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith(DUPLICATE_BACKBONE):
            twin = "encoder_q.0." + key[len(DUPLICATE_BACKBONE) :]
            if twin not in state_dict or not torch.equal(state_dict[twin], value):
                raise InputError(f"authors' checkpoint: {key} is not a copy of {twin}; the file is not in the DenseCL layout")
            continue
        new = _rename(key, PREFIXES, BUFFERS)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise InputError(
            f"authors' checkpoint: {len(unknown)} keys outside the DenseCL layout, e.g. {', '.join(unknown[:5])}"
        )
    return out


def to_authors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's ``DenseCL.state_dict()`` -> the authors' layout (with the ``backbone.*`` twin)."""
    inverse = tuple((dst, src) for src, dst in PREFIXES)
    inverse_buffers = {v: k for k, v in BUFFERS.items()}
    out = {}
    for key, value in state_dict.items():
        new = _rename(key, inverse, inverse_buffers)
        if new is None:
            raise ValueError(f"{key} has no place in the authors' layout")
        out[new] = value
        if new.startswith("encoder_q.0."):
            out[DUPLICATE_BACKBONE + new[len("encoder_q.0.") :]] = value
    return out
