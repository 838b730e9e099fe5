"""Faster R-CNN R50-C4, MoCo's detectron2 VOC detector, built from torchvision's detection parts.

The model is detectron2's ``Base-RCNN-C4-BN`` with MoCo's ``Res5ROIHeadsExtraNorm``::

    image -> stem, res2, res3, res4 (stride 16) -> RPN: one 3x3 conv, 15 anchors per cell -> proposals
                                 |                                                             |
                                 +--> RoIAlign 14 x 14, aligned (1/16) <-----------------------+
                                        -> res5, the pre-trained stage (stride 2: 7 x 7)
                                        -> BatchNorm (MoCo's extra norm, freshly initialised)
                                        -> average pool -> class scores, class-specific box deltas

The values, from detectron2's defaults and the C4 configs:

- anchors of sizes 32, 64, 128, 256, 512 and aspect ratios 0.5, 1, 2 on res4;
- RPN: anchors with IoU >= 0.7 positive, < 0.3 negative, 256 sampled per image,
  at most half positive; NMS at 0.7 over the best 12000 proposals, 2000 kept
  in training; 6000 and 1000 in evaluation;
- RoIs: 512 sampled per image, at most a quarter positive (IoU >= 0.5), the
  ground-truth boxes added to the proposals; box deltas weighted (10, 10, 5, 5);
- losses: cross-entropy for scores, L1 for box deltas (detectron2's smooth L1
  with beta 0) in both stages; the RPN's two summed over its sampled anchors
  and divided by 256 x images, the box head's regression summed over its
  foreground RoIs and divided by all sampled RoIs;
- evaluation: detections scoring above 0.05, NMS at 0.5 per class, the best
  100 per image;
- predictor initialisation: normal with std 0.01 (scores) and 0.001 (deltas), zero biases.

torchvision's ``MultiScaleRoIAlign`` pools with ``aligned=False``; detectron2's
``ROIAlignV2`` is the half-pixel-aligned RoIAlign, so the C4 model pools with
:func:`torchvision.ops.roi_align` itself. What stays torchvision's: anchors
rounded to whole pixels, images resized as float tensors and padded to a
multiple of 32, and a set of box deltas for the background class that no loss
trains.

Normalisation: with ``trained_norm`` the BatchNorm layers of the trunk and of
res5 are trained, and the extra norm is a BatchNorm (the caller converts them
to SyncBatchNorm under torchrun); without it, the trunk and res5 hold
FrozenBatchNorm (the caller freezes them) and there is no extra norm
(detectron2's plain ``Res5ROIHeads``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import roi_align

from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

ANCHOR_SIZES = (32, 64, 128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
RPN_PRE_NMS = {"training": 12000, "testing": 6000}  # per image, before NMS
RPN_POST_NMS = {"training": 2000, "testing": 1000}  # per image, after NMS
RPN_ANCHORS_PER_IMAGE = 256
POOLER_RESOLUTION = 14
STRIDE = 16  # of res4


class C4Trunk(nn.Module):
    """Stem to res4 of a torchvision ResNet (modules adopted): ``N x 3 x H x W`` -> ``{"res4": N x C4 x H/16 x W/16}``.

    ``out_channels`` is C4 (1024 for ResNet-50).
    """

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.out_channels: int = resnet.layer4[0].conv1.in_channels  # res5's input: res4's channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N x 64 x H/4 x W/4
        return OrderedDict(res4=self.layer3(self.layer2(self.layer1(x))))


class AlignedRoIPool(nn.Module):
    """RoIAlign of every box on one feature map with the half-pixel offset (detectron2's ``ROIAlignV2``).

    Called as torchvision's poolers are: ``(features, boxes, image_shapes)`` ->
    ``R x C x S x S``, ``boxes`` a list of ``R_i x 4`` image-pixel boxes.
    """

    def __init__(self, feature: str, output_size: int, stride: int, sampling_ratio: int = 0) -> None:
        super().__init__()
        self.feature, self.output_size, self.stride, self.sampling_ratio = feature, output_size, stride, sampling_ratio

    def forward(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        x = features[self.feature]
        rois = [b.to(x.dtype) for b in boxes]
        return roi_align(x, rois, self.output_size, 1.0 / self.stride, self.sampling_ratio, aligned=True)


class Res5BoxHead(nn.Module):
    """res5 on each RoI, then MoCo's extra norm and average pooling: ``R x C4 x 14 x 14`` -> ``R x C5``."""

    def __init__(self, res5: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.res5, self.norm = res5, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.res5(x))  # R x C5 x 7 x 7
        return x.mean(dim=(2, 3))


class BoxPredictor(nn.Module):
    """Pooled RoI features ``R x C`` -> class scores ``R x (K + 1)`` and box deltas ``R x 4(K + 1)``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class L1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with detectron2's losses (see the module docstring)."""

    def compute_loss(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness ``A x 1`` logits and deltas ``A x 4`` of the ``A`` anchors of all images; per-image targets."""
        positive, negative = self.fg_bg_sampler(labels)
        positive, negative = torch.cat(positive).bool(), torch.cat(negative).bool()  # A
        normaliser = self.fg_bg_sampler.batch_size_per_image * len(labels)
        labels, targets = torch.cat(labels), torch.cat(regression_targets)  # A, A x 4
        sampled = positive | negative
        box_loss = F.l1_loss(pred_bbox_deltas[positive], targets[positive], reduction="sum") / normaliser
        objectness_loss = (
            F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled], reduction="sum")
            / normaliser
        )
        return objectness_loss, box_loss


def box_head_losses(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: list[torch.Tensor],
    regression_targets: list[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Cross-entropy over the sampled RoIs; L1 on the true class's deltas of foreground RoIs over their count.

    Args:
        class_logits: ``R x (K + 1)``, R sampled RoIs of all images.
        box_deltas: ``R x 4(K + 1)``.
        labels: per image, ``R_i`` class ids (0 = background).
        regression_targets: per image, ``R_i x 4`` encoded target deltas.
    """
    labels_all, targets = torch.cat(labels), torch.cat(regression_targets)  # R, R x 4
    foreground = torch.where(labels_all > 0)[0]
    deltas = box_deltas.reshape(len(labels_all), -1, 4)[foreground, labels_all[foreground]]  # F x 4
    return {
        "loss_classifier": F.cross_entropy(class_logits, labels_all),
        "loss_box_reg": F.l1_loss(deltas, targets[foreground], reduction="sum") / max(labels_all.numel(), 1),
    }


class Res5RoIHeads(RoIHeads):
    """torchvision's RoIHeads (sampling, box coding, post-processing), res5 as the box head, detectron2's losses."""

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        x = self.box_roi_pool(features, proposals, image_shapes)  # R x C4 x 14 x 14
        class_logits, box_deltas = self.box_predictor(self.box_head(x))  # R x (K + 1), R x 4(K + 1)
        if self.training:
            return [], box_head_losses(class_logits, box_deltas, labels, regression_targets)
        boxes, scores, classes = self.postprocess_detections(class_logits, box_deltas, proposals, image_shapes)
        return [{"boxes": b, "labels": c, "scores": s} for b, s, c in zip(boxes, scores, classes)], {}


def build_c4_detector(
    resnet: ResNet,
    num_classes: int,
    trained_norm: bool,
    min_size: tuple[int, ...],
    max_size: int,
    proposals: tuple[int, int],
    rois_per_image: int,
    detections_per_image: int,
    image_mean: tuple[float, ...] = IMAGENET_MEAN,
    image_std: tuple[float, ...] = IMAGENET_STD,
) -> GeneralizedRCNN:
    """The C4 Faster R-CNN around ``resnet``, whose modules it adopts (``layer4`` becomes the box head).

    Args:
        resnet: a torchvision ResNet holding the pre-trained weights.
        num_classes: object classes, background not counted.
        trained_norm: BatchNorm trained everywhere and the extra norm after
            res5; False: the caller froze the BatchNorm, and there is no extra norm.
        min_size: shorter image side, a random choice per training image; the last in evaluation.
        proposals: RPN proposals kept after NMS per image, in training and in evaluation.
        image_mean, image_std: the normalisation of the backbone's input (ImageNet's for photos; a
            checkpoint of other images stores its own).
    """
    trunk = C4Trunk(resnet)
    res5_channels = resnet.fc.in_features
    anchors = AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ASPECT_RATIOS,))
    rpn = L1RegionProposalNetwork(
        anchors,
        RPNHead(trunk.out_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=RPN_ANCHORS_PER_IMAGE,
        positive_fraction=0.5,
        pre_nms_top_n=dict(RPN_PRE_NMS),
        post_nms_top_n={"training": proposals[0], "testing": proposals[1]},
        nms_thresh=0.7,
    )
    box_head = Res5BoxHead(resnet.layer4, nn.BatchNorm2d(res5_channels) if trained_norm else nn.Identity())
    roi_heads = Res5RoIHeads(
        AlignedRoIPool("res4", POOLER_RESOLUTION, STRIDE),
        box_head,
        BoxPredictor(res5_channels, num_classes + 1),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=rois_per_image,
        positive_fraction=0.25,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=detections_per_image,
    )
    transform = GeneralizedRCNNTransform(min_size, max_size, list(image_mean), list(image_std))
    return GeneralizedRCNN(trunk, rpn, roi_heads, transform)
