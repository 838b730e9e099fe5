"""Metrics as pure functions: average precision, confusion matrix and IoU, top-1, COCO AP.

Every score is returned in percent (0-100), as the paper's tables print them.

Average precision (:func:`average_precision`) is the area under the full
precision/recall curve after making precision monotone (each precision is
replaced by the best precision at any equal or higher recall), integrated at
every recall step. This is the PASCAL VOC 2010+ definition; the VOC07
11-point variant (:func:`average_precision_11point`) samples the same
interpolated curve at recall 0, 0.1, ..., 1 and averages. The VOC07 SVM
benchmark tables are usually computed with the first; both are offered and
the ``svm`` protocol records which one it used.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, NamedTuple

import numpy as np
import torch


def _interpolated_pr(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and monotone (interpolated) precision at each rank, highest score first."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"scores and targets differ in length: {scores.shape} vs {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be 0 or 1 (drop ignored examples before calling)")
    n_pos = int(targets.sum())
    if n_pos == 0:
        raise ValueError("average precision is undefined without a positive example")
    order = np.argsort(-scores, kind="stable")  # ties keep input order
    hits = targets[order].astype(np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / n_pos
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at >= this recall
    return recall, precision


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the interpolated precision/recall curve (VOC 2010+), in percent.

    Args:
        scores: ``N`` classifier scores, higher = more confident positive.
        targets: ``N`` labels in {0, 1}; at least one 1.
    """
    recall, precision = _interpolated_pr(scores, targets)
    recall_step = np.diff(np.concatenate([[0.0], recall]))
    return float(100.0 * np.sum(recall_step * precision))


def average_precision_11point(scores: np.ndarray, targets: np.ndarray) -> float:
    """VOC07 11-point AP: mean interpolated precision at recall 0, 0.1, ..., 1, in percent."""
    recall, precision = _interpolated_pr(scores, targets)
    points = []
    for t in np.linspace(0.0, 1.0, 11):
        reached = recall >= t - 1e-12
        points.append(precision[reached].max() if reached.any() else 0.0)
    return float(100.0 * np.mean(points))


AP_VARIANTS = {"area": average_precision, "11point": average_precision_11point}


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs over the labelled pixels.

    Args:
        pred: predicted class per pixel, any shape, values in ``[0, K)``.
        target: true class per pixel, same shape; ``ignore_index`` pixels are skipped.
        num_classes: K.

    Returns:
        ``K x K`` int64, row = true class, column = predicted class.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ in shape")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel() and (int(target.max()) >= num_classes or int(target.min()) < 0):
        raise ValueError(f"label values must lie in [0, {num_classes}) or equal {ignore_index}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class IoU(NamedTuple):
    """Intersection over union from a confusion matrix."""

    per_class: list[float]  # percent; NaN for classes with no true pixel
    mean: float  # mean over present classes, percent
    present: list[bool]  # class has at least one true (labelled) pixel
    pixel_accuracy: float  # percent


def iou_from_confusion(cm: torch.Tensor) -> IoU:
    """Per-class IoU = TP / (TP + FP + FN); mIoU averages the classes present in the labels.

    A class with no true pixel is absent: its IoU is NaN and it is left out of
    the mean (the caller warns). Predicting an absent class still costs the
    present classes it was confused with, through their false negatives.
    """
    cm = cm.double()
    tp = cm.diag()
    true = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    present = true > 0
    if not bool(present.any()):
        raise ValueError("no labelled pixel: the confusion matrix is empty")
    iou = torch.where(present, tp / (true + predicted - tp).clamp(min=1), torch.full_like(tp, float("nan")))
    return IoU(
        per_class=(100.0 * iou).tolist(),
        mean=float(100.0 * iou[present].mean()),
        present=present.tolist(),
        pixel_accuracy=float(100.0 * tp.sum() / cm.sum()),
    )


def top1_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Percent of ``pred == target`` (``N`` class indices each)."""
    if pred.numel() == 0:
        raise ValueError("top-1 accuracy of an empty set")
    return float(100.0 * (pred == target).double().mean())


COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_average_precision(coco_gt: Any, detections: list[dict], iou_type: str) -> dict[str, float | None]:
    """COCO AP through pycocotools' ``COCOeval``, in percent.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` with the ground truth.
        detections: COCO result dicts (``image_id``, ``category_id``, ``score``
            and ``bbox`` as ``[x, y, w, h]`` or ``segmentation`` as RLE).
        iou_type: ``"bbox"`` or ``"segm"``.

    Returns:
        ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``;
        all 0 when there is no detection (COCOeval cannot load an empty list);
        ``None`` where COCOeval has no ground truth to score (it reports -1).
    """
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {k: 0.0 for k in COCO_STATS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: (None if v < 0 else float(100.0 * v)) for k, v in zip(COCO_STATS, evaluator.stats[:6])}
