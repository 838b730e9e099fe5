"""detectron2: a pickle ``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True}``.

Names follow detectron2's ResNet (``stem.conv1``, ``stem.conv1.norm``,
``res2.0.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``,
``res2.0.shortcut.norm``, ... ``res5``; see
:func:`densecl.weights.detectron2.torchvision_to_detectron2`). ``num_batches_tracked`` has
no detectron2 counterpart and is left out.

The names carry no model prefix, because the same ResNet sits at different
places in detectron2's models: ``backbone.bottom_up.res5`` in an FPN model,
``roi_heads.res5`` in a C4 model (the box head; ``backbone.res2..res4`` hold
the rest). ``matching_heuristics: True`` makes detectron2's checkpointer place
them by name: a file key fills the model key that equals it or ends with
``"." + key``, the longest such key winning, and a file key that fits two
model keys stops the load. So ``res5.0.conv1.weight`` lands in
``roi_heads.res5.0.conv1.weight`` of the C4 model, as MoCo's converter relies
on. Two things are needed for that: the flag, and an ``__author__`` other than
``"Caffe2"`` (for Caffe2 files detectron2 first renames Caffe2 blob names).
What the file does not fill keeps detectron2's initialisation: the RPN, the
box predictor, MoCo's extra norm after res5 (``roi_heads.res5.norm``, made by
``Res5ROIHeadsExtraNorm`` in MoCo's ``train_net.py``) and the BatchNorm
``num_batches_tracked`` counters; detectron2 lists them as a warning.

The weights are torchvision-style, so the config must say so: RGB input scaled
to [0, 255] with torchvision's mean and std, the stride in the 3x3 conv
(``STRIDE_IN_1X1: False``), and (the MoCo/DenseCL fine-tuning protocol)
synchronised BN and no frozen stages. :func:`usage` writes the snippet for the
exported architecture.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from densecl.errors import InputError
from densecl.export import inputs
from densecl.weights import BackboneWeights, resnet_shape
from densecl.weights.detectron2 import torchvision_to_detectron2

SUMMARY = "detectron2 names, numpy arrays, pickled (.pkl); prints the config to fine-tune it"


def convert(state_dict: dict) -> dict:
    """torchvision names -> detectron2 names; every key placed except ``num_batches_tracked``."""
    out = {}
    for key, value in state_dict.items():
        name = torchvision_to_detectron2(key)
        if name is None:
            if key.endswith(".num_batches_tracked"):
                continue
            raise InputError(f"backbone key {key} has no detectron2 name; only torchvision ResNets can be exported")
        out[name] = value
    return out


def write(weights: BackboneWeights, path: Path) -> None:
    model = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in convert(weights.state_dict).items()}
    payload = {
        "model": model,
        "__author__": f"densecl ({weights.source_format} {weights.arch})",
        "matching_heuristics": True,
    }
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)  # readable by every Python 3 detectron2 supports


def config(path: Path | str, weights: BackboneWeights) -> str:
    """The YAML lines to fine-tune these weights in detectron2."""
    shape = resnet_shape(weights.state_dict)
    resnets = [f"    DEPTH: {shape.depth}", "    STRIDE_IN_1X1: False  # torchvision puts the stride in the 3x3 conv"]
    if shape.bottleneck:
        resnets.append(f"    NUM_GROUPS: {shape.groups}")
        resnets.append(f"    WIDTH_PER_GROUP: {shape.width_per_group}")
    else:
        resnets.append("    RES2_OUT_CHANNELS: 64  # required by R18/R34")
    resnets.append('    NORM: "SyncBN"')
    spec, stats = weights.input_spec, inputs.statistics(weights)
    scale = 255.0 if spec.photo is not False else 1.0  # detectron2 feeds 0..255 photos; other images as stored
    mean, std = stats if stats is not None else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    digits = ".3f" if scale == 255.0 else ".7g"  # photos: 123.675, 116.280, ... as detectron2's own configs
    pixel_mean, pixel_std = (", ".join(f"{v * scale:{digits}}" for v in values) for values in (mean, std))
    note = []
    if weights.in_channels != 3 or spec.photo is False:
        note = [
            f"  # {weights.in_channels} channels: the stem is built for len(PIXEL_MEAN) channels; feed them with "
            "a dataset mapper that reads your images (detectron2's reads 8-bit photos)"
        ]
    return "\n".join(
        [
            "MODEL:",
            f'  WEIGHTS: "{path}"',
            f"  PIXEL_MEAN: [{pixel_mean}]",
            f"  PIXEL_STD: [{pixel_std}]",
            *note,
            "  BACKBONE:",
            "    FREEZE_AT: 0  # fine-tune every stage",
            "  RESNETS:",
            *resnets,
            "  # the MoCo/DenseCL protocol also normalises the heads with SyncBN: FPN.NORM, ROI_BOX_HEAD.NORM (FPN);",
            "  # C4 (MoCo's VOC recipe): res5 is the box head (roi_heads.res5, normalised by RESNETS.NORM) and",
            '  # ROI_HEADS.NAME: "Res5ROIHeadsExtraNorm" (MoCo\'s train_net.py) adds a fresh norm after it',
            "  # the file's names are matched into either model by detectron2 (matching_heuristics: True)",
            "INPUT:",
            '  FORMAT: "RGB"',
        ]
    )


def usage(path: Path, weights: BackboneWeights) -> str:
    return "# detectron2 config (merge into your model's YAML)\n" + config(path, weights)
