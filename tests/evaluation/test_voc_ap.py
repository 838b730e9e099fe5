"""VOC detection AP (detectron2's PascalVOCDetectionEvaluator rules) against cases worked out by hand.

Every expected number below is computed in the comments from the rules in
``densecl.evaluation.voc_ap``'s docstring, not by running the code.
"""

from __future__ import annotations

import numpy as np
import pytest

from densecl.evaluation.voc_ap import IOU_THRESHOLDS, Detections, Truth, class_ap, pairwise_iou, voc_detection_ap


def truth(*objects: tuple[list[float], int, bool]) -> Truth:
    """``(box, class id, difficult)`` of each object of one image."""
    return Truth(
        boxes=np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4),
        labels=np.array([o[1] for o in objects], dtype=np.int64),
        difficult=np.array([o[2] for o in objects], dtype=bool),
    )


def found(*detections: tuple[list[float], int, float]) -> Detections:
    """``(box, class id, score)`` of each detection in one image."""
    return Detections(
        boxes=np.array([d[0] for d in detections], dtype=np.float32).reshape(-1, 4),
        labels=np.array([d[1] for d in detections], dtype=np.int64),
        scores=np.array([d[2] for d in detections], dtype=np.float32),
    )


# Class 1 ("dog"): three boxes, A and B in image 0, C in image 1 (npos = 3).
# Class 2 ("cat"): one box in image 1, never detected.
# Class 3 ("bus"): no box anywhere; one detection in image 0.
TRUTH = [
    truth(([0, 0, 10, 10], 1, False), ([20, 0, 30, 10], 1, False)),
    truth(([0, 0, 10, 10], 1, False), ([40, 40, 50, 50], 2, False)),
]
DETECTIONS = [
    found(
        ([0, 0, 10, 10], 1, 0.9),  # d1: A exactly, IoU 1                     -> TP at every threshold
        ([0, 0, 10, 10], 1, 0.8),  # d2: A again, already taken                -> FP (duplicate)
        ([20, 0, 30, 8.8], 1, 0.6),  # d4: inside B, IoU 88 / 100 = 0.88      -> TP up to t = 0.85, FP at 0.9, 0.95
        ([60, 60, 70, 70], 3, 0.5),  # a bus where there is none
    ),
    found(([0, 0, 10, 5], 1, 0.7)),  # d3: half of C, IoU 50 / 100 = 0.5, not above 0.5 -> FP at every threshold
]
# Rank order of class 1: d1 (0.9), d2 (0.8), d3 (0.7), d4 (0.6).
#
# t <= 0.85 (8 thresholds): TP 1, 1, 1, 2; FP 0, 1, 2, 2
#   precision 1, 1/2, 1/3, 1/2; recall 1/3, 1/3, 1/3, 2/3
#   area: monotone precision 1, 1/2, 1/2, 1/2; recall steps 1/3, 0, 0, 1/3 -> 1/3 + 1/6 = 1/2 -> 50
#   11 points: r = 0, .1, .2, .30000000000000004 are reached by every rank -> 1 (4 points);
#     r = .4, .5, .6000000000000001 only by recall 2/3 -> 1/2 (3 points); r >= .7000000000000001 never -> 0
#     (4 + 1.5) / 11 = 1/2 -> 50
# t = 0.9, 0.95: d4 becomes FP: TP 1, 1, 1, 1; recall stays 1/3
#   area: 1/3 x 1 -> 33.333; 11 points: the 4 points up to .30000000000000004 -> 4/11 -> 36.364
DOG_AREA = [50.0] * 8 + [100 / 3] * 2
DOG_11POINT = [50.0] * 8 + [400 / 11] * 2


