"""Detection AP as detectron2's ``PascalVOCDetectionEvaluator`` scores it (the VOC devkit's rules).

For one class and one IoU threshold t:

1. The class's boxes in every image are the ground truth; ``npos`` counts
   those not marked difficult.
2. The class's detections of all images are ranked by score, highest first
   (equal scores keep their input order).
3. Each detection takes the box of its image with the highest IoU (the first
   of equals). If that IoU is above t (strictly): a difficult box makes the
   detection count for nothing (neither a true nor a false positive); a box
   not taken yet makes it a true positive and is taken; a taken box makes it
   a false positive (a duplicate). Otherwise, or with no box in its image, it
   is a false positive. A detection never falls back to its second-best box.
4. Recall is the running count of true positives over ``npos``; precision is
   that count over the running count of true and false positives (0 while
   both are 0).
5. AP from the curve, in percent:

   - ``11point`` (VOC07, detectron2's choice for the 2007 test set): the mean,
     over the 11 recall points ``k * 0.1`` (k = 0..10), of the highest
     precision at a recall of at least that point (0 where recall never gets
     there). The points are the floating-point values detectron2 uses
     (``0.30000000000000004``, ``0.6000000000000001``,
     ``0.7000000000000001``), so a recall of exactly 3/10 does not reach the
     0.3 point.
   - ``area`` (VOC 2010+): precision made monotone (each replaced by the
     highest precision at an equal or higher recall) and summed over the
     recall steps.

AP50 and AP75 are the class means at t = 0.5 and 0.75; AP is the mean over
t = 0.50, 0.55, ..., 0.95 of the class means (detectron2's "AP" of VOC).

Boxes are continuous ``(x1, y1, x2, y2)`` with areas ``(x2 - x1) * (y2 - y1)``.
detectron2 reads VOC's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` as
``(xmin - 1, ymin - 1, xmax, ymax)``; its evaluator adds the 1 back to the
predictions' ``x1, y1`` and counts ``xmax - xmin + 1`` pixels per side, which
gives the same IoUs as these coordinates.

Where this differs from detectron2: a class without a single non-difficult
box has no AP (``None``) and is left out of the means, where detectron2 counts
0 with the 11-point metric and NaN with ``area``; scores and boxes are used at
full precision, where detectron2 rounds them (3 and 1 decimals) into text
files first, which can only reorder near-equal scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

METRICS = ("11point", "area")
IOU_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(50, 100, 5))  # 0.5, 0.55, ..., 0.95
ELEVEN_POINTS = np.arange(11) * 0.1  # 0, 0.1, 0.2, 0.30000000000000004, ... as detectron2 has them


class Truth(NamedTuple):
    """The labelled boxes of one image (``M`` of them)."""

    boxes: np.ndarray  # M x 4 (x1, y1, x2, y2)
    labels: np.ndarray  # M class ids 1..K
    difficult: np.ndarray  # M bool


class Detections(NamedTuple):
    """What a detector found in one image (``N`` detections)."""

    boxes: np.ndarray  # N x 4 (x1, y1, x2, y2)
    labels: np.ndarray  # N class ids 1..K
    scores: np.ndarray  # N


class VocAP(NamedTuple):
    """AP of every class at every IoU threshold, and the means the result file reports (percent)."""

    table: np.ndarray  # K x 10: class k (id k + 1) at IOU_THRESHOLDS; NaN: the class has no non-difficult box
    AP: float  # mean over thresholds of the class mean
    AP50: float
    AP75: float

    def per_class(self, threshold: float = 0.5) -> list[float | None]:
        """Each class's AP at ``threshold`` (one of :data:`IOU_THRESHOLDS`); None where undefined."""
        column = self.table[:, IOU_THRESHOLDS.index(threshold)]
        return [None if np.isnan(v) else float(v) for v in column]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (``N x 4``) with every box of ``b`` (``M x 4``) -> ``N x M``."""
    a, b = a[:, None, :], b[None, :, :]  # N x 1 x 4, 1 x M x 4
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height  # N x M
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])  # N x 1
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # 1 x M
    return inter / (area_a + area_b - inter)


class _Ranked(NamedTuple):
    """One class's detections in rank order, each with its best box (see the module docstring, step 3)."""

    overlap: np.ndarray  # D: IoU with the best box of its image; -inf with no box
    box: np.ndarray  # D: index of that box among all the class's boxes; -1 with none
    difficult: np.ndarray  # D bool: that box is difficult
    npos: int


