"""The backbone of a timm model in a weights file, under timm's own names.

The eight ResNets are told apart by their tensors (:mod:`densecl.weights.fitting`);
timm's thousand models cannot be, so a timm model is named: by ``--arch`` or
``--init``'s model, by a densecl checkpoint's config, or by the header of
densecl's safetensors export. Two layouts, told apart by their keys:

==========  ===================================================================
densecl     this project's checkpoint: the query backbone's timm model under
            ``encoder.backbone.model.``; heads, momentum encoder and queues
            are dropped, as for a ResNet
timm        timm's names: ``timm.create_model(name).state_dict()``, a timm
            training checkpoint, a hub ``model.safetensors``, densecl's timm
            and safetensors exports; the head that the backbone prunes
            (:attr:`~densecl.models.timm_backbone.TimmBackbone.head_keys`) is
            dropped
==========  ===================================================================

Then the tensors must be exactly the backbone's keys and shapes (the first
convolution may take any number of channels, adapted by ``--init``); anything
else is one line naming the model and what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from densecl.config import TIMM_PREFIX
from densecl.errors import InputError
from densecl.models import timm_backbone
from densecl.weights.layouts import DDP_PREFIX, DENSECL, Layout, convert, fill_num_batches_tracked, with_prefix
from densecl.weights.messages import shape_difference

#: the query backbone's timm model in a densecl checkpoint
DENSECL_TIMM = replace(DENSECL, backbone=DENSECL.backbone + timm_backbone.PREFIX)


def read(state: Mapping[str, torch.Tensor], arch: str, where: str) -> tuple[dict[str, torch.Tensor], tuple, str, str]:
    """``arch``'s backbone tensors from a state dict in either layout.

    Returns:
        (tensors under timm's names, the dropped source keys, the layout's name,
        the first convolution's key)

    Raises:
        InputError: an unknown model, keys that fit nowhere, or tensors that are not ``arch``'s.
    """
    reference = timm_backbone.meta_backbone(arch.removeprefix(TIMM_PREFIX))
    ddp = bool(state) and all(k.startswith(DDP_PREFIX) for k in state)  # DistributedDataParallel's wrapper
    if any(k.removeprefix(DDP_PREFIX if ddp else "").startswith(DENSECL.backbone) for k in state):
        layout = DENSECL_TIMM
    else:
        layout = Layout("timm", backbone="", dropped_keys=tuple(sorted(reference.head_keys)))
    if ddp:
        layout = with_prefix(layout, DDP_PREFIX)
    target, dropped = convert(state, layout, where)
    fill_num_batches_tracked(target)
    _fit(target, arch, reference, where)
    return target, dropped, layout.name, reference.stem


def _fit(target: Mapping[str, torch.Tensor], arch: str, reference, where: str) -> None:
    want = {k: tuple(v.shape) for k, v in reference.library_state_dict().items()}
    have = {k: tuple(v.shape) for k, v in target.items()}
    stem = have.get(reference.stem)
    if stem is not None and len(stem) == 4:  # any number of input channels fits (--init adapts them)
        have[reference.stem] = (stem[0], want[reference.stem][1], *stem[2:])
    if have == want:
        return
    name = arch.removeprefix(TIMM_PREFIX)
    raise InputError(
        f"{where} does not fit {arch}: {shape_difference(want, have)}; pass weights of timm's {name}, or name "
        "the model they are for (--arch timm/<name>)"
    )
