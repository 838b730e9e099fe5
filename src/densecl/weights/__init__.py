"""Backbone weights in: every checkpoint layout people bring, as torchvision ResNet (or timm) tensors.

One entry point serves ``densecl eval``, ``densecl export`` and
``densecl pretrain --init``::

    from densecl.weights import load_backbone, load_backbone_weights

    weights = load_backbone_weights("runs/r50/checkpoint.pth")
    weights.arch, weights.source_format, len(weights.dropped)   # 'resnet50', 'densecl', 226
    backbone = load_backbone("densecl_r50_imagenet_200ep.pth")   # strict load, arch guessed

One job per module:

==============  ==============================================================
``reading``     files in without running code from them; the state dict found
                inside its container
``layouts``     the table of known layouts (which prefix is the query
                backbone, what is dropped on purpose), detection, conversion
``fitting``     which registered ResNet the tensors are, by keys and shapes
``detectron2``  detectron2 <-> torchvision names (import and export)
``timm``        a named timm model's backbone (``--arch timm/<name>``), under
                timm's names
==============  ==============================================================

Every conversion checks, like nanoGPT's ``from_pretrained``, that each source
key was either placed or deliberately dropped (heads, classifier, queues,
momentum encoder), that duplicate copies of the query backbone agree, and that
the result has exactly the keys and shapes of one registered backbone. Missing
``*.num_batches_tracked`` counters (detectron2 and pre-2018 torchvision files
have none) are filled with 0; nothing else is ever filled in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from densecl.config import RANDOM_WEIGHTS, is_timm_arch
from densecl.errors import InputError
from densecl.inputs import InputSpec
from densecl.models.backbones import Backbone, build_backbone
from densecl.weights import timm as timm_weights
from densecl.weights.detectron2 import detectron2_to_torchvision, torchvision_to_detectron2
from densecl.weights.fitting import ResNetShape, fit_arch, guess_arch, in_channels_of, resnet_shape
from densecl.weights.input_conv import STEM
from densecl.weights.layouts import convert, detect_layout, fill_num_batches_tracked
from densecl.weights.messages import first_line
from densecl.weights.reading import read_checkpoint, unwrap

__all__ = [
    "BackboneWeights",
    "ResNetShape",
    "detectron2_to_torchvision",
    "guess_arch",
    "load_backbone",
    "load_backbone_weights",
    "read_checkpoint",
    "resnet_shape",
    "torchvision_to_detectron2",
]


@dataclass(frozen=True)
class BackboneWeights:
    """The query backbone of some checkpoint, under torchvision ResNet names (timm's for a timm model).

    Attributes:
        state_dict: torchvision ResNet names (``conv1.weight``,
            ``layer1.0.bn1.running_mean``, ...), no ``fc.*``; loads strictly into
            ``build_backbone(arch)`` (``load_library_state_dict``). For
            ``timm/<name>``: timm's names, without the head the backbone prunes.
        arch: registry name (:data:`densecl.models.backbones.BACKBONES`), or
            ``timm/<name>``, whose keys and shapes these tensors match exactly. ``load_backbone_weights``
            always sets it (it refuses tensors that fit no registered backbone);
            ``None`` only where a caller builds the object without knowing.
        source_format: the layout the tensors came from (:mod:`densecl.weights.layouts`).
        dropped: source keys deliberately left out (heads, classifier, queues,
            momentum encoder, duplicate copies), as spelled in the source.
        input: what the backbone takes (channels, bands, mean and std), where the
            file says (a densecl checkpoint, densecl's OpenMMLab export); else
            only the channels, read off the first convolution.
        stem: the first convolution's weight key (``conv1.weight`` for a ResNet).
    """

    state_dict: dict[str, torch.Tensor]
    arch: str | None
    source_format: str
    dropped: tuple[str, ...] = field(default=())
    input: InputSpec | None = None
    stem: str = STEM

    @property
    def in_channels(self) -> int:
        """Input channels of the first convolution (3 for RGB)."""
        return in_channels_of(self.state_dict, self.stem)

    @property
    def input_spec(self) -> InputSpec:
        """:attr:`input`, or what the first convolution alone says (its channels; mean and std unknown)."""
        return self.input or unknown_input(self.in_channels)


def load_backbone_weights(source: str | os.PathLike | Mapping, arch: str | None = None) -> BackboneWeights:
    """Reads a checkpoint in any known layout and returns its query backbone.

    Args:
        source: a file (``.pth``/``.pt``/``.tar``/``.pkl``/``.safetensors``) or
            an already loaded checkpoint dict.
        arch: the architecture the caller wants, where the file need not say it:
            a timm model (``timm/<name>``) is read as that model. A ResNet is
            recognised by its tensors, so this is not needed (nor used) for one.

    Raises:
        InputError: the file is unreadable or truncated, the layout is unknown,
            some keys fit nowhere, or the tensors fit no registered backbone
            (for a timm model: not that model's).
    """
    where = _name(source)
    found = unwrap(source if isinstance(source, Mapping) else read_checkpoint(source), where)
    if is_timm_arch(found.config_arch) or (found.config_arch is None and is_timm_arch(arch)):
        arch = found.config_arch or arch
        target, dropped, layout_name, stem = timm_weights.read(found.state, arch, where)
    else:
        layout = detect_layout(found.state, found.container, where)
        target, dropped = convert(found.state, layout, where)
        fill_num_batches_tracked(target)
        arch = fit_arch(target, found.config_arch, layout.name, where)
        layout_name, stem = layout.name, STEM
    channels = in_channels_of(target, stem)
    described = None
    if found.input is not None:
        try:
            described = InputSpec.from_config(found.input, channels)
        except InputError as e:
            raise InputError(f"{where} describes its input inconsistently ({e}); the file is damaged") from None
    if described is not None and described.channels != channels:
        described = None  # a config whose in_channels the weights contradict: the weights win
    return BackboneWeights(target, arch, layout_name, dropped, described, stem)


def unknown_input(channels: int) -> InputSpec:
    """The input of weights that do not describe it: RGB photos with ImageNet's statistics for 3 channels (what
    every RGB checkpoint is trained on), else ``channels`` of unknown kind and statistics."""
    if channels == 3:
        return InputSpec()
    return InputSpec(channels, photo=None, mean=None, std=None)


def load_backbone(
    source: str | os.PathLike | Mapping | BackboneWeights, arch: str | None = None, in_channels: int = 3
) -> Backbone:
    """Builds a backbone and loads ``source`` into it strictly.

    Args:
        source: anything :func:`load_backbone_weights` reads, its result (so a
            caller that also wants ``source_format`` reads the file once), or
            ``"random"`` for a randomly initialised backbone (then ``arch`` is
            required).
        arch: registry name or ``timm/<name>``; if given it must agree with the weights
            (a timm model's weights are read as this model where the file does not name one).
        in_channels: input channels of a ``random`` backbone (weights say their own).

    The backbone's ``input_spec`` says what it takes (:attr:`BackboneWeights.input_spec`).
    """
    if isinstance(source, str) and source == RANDOM_WEIGHTS:
        if arch is None:
            raise InputError("random initialisation needs an architecture; name one (e.g. resnet50)")
        backbone = _build(arch, in_channels)
        backbone.input_spec = unknown_input(in_channels)
        return backbone
    weights = source if isinstance(source, BackboneWeights) else load_backbone_weights(source, arch)
    where = "the given weights" if isinstance(source, BackboneWeights) else _name(source)
    if arch is not None and weights.arch is not None and arch != weights.arch:
        raise InputError(
            f"{where} holds {weights.arch} weights but {arch} was asked for; "
            f"drop the architecture option or set it to {weights.arch}"
        )
    if (arch := weights.arch or arch) is None:
        raise InputError(f"{where} do not say which architecture they are; name one (e.g. resnet50)")
    backbone = _build(arch, weights.in_channels)
    try:
        backbone.load_library_state_dict(weights.state_dict)
    except RuntimeError as e:  # only for hand-built BackboneWeights: the loader checked its own fit
        raise InputError(f"{where} do not fit {arch} ({first_line(e)}); name the right architecture") from None
    backbone.input_spec = weights.input_spec
    return backbone


def _build(arch: str, in_channels: int = 3) -> Backbone:
    try:
        return build_backbone(arch, in_channels)
    except ValueError as e:
        raise InputError(f"{e}; pass one of the listed names") from e


def _name(source: object) -> str:
    return "the given checkpoint dict" if isinstance(source, Mapping) else f"'{os.fspath(source)}'"
