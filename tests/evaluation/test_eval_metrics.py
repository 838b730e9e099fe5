"""Metrics against hand-computed values; pycocotools as the reference for detection AP."""

import math

import numpy as np
import pytest
import torch

from densecl.evaluation.knn import weighted_knn
from densecl.evaluation.metrics import (
    average_precision,
    average_precision_11point,
    coco_average_precision,
    confusion_matrix,
    iou_from_confusion,
    top1_accuracy,
)
from densecl.evaluation.results import summarise, summary_table


def test_average_precision_of_a_hand_made_ranking():
    # ranks: + - + - +   precision at the positives 1, 2/3, 3/5, each worth recall 1/3
    scores, targets = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1]
    assert average_precision(scores, targets) == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)
    # 11-point: recall 0..0.3 -> 1, 0.4..0.6 -> 2/3, 0.7..1.0 -> 3/5
    assert average_precision_11point(scores, targets) == pytest.approx(100 * (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11)


def test_average_precision_interpolates_precision_and_ignores_input_order():
    # ranks: - + +  precision 1/2 at recall 1/2 is lifted to the later 2/3
    assert average_precision([0.9, 0.8, 0.7], [0, 1, 1]) == pytest.approx(100 * 2 / 3)
    assert average_precision([0.7, 0.9, 0.8], [1, 0, 1]) == pytest.approx(100 * 2 / 3)
    assert average_precision([3, 2, 1], [1, 1, 0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="positive"):
        average_precision([1, 2], [0, 0])


def test_confusion_matrix_skips_ignored_pixels():
    target = torch.tensor([[0, 0, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 1, 1], [0, 2, 2]])
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="label values"):
        confusion_matrix(pred, torch.full_like(target, 7), num_classes=3)


def test_miou_from_a_known_confusion_matrix_leaves_out_absent_classes():
    # rows = true class; class 2 has no true pixel but is predicted once
    cm = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    iou = iou_from_confusion(cm)
    assert iou.per_class[0] == pytest.approx(100 * 5 / (6 + 7 - 5))
    assert iou.per_class[1] == pytest.approx(100 * 3 / (6 + 4 - 3))
    assert math.isnan(iou.per_class[2])
    assert iou.present == [True, True, False]
    assert iou.mean == pytest.approx(100 * (5 / 8 + 3 / 7) / 2)
    assert iou.pixel_accuracy == pytest.approx(100 * 8 / 12)


def test_top1():
    assert top1_accuracy(torch.tensor([1, 2, 3, 0]), torch.tensor([1, 2, 0, 0])) == pytest.approx(75.0)


def test_knn_is_perfect_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 16)  # 3 orthogonal class directions

    def sample(n):
        y = torch.arange(n) % 3
        x = centres[y] + 0.1 * torch.randn(n, 16, generator=g)
        return torch.nn.functional.normalize(x, dim=1), y

    x_train, y_train = sample(60)
    x_val, y_val = sample(30)
    votes = weighted_knn(x_train, y_train, x_val, num_classes=3, k=20, temperature=0.07)
    assert votes.shape == (30, 3)
    assert top1_accuracy(votes.argmax(1), y_val) == 100.0
    # k larger than the train set is capped, not an error
    assert weighted_knn(x_train[:5], y_train[:5], x_val, 3, k=20, temperature=0.07).shape == (30, 3)


def _coco_gt():
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    masks = np.zeros((3, 32, 32), np.uint8)
    masks[0, 2:12, 3:15] = 1
    masks[1, 16:30, 10:20] = 1
    masks[2, 5:25, 5:25] = 1
    anns = []
    for i, (m, image_id, cat) in enumerate(zip(masks, (1, 1, 2), (1, 2, 1)), start=1):
        rle = mask_utils.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "id": i,
                "image_id": image_id,
                "category_id": cat,
                "iscrowd": 0,
                "area": float(m.sum()),
                "bbox": mask_utils.toBbox(rle).tolist(),
                "segmentation": rle,
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 32, "height": 32}, {"id": 2, "width": 32, "height": 32}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    coco.createIndex()
    return coco, anns


def test_coco_ap_is_100_for_perfect_predictions_and_lower_otherwise():
    coco, anns = _coco_gt()
    perfect_boxes = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in anns
    ]
    perfect_masks = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 1.0}
        for a in anns
    ]
    box = coco_average_precision(coco, perfect_boxes, "bbox")
    assert (
        box["AP"] == pytest.approx(100.0)
        and box["AP50"] == pytest.approx(100.0)
        and box["AP75"] == pytest.approx(100.0)
    )
    assert coco_average_precision(coco, perfect_masks, "segm")["AP"] == pytest.approx(100.0)
    shifted = [dict(d, bbox=[d["bbox"][0] + 3, d["bbox"][1] + 3, d["bbox"][2], d["bbox"][3]]) for d in perfect_boxes]
    assert coco_average_precision(coco, shifted, "bbox")["AP"] < 100.0
    assert coco_average_precision(coco, [], "bbox")["AP"] == 0.0


def test_seed_summary_and_table():
    s = summarise([{"mAP": 80.0}, {"mAP": 82.0}, {"mAP": 84.0}])
    assert s["mAP"]["mean"] == pytest.approx(82.0)
    assert s["mAP"]["std"] == pytest.approx(2.0)  # sample standard deviation
    assert summarise([{"mAP": 80.0}])["mAP"]["std"] == 0.0
    records = [
        {
            "protocol": "svm",
            "headline": ["mAP"],
            "metrics": summarise([{"mAP": 50.0}]),
            "weights": {"source": "random", "arch": "resnet18"},
        },
        {
            "protocol": "seg-probe",
            "headline": ["mIoU"],
            "metrics": summarise([{"mIoU": 20.0}]),
            "weights": {"source": "random", "arch": "resnet18"},
        },
        {
            "protocol": "svm",
            "headline": ["mAP"],
            "metrics": summarise([{"mAP": 60.0}]),
            "weights": {"source": "a.pt", "arch": "resnet18"},
        },
    ]
    lines = summary_table(records).splitlines()
    assert len(lines) == 4  # header, rule, two weights
    assert "svm mAP" in lines[0] and "seg-probe mIoU" in lines[0]
    assert "50.00" in lines[2] and "20.00" in lines[2] and "60.00" in lines[3] and lines[3].split("|")[3].strip() == "-"
