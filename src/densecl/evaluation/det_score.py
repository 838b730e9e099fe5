"""Scoring a fine-tuned detector: every rank predicts its share of the val images, rank 0 scores them all
(COCOeval, or VOC AP as detectron2 computes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

from densecl import distributed
from densecl.errors import InputError
from densecl.evaluation.datasets import CocoSplit, VocDetectionSplit
from densecl.evaluation.det_data import DetectionSamples, Split, voc_metric
from densecl.evaluation.finetune import unwrap
from densecl.evaluation.metrics import coco_average_precision
from densecl.evaluation.results import warn
from densecl.evaluation.voc_ap import Detections, Truth, voc_detection_ap
from densecl.inputs import input_of

if TYPE_CHECKING:
    from densecl.evaluation.det_config import DetConfig

EVAL_BATCH = 4  # images per forward in evaluation


@torch.no_grad()
def predict(model: nn.Module, split: Split, config: DetConfig) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """This process's share of ``split`` (every world_size-th image) -> ``(index, output on the CPU)``.

    An output holds ``boxes`` N x 4 xyxy in image pixels, ``labels`` N, ``scores``
    N and, for Mask R-CNN, ``masks`` N x 1 x H x W.
    """
    model.eval()
    dataset = DetectionSamples(split, masks=False, flip=False, inputs=input_of(unwrap(model)))
    mine = np.arange(distributed.rank(), len(split), distributed.world_size())
    out = []
    for chunk in np.array_split(mine, max(1, len(mine) // EVAL_BATCH)):
        images = [dataset[(i, 0)][0].to(config.device) for i in chunk.tolist()]
        if not images:
            continue
        for i, result in zip(chunk.tolist(), model(images)):
            out.append((i, {k: v.cpu() for k, v in result.items()}))
    return out


class Scored(NamedTuple):
    """One seed's evaluation: the metrics, and the extras a result keeps in ``details`` (VOC: per-class AP50)."""

    metrics: dict[str, float | None]
    details: dict


def validate(model: nn.Module, split: Split, config: DetConfig) -> Scored | None:
    """Metrics and per-seed details of ``model`` on every image of ``split`` (rank 0; None on the others)."""
    if isinstance(split, VocDetectionSplit):
        mine = [
            (i, Detections(o["boxes"].numpy(), o["labels"].numpy(), o["scores"].numpy()))
            for i, o in predict(model, split, config)
        ]
        gathered = distributed.gather_objects(mine)
        if distributed.rank() != 0:
            return None
        found = dict(pair for part in gathered for pair in part)
        return voc_scores(split, [found[i] for i in range(len(split))], config)
    records = coco_records(split, predict(model, split, config), config.task == "mask")
    gathered = distributed.gather_objects(records)
    if distributed.rank() != 0:
        return None
    boxes = [r for part in gathered for r in part[0]]
    segms = [r for part in gathered for r in part[1]]
    metrics = {f"bbox_{k}": v for k, v in coco_average_precision(split.coco, boxes, "bbox").items()}
    if config.task == "mask":
        metrics.update({f"segm_{k}": v for k, v in coco_average_precision(split.coco, segms, "segm").items()})
    return Scored(metrics, {})


def coco_records(split: CocoSplit, predicted, masks: bool) -> tuple[list[dict], list[dict]]:
    """COCO result dicts (boxes ``[x, y, w, h]``; masks as RLE) of ``(index, output)`` pairs."""
    from pycocotools import mask as mask_utils

    boxes, segms = [], []
    for index, out in predicted:
        image_id = split.image_ids[index]
        category = [split.category_ids[int(k) - 1] for k in out["labels"].tolist()]
        for b, c, s in zip(out["boxes"].tolist(), category, out["scores"].tolist()):
            boxes.append(
                {"image_id": image_id, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            )
        if masks:
            binary = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)  # N x H x W
            for m, c, s in zip(binary, category, out["scores"].tolist()):
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                segms.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": s})
    return boxes, segms


def voc_scores(split: VocDetectionSplit, detections: list[Detections], config: DetConfig) -> Scored:
    metric, reason = voc_metric(config, split)
    truth = [Truth(o.boxes, o.labels, o.difficult) for o in split.objects]
    try:
        scores = voc_detection_ap(truth, detections, split.num_classes, metric)
    except ValueError as e:
        raise InputError(f"{split.roots[0]} ({split.split}): {e}") from None
    per_class = dict(zip(split.classes, scores.per_class(0.5)))
    absent = [name for name, ap in per_class.items() if ap is None]
    if absent:
        warn(
            f"class(es) {', '.join(absent)} have no box in the {split.split} split (difficult ones do not count); "
            f"the APs average the other {len(per_class) - len(absent)}"
        )
    metrics = {"bbox_AP": scores.AP, "bbox_AP50": scores.AP50, "bbox_AP75": scores.AP75}
    details = {"ap_metric": metric, "ap_metric_reason": reason, "AP50_per_class": per_class, "absent_in_val": absent}
    return Scored(metrics, details)