def _rank(truth: Sequence[Truth], detections: Sequence[Detections], label: int) -> _Ranked:
    scores, overlap, box, difficult = [], [], [], []
    offset, npos = 0, 0
    for gt, det in zip(truth, detections):
        mine = gt.labels == label
        gt_boxes, gt_difficult = gt.boxes[mine].astype(np.float64), gt.difficult[mine].astype(bool)
        npos += int((~gt_difficult).sum())
        found = det.labels == label
        n = int(found.sum())
        if len(gt_boxes) and n:
            ious = pairwise_iou(det.boxes[found].astype(np.float64), gt_boxes)  # n x M
            best = np.argmax(ious, axis=1)  # n: the first of equals
            overlap.append(ious[np.arange(n), best]), box.append(offset + best), difficult.append(gt_difficult[best])
        else:
            overlap.append(np.full(n, -np.inf)), box.append(np.full(n, -1)), difficult.append(np.zeros(n, bool))
        scores.append(det.scores[found].astype(np.float64))
        offset += len(gt_boxes)
    order = np.argsort(-np.concatenate([np.zeros(0), *scores]), kind="stable")
    return _Ranked(
        np.concatenate([np.zeros(0), *overlap])[order],
        np.concatenate([np.zeros(0, np.int64), *box]).astype(np.int64)[order],
        np.concatenate([np.zeros(0, bool), *difficult]).astype(bool)[order],
        npos,
    )


def _true_false(ranked: _Ranked, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per ranked detection: true positive, false positive (both 0: it hit a difficult box)."""
    above = ranked.overlap > threshold
    candidate = above & ~ranked.difficult  # may take its box
    where = np.flatnonzero(candidate)
    _, first = np.unique(ranked.box[where], return_index=True)  # the first in rank order takes the box
    tp = np.zeros(len(above))
    tp[where[first]] = 1.0
    fp = (~above | candidate).astype(np.float64) - tp  # below t, or a duplicate of a taken box
    return tp, fp


def curve_ap(recall: np.ndarray, precision: np.ndarray, metric: str) -> float:
    """AP (0..1) of a precision/recall curve given at every rank; ``metric`` is ``11point`` or ``area``."""
    if metric == "11point":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in ELEVEN_POINTS]))
    if metric == "area":
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        steps = np.diff(np.concatenate([[0.0], recall]))
        return float(np.sum(steps * envelope))
    raise ValueError(f"unknown AP metric {metric!r}; choose one of {', '.join(METRICS)}")


def class_ap(truth: Sequence[Truth], detections: Sequence[Detections], label: int, metric: str) -> list[float | None]:
    """AP (percent) of class ``label`` at each of :data:`IOU_THRESHOLDS`; None when it has no non-difficult box."""
    ranked = _rank(truth, detections, label)
    if ranked.npos == 0:
        return [None] * len(IOU_THRESHOLDS)
    out = []
    for threshold in IOU_THRESHOLDS:
        tp, fp = (np.cumsum(x) for x in _true_false(ranked, threshold))
        recall = tp / ranked.npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out.append(100.0 * curve_ap(recall, precision, metric))
    return out


def voc_detection_ap(truth: Sequence[Truth], detections: Sequence[Detections], num_classes: int, metric: str) -> VocAP:
    """Scores ``detections`` against ``truth`` (the same images, in the same order) for classes 1..``num_classes``.

    Raises:
        ValueError: the lists differ in length, ``metric`` is unknown, or no
            class has a non-difficult box (AP is undefined).
    """
    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} images of ground truth but detections for {len(detections)}")
    if metric not in METRICS:
        raise ValueError(f"unknown AP metric {metric!r}; choose one of {', '.join(METRICS)}")
    rows = [class_ap(truth, detections, k, metric) for k in range(1, num_classes + 1)]
    table = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)  # K x 10
    defined = ~np.isnan(table[:, 0])
    if not defined.any():
        raise ValueError("no class has a box that is not difficult: detection AP is undefined")
    means = table[defined].mean(axis=0)  # 10: the class mean at each threshold
    return VocAP(
        table=table,
        AP=float(means.mean()),
        AP50=float(means[IOU_THRESHOLDS.index(0.5)]),
        AP75=float(means[IOU_THRESHOLDS.index(0.75)]),
    )