def test_class_ap_at_every_threshold():
    assert class_ap(TRUTH, DETECTIONS, 1, "area") == pytest.approx(DOG_AREA)
    assert class_ap(TRUTH, DETECTIONS, 1, "11point") == pytest.approx(DOG_11POINT)
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_a_class_with_no_detection_scores_0_and_a_class_with_no_box_has_no_ap():
    assert class_ap(TRUTH, DETECTIONS, 2, "area") == [0.0] * 10  # a box, no detection: recall never leaves 0
    assert class_ap(TRUTH, DETECTIONS, 3, "11point") == [None] * 10  # no box: undefined, whatever was detected
    result = voc_detection_ap(TRUTH, DETECTIONS, num_classes=3, metric="area")
    # means over the two classes with a box (dog and cat); the bus is left out
    assert result.AP50 == pytest.approx((50 + 0) / 2)
    assert result.AP75 == pytest.approx((50 + 0) / 2)
    assert result.AP == pytest.approx((8 * 50 + 2 * 100 / 3) / 10 / 2)  # (46.667 + 0) / 2 = 23.333
    assert result.per_class(0.5) == [pytest.approx(50.0), 0.0, None]
    assert result.per_class(0.95) == [pytest.approx(100 / 3), 0.0, None]
    assert result.table.shape == (3, 10) and np.isnan(result.table[2]).all()


def test_difficult_boxes_are_neither_positives_nor_false_positives():
    # image 2 holds a difficult dog D, detected exactly with the highest score of all (d0, 0.95)
    with_difficult = [*TRUTH, truth(([0, 0, 10, 10], 1, True))]
    with_detection = [*DETECTIONS, found(([0, 0, 10, 10], 1, 0.95))]
    # d0 counts for nothing and D is not in npos: ranks d0, d1..d4 give TP 0, 1, 1, 1, 2 and FP 0, 0, 1, 2, 2;
    # d0's precision is 0 / max(0, eps) = 0 at recall 0, which neither curve uses: the AP is unchanged
    assert class_ap(with_difficult, with_detection, 1, "area") == pytest.approx(DOG_AREA)
    assert class_ap(with_difficult, with_detection, 1, "11point") == pytest.approx(DOG_11POINT)
    # a detection that misses the difficult box (IoU 0) is an ordinary false positive:
    # ranks d0', d1..d4 at t <= 0.85: TP 0, 1, 1, 1, 2; FP 1, 1, 2, 3, 3
    #   precision 0, 1/2, 1/3, 1/4, 2/5; recall 0, 1/3, 1/3, 1/3, 2/3
    #   area: monotone 1/2, 1/2, 2/5, 2/5, 2/5; steps 0, 1/3, 0, 0, 1/3 -> 1/6 + 2/15 = 3/10 -> 30
    miss = [*DETECTIONS, found(([50, 50, 60, 60], 1, 0.95))]
    assert class_ap(with_difficult, miss, 1, "area")[:8] == pytest.approx([30.0] * 8)
    # the same box not difficult is a positive: npos 4, and d0 is a true positive
    #   ranks d0..d4 at t <= 0.85: TP 1, 2, 2, 2, 3; FP 0, 0, 1, 2, 2
    #   precision 1, 1, 2/3, 1/2, 3/5; recall 1/4, 1/2, 1/2, 1/2, 3/4
    #   area: monotone 1, 1, 2/3, 3/5, 3/5; steps 1/4, 1/4, 0, 0, 1/4 -> 1/2 + 3/20 = 0.65 -> 65
    plain = [*TRUTH, truth(([0, 0, 10, 10], 1, False))]
    assert class_ap(plain, with_detection, 1, "area")[0] == pytest.approx(65.0)


def test_a_detection_takes_its_best_box_even_when_that_box_is_taken():
    # X = (0, 0, 10, 10) and Y = (3, 0, 13, 10); e1 = X exactly takes X.
    # e2 = (1, 0, 11, 10): IoU with X = 90 / 110 = 0.818, with Y = 80 / 120 = 0.667: X is its best box,
    # taken, so e2 is a duplicate (FP) although Y is free and above 0.5 -> TP 1, 1; recall 1/2, 1/2
    # area: 1/2 x 1 -> 50 (a matcher that fell back to Y would score 100)
    image = [truth(([0, 0, 10, 10], 1, False), ([3, 0, 13, 10], 1, False))]
    detections = [found(([0, 0, 10, 10], 1, 0.9), ([1, 0, 11, 10], 1, 0.8))]
    assert class_ap(image, detections, 1, "area")[0] == pytest.approx(50.0)


