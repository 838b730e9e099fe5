"""The detectors of ``densecl eval det``: torchvision's Faster / Mask R-CNN (FPN) or the C4 model, around the
pre-trained ResNet; and the SGD parameter groups of their recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
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
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # what norm_weight_decay covers


def rpn_proposals(config: DetConfig) -> tuple[int, int]:
    """Proposals kept after NMS per image, (training, evaluation): ``proposals`` or the detector's own."""
    if config.proposals:
        return config.proposals, config.proposals
    if config.detector == "c4":
        return RPN_POST_NMS["training"], RPN_POST_NMS["testing"]
    return FPN_PROPOSALS, FPN_PROPOSALS


def build_detector(backbone: ResNetBackbone, arch: str, num_classes: int, config: DetConfig) -> nn.Module:
    """A torchvision Faster / Mask R-CNN whose ResNet holds ``backbone``'s weights.

    Args:
        num_classes: object classes, background not counted.
        config: ``detector``, ``task``, ``norm``, ``min_size``, ``max_size``,
            ``proposals``, ``rois_per_image`` and ``detections_per_image`` are read.
    """
    task, norm = config.task, config.norm
    resnet = torchvision_classifier(arch)
    if backbone.in_channels != resnet.conv1.in_channels:
        resnet.conv1 = first_conv(resnet.conv1, backbone.in_channels)
    load_trunk(resnet, backbone.state_dict())
    inputs = input_of(backbone)
    mean, std = inputs.statistics(photo=inputs.photo is not False)  # photos: ImageNet's, torchvision's default
    if norm == "frozen":
        resnet = freeze_batchnorm(resnet)
    proposals = rpn_proposals(config)
    if config.detector == "c4":
        model = build_c4_detector(
            resnet,
            num_classes,
            trained_norm=norm != "frozen",
            min_size=config.min_size,
            max_size=config.max_size,
            proposals=proposals,
            rois_per_image=config.rois_per_image,
            detections_per_image=config.detections_per_image,
            image_mean=mean,
            image_std=std,
        )
        model.input_spec = inputs  # how DetectionSamples reads the images for it
        return model
    trained_norm = None if norm == "frozen" else nn.BatchNorm2d
    body = _resnet_fpn_extractor(resnet, trainable_layers=5, norm_layer=trained_norm)
    extra = {}
    if trained_norm is not None:
        anchors = 3  # one size and three aspect ratios per FPN level (torchvision's default anchors)
        extra["rpn_head"] = RPNHead(body.out_channels, anchors, conv_depth=2)
        extra["box_head"] = FastRCNNConvFCHead((body.out_channels, 7, 7), [256] * 4, [1024], norm_layer=trained_norm)
        if task == "mask":
            extra["mask_head"] = MaskRCNNHeads(body.out_channels, [256] * 4, 1, norm_layer=trained_norm)
    detector = MaskRCNN if task == "mask" else FasterRCNN
    model = detector(
        body,
        num_classes=num_classes + 1,
        min_size=config.min_size,
        max_size=config.max_size,
        rpn_post_nms_top_n_train=proposals[0],
        rpn_post_nms_top_n_test=proposals[1],
        box_batch_size_per_image=config.rois_per_image,
        box_detections_per_img=config.detections_per_image,
        image_mean=list(mean),
        image_std=list(std),
        **extra,
    )
    model.input_spec = inputs  # how DetectionSamples reads the images for it
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
