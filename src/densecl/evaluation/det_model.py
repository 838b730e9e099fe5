"""The detectors of ``densecl eval det``: torchvision's Faster / Mask R-CNN (FPN) or the C4 model, around the
pre-trained ResNet; and the SGD parameter groups of their recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.misc import FrozenBatchNorm2d

from densecl.errors import InputError
from densecl.evaluation.c4 import RPN_POST_NMS, build_c4_detector
from densecl.inputs import input_of
from densecl.models.backbones import ResNetBackbone, first_conv, torchvision_classifier

if TYPE_CHECKING:
    from densecl.evaluation.det_config import DetConfig

FPN_PROPOSALS = 1000  # per image after NMS, training and evaluation (detectron2's FPN configs)
FPN_CHANNELS = 256  # of every FPN level
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # what norm_weight_decay covers


def rpn_proposals(config: DetConfig) -> tuple[int, int]:
    """Proposals kept after NMS per image, (training, evaluation): ``proposals`` or the detector's own."""
    if config.proposals:
        return config.proposals, config.proposals
    if config.detector == "c4":
        return RPN_POST_NMS["training"], RPN_POST_NMS["testing"]
    return FPN_PROPOSALS, FPN_PROPOSALS


@dataclass(frozen=True)
class DetectorSpec:
    """What builds a detector's modules; with a state dict, the fine-tuned detector (the detector file keeps it).

    Attributes:
        detector, task, norm: as :class:`~densecl.evaluation.det_config.DetConfig`'s.
        arch, in_channels: the ResNet and its input channels.
        num_classes: object classes, background not counted.
        min_size: training sizes; the last is the test size.
        image_mean, image_std: the normalisation of the backbone's input.
        proposals: RPN proposals kept after NMS per image, (training, evaluation).
    """

    detector: str
    task: str
    norm: str
    arch: str
    in_channels: int
    num_classes: int
    min_size: tuple[int, ...]
    max_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    proposals: tuple[int, int]
    rois_per_image: int
    detections_per_image: int


def build_detector(backbone: ResNetBackbone, arch: str, num_classes: int, config: DetConfig) -> nn.Module:
    """A torchvision Faster / Mask R-CNN (or the C4 model) whose ResNet holds ``backbone``'s weights.

    The model carries ``detector_spec`` (:class:`DetectorSpec`) and ``input_spec``
    (how :class:`~densecl.evaluation.det_data.DetectionSamples` reads images for it).

    Args:
        num_classes: object classes, background not counted.
        config: ``detector``, ``task``, ``norm``, ``min_size``, ``max_size``,
            ``proposals``, ``rois_per_image`` and ``detections_per_image`` are read.
    """
    resnet = blank_resnet(arch, backbone.in_channels)
    load_trunk(resnet, backbone.state_dict())
    inputs = input_of(backbone)
    mean, std = inputs.statistics(photo=inputs.photo is not False)  # photos: ImageNet's, torchvision's default
    spec = DetectorSpec(
        config.detector,
        config.task,
        config.norm,
        arch,
        backbone.in_channels,
        num_classes,
        tuple(config.min_size),
        config.max_size,
        tuple(mean),
        tuple(std),
        rpn_proposals(config),
        config.rois_per_image,
        config.detections_per_image,
    )
    model = assemble(resnet, spec)
    model.input_spec = inputs
    return model


def blank_resnet(arch: str, in_channels: int) -> nn.Module:
    """torchvision's ResNet ``arch`` (freshly initialised) taking ``in_channels`` input channels."""
    resnet = torchvision_classifier(arch)
    if in_channels != resnet.conv1.in_channels:
        resnet.conv1 = first_conv(resnet.conv1, in_channels)
    return resnet


def fpn_in_channels(resnet: nn.Module) -> list[int]:
    """The channels of C2..C5 that the FPN takes (torchvision's rule: the last stage's over 8, doubling)."""
    return [resnet.inplanes // 8 * 2**k for k in range(4)]


def assemble(resnet: nn.Module, spec: DetectorSpec) -> nn.Module:
    """The detector of ``spec`` around ``resnet``, whose modules it adopts; ``detector_spec`` set on it.

    The FPN detector is built from torchvision's public parts only (``BackboneWithFPN``
    on C2..C5 with the max-pool P6, torchvision's anchors), so its state dict loads
    strictly into a model built the same way with torchvision alone (docs/evaluate.md).
    """
    trained = spec.norm != "frozen"
    if not trained:
        resnet = freeze_batchnorm(resnet)
    if spec.detector == "c4":
        model = build_c4_detector(
            resnet,
            spec.num_classes,
            trained_norm=trained,
            min_size=spec.min_size,
            max_size=spec.max_size,
            proposals=spec.proposals,
            rois_per_image=spec.rois_per_image,
            detections_per_image=spec.detections_per_image,
            image_mean=spec.image_mean,
            image_std=spec.image_std,
        )
        model.detector_spec = spec
        return model
    norm = nn.BatchNorm2d if trained else None
    return_layers = {f"layer{k + 1}": str(k) for k in range(4)}  # C2..C5 as FPN levels "0".."3"
    body = BackboneWithFPN(resnet, return_layers, fpn_in_channels(resnet), FPN_CHANNELS, norm_layer=norm)
    extra = {}
    if trained:  # torchvision's v2 heads: a two-conv RPN head; box (4 conv + 1 fc) and mask heads with BatchNorm
        anchors = 3  # one size and three aspect ratios per FPN level (torchvision's default anchors)
        extra["rpn_head"] = RPNHead(FPN_CHANNELS, anchors, conv_depth=2)
        extra["box_head"] = FastRCNNConvFCHead((FPN_CHANNELS, 7, 7), [256] * 4, [1024], norm_layer=norm)
        if spec.task == "mask":
            extra["mask_head"] = MaskRCNNHeads(FPN_CHANNELS, [256] * 4, 1, norm_layer=norm)
    detector = MaskRCNN if spec.task == "mask" else FasterRCNN
    model = detector(
        body,
        num_classes=spec.num_classes + 1,
        min_size=spec.min_size,
        max_size=spec.max_size,
        rpn_post_nms_top_n_train=spec.proposals[0],
        rpn_post_nms_top_n_test=spec.proposals[1],
        box_batch_size_per_image=spec.rois_per_image,
        box_detections_per_img=spec.detections_per_image,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
        **extra,
    )
    model.detector_spec = spec
    return model


def load_trunk(resnet: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict load except the classifier: anything else missing or unexpected is an error."""
    result = resnet.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"backbone weights do not fit torchvision's {type(resnet).__name__}: "
            f"missing {missing or 'none'}, unexpected {result.unexpected_keys or 'none'}"
        )


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> FrozenBatchNorm2d with the same statistics and affine values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, freeze_batchnorm(child))
    return module


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: float | None) -> list[dict]:
    """SGD parameter groups: one with ``weight_decay``, or, given ``norm_weight_decay``, normalisation layers apart."""
    if norm_weight_decay is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm if isinstance(module, NORM_LAYERS) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": norm_weight_decay}]