def test_11_point_recall_points_are_detectron2s_floats():
    # ten boxes, three found exactly (precision 1) and nothing else: recall ends at 3/10 = 0.3,
    # below the point 3 x 0.1 = 0.30000000000000004, so only r = 0, 0.1, 0.2 count: 3/11 -> 27.27
    # (with an exact 0.3 point it would be 4/11); area: 3/10 x 1 -> 30
    image = [truth(*(([10 * k, 0, 10 * k + 5, 5], 1, False) for k in range(10)))]
    detections = [found(*(([10 * k, 0, 10 * k + 5, 5], 1, 0.9 - 0.1 * k) for k in range(3)))]
    assert class_ap(image, detections, 1, "11point")[0] == pytest.approx(300 / 11)
    assert class_ap(image, detections, 1, "area")[0] == pytest.approx(30.0)


def test_equal_scores_keep_their_input_order():
    # two detections of score 0.5 in one image with one box: the first listed is the true positive.
    # FP first then TP: precision 0, 1/2 at recall 0, 1 -> area 1/2 -> 50; TP first: 100
    image = [truth(([0, 0, 10, 10], 1, False))]
    miss_first = [found(([50, 50, 60, 60], 1, 0.5), ([0, 0, 10, 10], 1, 0.5))]
    hit_first = [found(([0, 0, 10, 10], 1, 0.5), ([50, 50, 60, 60], 1, 0.5))]
    assert class_ap(image, miss_first, 1, "area")[0] == pytest.approx(50.0)
    assert class_ap(image, hit_first, 1, "area")[0] == pytest.approx(100.0)


def test_iou_equals_detectron2s_inclusive_pixel_formula():
    # detectron2 scores a prediction (x1, y1, x2, y2) as (x1 + 1, y1 + 1, x2, y2) against the XML's
    # 1-based inclusive box, both with "+ 1" widths; the XML box (xmin, ymin, xmax, ymax) is read here as
    # (xmin - 1, ymin - 1, xmax, ymax). Both give one IoU.
    def inclusive_iou(p, g):
        iw = max(min(p[2], g[2]) - max(p[0], g[0]) + 1, 0)
        ih = max(min(p[3], g[3]) - max(p[1], g[1]) + 1, 0)
        inter = iw * ih
        area = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter
        return inter / area

    rng = np.random.default_rng(0)
    for _ in range(50):
        xml = np.sort(rng.integers(1, 60, size=(2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]].astype(float)
        prediction = np.sort(rng.uniform(0, 60, size=(2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]]
        continuous = xml - np.array([1, 1, 0, 0])
        shifted = prediction + np.array([1, 1, 0, 0])
        expected = inclusive_iou(shifted, xml)
        assert pairwise_iou(prediction[None], continuous[None])[0, 0] == pytest.approx(expected)
    # (1, 1, 10, 10) in the XML is 10 x 10 pixels: the continuous (0, 0, 10, 10) matches it with IoU 1
    assert pairwise_iou(np.array([[0.0, 0, 10, 10]]), np.array([[1.0, 1, 10, 10]]) - [1, 1, 0, 0])[0, 0] == 1.0


def test_refusals():
    with pytest.raises(ValueError, match="2 images of ground truth but detections for 1"):
        voc_detection_ap(TRUTH, DETECTIONS[:1], 3, "area")
    with pytest.raises(ValueError, match="unknown AP metric 'coco'"):
        voc_detection_ap(TRUTH, DETECTIONS, 3, "coco")
    with pytest.raises(ValueError, match="no class has a box that is not difficult"):
        voc_detection_ap([truth(([0, 0, 1, 1], 1, True))], [found()], 1, "area")
