"""The C4 detector's parts against detectron2's C4 recipe, its losses and Precise BN against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from densecl.evaluation.c4 import AlignedRoIPool, L1RegionProposalNetwork, box_head_losses
from densecl.evaluation.det_config import DetConfig
from densecl.evaluation.det_model import build_detector, param_groups, rpn_proposals
from densecl.evaluation.precise_bn import precise_bn
from densecl.models.backbones import build_backbone


@pytest.fixture(scope="module")
def backbone():
    """A ResNet-18 whose BatchNorm statistics are not the defaults (so a copy is told from a fresh layer)."""
    torch.manual_seed(0)
    model = build_backbone("resnet18")
    for name, value in model.state_dict().items():
        if name.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    return model


def c4(backbone, **settings):
    config = DetConfig(data="-", detector="c4", min_size=(64,), max_size=64, **settings)
    return build_detector(backbone, "resnet18", 3, config)


def test_trunk_is_stem_to_res4_and_res5_is_the_box_head_with_the_pretrained_weights(backbone):
    model = c4(backbone)
    trunk, head = model.backbone, model.roi_heads.box_head
    assert [name for name, _ in trunk.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]  # fmt: skip
    assert torch.equal(trunk.layer3[1].conv2.weight, backbone.layer3[1].conv2.weight)
    assert torch.equal(trunk.bn1.running_var, backbone.bn1.running_var)
    expected_res5 = {k: v for k, v in backbone.state_dict().items() if k.startswith("layer4.")}
    got_res5 = {f"layer4.{k}": v for k, v in head.res5.state_dict().items()}
    assert got_res5.keys() == expected_res5.keys() and all(torch.equal(got_res5[k], expected_res5[k]) for k in got_res5)
    # MoCo's extra norm after res5: a fresh BatchNorm over res5's 512 channels (2048 for ResNet-50)
    assert isinstance(head.norm, nn.BatchNorm2d) and head.norm.num_features == 512
    assert torch.equal(head.norm.weight, torch.ones(512)) and torch.equal(head.norm.running_var, torch.ones(512))
    assert all(p.requires_grad for p in model.parameters())  # FREEZE_AT 0: every stage trains
    x = torch.zeros(2, 3, 64, 96)
    assert trunk.eval()(x)["res4"].shape == (2, 256, 4, 6) and trunk.out_channels == 256  # stride 16
    rois = torch.zeros(5, 256, 14, 14)
    assert head.eval()(rois).shape == (5, 512)  # res5 halves 14 x 14 to 7 x 7, then the average


def test_rpn_and_heads_carry_detectron2s_c4_values(backbone):
    model = c4(backbone)
    rpn, heads = model.rpn, model.roi_heads
    assert isinstance(rpn, L1RegionProposalNetwork)
    assert rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)
    assert rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert rpn.head.conv[0][0].in_channels == 256 and rpn.head.cls_logits.out_channels == 15  # 5 sizes x 3 ratios
    assert rpn._pre_nms_top_n == {"training": 12000, "testing": 6000}
    assert rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold, rpn.nms_thresh) == (0.7, 0.3, 0.7)
    assert (rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == (256, 0.5)
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (512, 0.25)
    assert heads.proposal_matcher.high_threshold == heads.proposal_matcher.low_threshold == 0.5
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.5, 100)
    pool = heads.box_roi_pool
    assert isinstance(pool, AlignedRoIPool) and (pool.output_size, pool.stride, pool.sampling_ratio) == (14, 16, 0)
    predictor = heads.box_predictor
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 16  # 3 classes + background
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert model.transform.image_mean == [0.485, 0.456, 0.406] and model.transform.image_std == [0.229, 0.224, 0.225]
    assert rpn_proposals(DetConfig(data="-", detector="c4", proposals=50)) == (50, 50)
    assert rpn_proposals(DetConfig(data="-")) == (1000, 1000)  # the FPN's
    assert c4(backbone, proposals=50).rpn._post_nms_top_n == {"training": 50, "testing": 50}


def test_frozen_norm_freezes_trunk_and_res5_and_drops_the_extra_norm(backbone):
    model = c4(backbone, norm="frozen")
    head = model.roi_heads.box_head
    assert type(model.backbone.bn1).__name__ == type(head.res5[0].bn1).__name__ == "FrozenBatchNorm2d"
    assert isinstance(head.norm, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_pooling_is_half_pixel_aligned():
    # feature value = its column index x on a 20 x 20 map; bilinear sampling of a ramp is exact inside the map.
    # The image box (64, 64, 128, 128) at stride 16 is (4, 4, 8, 8) on the map; two bins of width 2.
    # Aligned RoIAlign shifts the box by -0.5 (pixel centres): bins centred at x = 3.5 + 1 = 4.5 and 6.5.
    # Unaligned (torchvision's MultiScaleRoIAlign): centred at 5 and 7.
    feature = torch.arange(20.0).repeat(20, 1)[None, None]  # 1 x 1 x 20 x 20
    boxes = [torch.tensor([[64.0, 64.0, 128.0, 128.0]])]
    aligned = AlignedRoIPool("res4", output_size=2, stride=16)({"res4": feature}, boxes, [(320, 320)])
    assert aligned[0, 0].tolist() == [[4.5, 6.5], [4.5, 6.5]]
    unaligned = MultiScaleRoIAlign(["res4"], 2, 0)({"res4": feature}, boxes, [(320, 320)])
    assert unaligned[0, 0].tolist() == [[5.0, 7.0], [5.0, 7.0]]


def test_box_head_losses_are_cross_entropy_and_l1_over_the_sampled_rois():
    # two RoIs, classes 0 (background), 1, 2. Logits all 0: cross-entropy ln 3 each, mean ln 3.
    # RoI 0 is class 1 with target deltas (1, 0, 0, 0) and predicted (0.5, 0, 0, 2) in its class-1 slots:
    # L1 = 0.5 + 0 + 0 + 2 = 2.5. RoI 1 is background: no box loss. Divided by the 2 sampled RoIs: 1.25.
    logits = torch.zeros(2, 3)
    deltas = torch.zeros(2, 12)
    deltas[0, 4:8] = torch.tensor([0.5, 0.0, 0.0, 2.0])
    deltas[1, 0:4] = 9.0  # background slots: never a target
    losses = box_head_losses(logits, deltas, [torch.tensor([1, 0])], [torch.tensor([[1.0, 0, 0, 0], [3.0, 3, 3, 3]])])
    assert losses["loss_classifier"].item() == pytest.approx(math.log(3))
    assert losses["loss_box_reg"].item() == pytest.approx(1.25)


def test_rpn_losses_are_divided_by_anchors_per_image_times_images(backbone):
    # 256 anchors per image would be sampled; one image with 1 positive, 3 negatives and 1 ignored anchor:
    # all 4 labelled anchors are sampled (fewer than 128 positives, fewer than 256 - 1 negatives).
    # Objectness logits 0 on the sampled anchors: BCE ln 2 each, summed 4 ln 2, over 256 x 1.
    # The positive anchor's deltas (1, 2, 0, 0) against targets 0: L1 3, over 256.
    rpn = c4(backbone).rpn
    objectness = torch.tensor([[0.0], [0.0], [0.0], [0.0], [5.0]])
    deltas = torch.zeros(5, 4)
    deltas[0] = torch.tensor([1.0, 2.0, 0.0, 0.0])
    deltas[4] = 7.0  # the ignored anchor counts for nothing
    labels = [torch.tensor([1.0, 0.0, 0.0, 0.0, -1.0])]
    objectness_loss, box_loss = rpn.compute_loss(objectness, deltas, labels, [torch.zeros(5, 4)])
    assert objectness_loss.item() == pytest.approx(4 * math.log(2) / 256)
    assert box_loss.item() == pytest.approx(3 / 256)


def test_norm_weight_decay_puts_normalisation_parameters_apart(backbone):
    model = c4(backbone)
    (single,) = param_groups(model, 1e-4, None)
    assert single["weight_decay"] == 1e-4 and len(single["params"]) == len(list(model.parameters()))
    other, norm = param_groups(model, 1e-4, 0.0)
    assert (other["weight_decay"], norm["weight_decay"]) == (1e-4, 0.0)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm["params"]} == norm_ids and len(norm_ids) == 2 * (20 + 1)  # 20 in ResNet-18, 1 extra
    assert len(other["params"]) + len(norm["params"]) == len(list(model.parameters()))


def test_precise_bn_averages_the_batch_statistics():
    # batch 1 holds 1, 3: mean 2, unbiased variance ((1-2)^2 + (3-2)^2) / 1 = 2
    # batch 2 holds 5, 5, 5, 9: mean 6, unbiased variance (1 + 1 + 1 + 9) / 3 = 4
    # precise BN: running mean (2 + 6) / 2 = 4, running variance (2 + 4) / 2 = 3
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    nn.init.ones_(model[0].weight)
    model.eval()
    batches = [torch.tensor([1.0, 3.0]).view(1, 1, 1, 2), torch.tensor([5.0, 5.0, 5.0, 9.0]).view(1, 1, 2, 2)]
    assert precise_bn(model, batches, lambda m, x: m(x)) == 2
    bn = model[1]
    assert bn.running_mean.item() == pytest.approx(4.0) and bn.running_var.item() == pytest.approx(3.0)
    assert bn.momentum == 0.1 and not model.training  # both put back
    assert precise_bn(nn.Sequential(nn.Conv2d(1, 1, 1)), batches, lambda m, x: m(x)) == 0  # no BatchNorm: no pass
    with pytest.raises(ValueError, match="at least one batch"):
        precise_bn(model, [], lambda m, x: m(x))
    assert bn.running_mean.item() == pytest.approx(4.0)  # untouched by the failed call
