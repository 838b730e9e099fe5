"""The fine-tuned detector as a file: written by ``densecl eval det``, rebuilt by :func:`load_detector`.

``densecl eval det`` writes the first seed's detector, after Precise BN, as
``<out stem>.detector.pt`` next to the result (``--save-detector PATH`` for
another place). The file is ``torch.save`` of a dict that
``torch.load(path, weights_only=True)`` reads::

    format "densecl-detector", version 1
    model                the state dict (CPU tensors)
    detector, task, norm "fpn" | "c4", "box" | "mask", "syncbn" | "bn" | "frozen"
    arch, in_channels    the ResNet ("resnet50") and its input channels
    classes              the object class names: label i is classes[i - 1], 0 the background
    num_classes          len(classes)
    min_size, max_size   training sizes (the last is the test size), the longer side at most
    image_mean, image_std the normalisation of the input (the backbone's own)
    proposals            RPN proposals kept after NMS, [training, evaluation]
    rois_per_image, detections_per_image
    fpn_in_channels      the channels of C2..C5 (fpn only)
    inputs               how the images are read (densecl.inputs.InputSpec's fields)
    seed, iters          the fine-tuning run that made it

An ``fpn`` file loads strictly into torchvision's ``FasterRCNN`` / ``MaskRCNN``
built with torchvision alone (docs/evaluate.md shows how, and inference on a
folder of images); :func:`load_detector` rebuilds either detector.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from densecl import checkpoint
from densecl.errors import InputError
from densecl.evaluation.det_model import DetectorSpec, assemble, blank_resnet, fpn_in_channels
from densecl.inputs import InputSpec, input_of

FORMAT = "densecl-detector"
VERSION = 1


def save_detector(path: str | Path, model: nn.Module, classes: tuple[str, ...], seed: int, iters: int) -> None:
    """Writes ``model`` (made by :func:`~densecl.evaluation.det_model.build_detector`) to ``path``, atomically."""
    spec: DetectorSpec = model.detector_spec
    if len(classes) != spec.num_classes:
        raise ValueError(f"{len(classes)} class names for a detector of {spec.num_classes} classes")
    payload = {"format": FORMAT, "version": VERSION, **dataclasses.asdict(spec)}
    payload["classes"] = list(classes)
    if spec.detector == "fpn":
        payload["fpn_in_channels"] = fpn_in_channels(blank_resnet(spec.arch, spec.in_channels))
    payload["inputs"] = dataclasses.asdict(input_of(model))
    payload.update(seed=seed, iters=iters)
    payload["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint.write_atomic(path, payload)


def load_detector(path: str | Path) -> tuple[nn.Module, tuple[str, ...]]:
    """The detector of a file :func:`save_detector` wrote, in eval mode, and its object class names.

    Raises:
        InputError: not such a file, or its weights do not fit the detector it describes.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for bad files
        raise InputError(f"cannot read detector file {path} ({type(e).__name__}): is the file complete?") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("version") != VERSION:
        raise InputError(f"{path} is not a densecl detector file of version {VERSION}")
    fields = {f.name: saved[f.name] for f in dataclasses.fields(DetectorSpec)}
    for name in ("min_size", "image_mean", "image_std", "proposals"):
        fields[name] = tuple(fields[name])
    spec = DetectorSpec(**fields)
    model = assemble(blank_resnet(spec.arch, spec.in_channels), spec)
    try:
        model.load_state_dict(saved["model"], strict=True)
    except RuntimeError as e:
        found = " ".join(str(e).split())  # one line
        raise InputError(f"the weights of {path} do not fit its {spec.detector} detector: {found}") from None
    model.input_spec = InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["inputs"].items()})
    return model.eval(), tuple(saved["classes"])
