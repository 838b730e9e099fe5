"""VOC07 SVM classification on frozen features (supplementary Table 1, mAP).

Protocol (Goyal et al., "Scaling and benchmarking self-supervised visual
representation learning", ICCV 2019, as the paper uses it):

1. Frozen backbone (eval mode); each image resized (shorter side) and
   centre-cropped to ``image_size``; one stage (C5 by default) global-average
   pooled and L2-normalised.
2. Per class, a one-vs-rest linear SVM (``sklearn.svm.LinearSVC``: squared
   hinge, L2 penalty, positives weighted ``positive_weight`` = 2 as in that
   benchmark). The cost C is chosen per class from ``costs`` by stratified
   k-fold cross-validation on the train split, maximising AP; ties go to the
   smaller cost. The SVM is then refit on the whole train split.
3. Per-class AP on the val split and mAP over the classes that have a
   positive in both splits. AP is :func:`~densecl.evaluation.metrics.average_precision`
   (area under the interpolated PR curve, VOC 2010+) by default;
   ``ap="11point"`` gives VOC07's 11-point variant.

VOC "difficult" images (label 0) are left out of that class's training and
AP. Single-label data (ImageFolder) runs the same one-vs-rest code. The seed
only moves the cross-validation folds and liblinear's coordinate order.

CPU example (exported scenes)::

    densecl data export-scenes --format voc --out runs/scenes-voc --size 96
    densecl eval svm --weights runs/demo/checkpoint.pt --data runs/scenes-voc --image-size 96

VOC07 (paper setting: train on trainval, test on test)::

    densecl eval svm --weights ckpt.pt --data VOCdevkit/VOC2007 --train-split trainval --val-split test
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.datasets import ClassificationSplit, describe_splits, read_classification_splits
from densecl.evaluation.features import parse_stage, train_val_features
from densecl.evaluation.metrics import AP_VARIANTS
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class SVMConfig(options.ClassificationData):
    costs: tuple[float, ...] = option((0.01, 0.1, 1.0, 10.0, 100.0), "SVM costs C to cross-validate")
    cv_folds: int = option(3, "cross-validation folds for choosing C")
    positive_weight: float = option(2.0, "SVM class weight of positives")
    ap: str = option(
        "area",
        "AP variant: area (VOC 2010+, full interpolated PR curve) or 11point (VOC07)",
        choices=tuple(AP_VARIANTS),
    )
    batch_size: int = options.batch_size(64)
    workers: int = options.workers()
    device: str = options.device()


def load_data(config: SVMConfig) -> tuple[ClassificationSplit, ClassificationSplit]:
    parse_stage(config.stage)
    return read_classification_splits(config.data, config.train_split, config.val_split)


def evaluate(
    backbone: ResNetBackbone, data: tuple[ClassificationSplit, ClassificationSplit], config: SVMConfig, seeds: list[int]
) -> Evaluation:
    train, val = data
    x_train, x_val = train_val_features(backbone, data, config)
    x_train, x_val = x_train.numpy(), x_val.numpy()  # N x C, unit rows
    ap_fn = AP_VARIANTS[config.ap]
    per_seed, details = [], []
    for seed in seeds:
        aps: dict[str, float | None] = {}
        costs: dict[str, float | None] = {}
        for k, name in enumerate(train.classes):
            svm, costs[name] = _fit_class(x_train, train.targets[:, k], config, seed)
            keep = val.targets[:, k] >= 0
            y_val = val.targets[keep, k]
            aps[name] = None if svm is None or y_val.sum() == 0 else ap_fn(svm.decision_function(x_val[keep]), y_val)
        scored = [v for v in aps.values() if v is not None]
        if not scored:
            raise InputError(f"no class has a positive image in both splits of {config.data}; svm mAP is undefined")
        skipped = [name for name, v in aps.items() if v is None]
        if skipped and seed == seeds[0]:
            warn(
                f"no AP for {', '.join(skipped)} (no positive in train or val); mAP averages the other "
                f"{len(scored)} classes"
            )
        per_seed.append({"mAP": float(np.mean(scored))})
        details.append({"seed": seed, "ap": aps, "cost": costs})
    data_info = describe_splits(config.data, train, val, config.train_split, config.val_split)
    return Evaluation(headline=["mAP"], per_seed=per_seed, details=details, data=data_info)


def _fit_class(x: np.ndarray, y: np.ndarray, config: SVMConfig, seed: int):
    """One class's SVM with its cross-validated cost; ``(None, None)`` without positives and negatives.

    Args:
        x: ``N x C`` features. y: ``N`` in {1, 0, -1 = ignored}.
    """
    from sklearn.model_selection import StratifiedKFold

    keep = y >= 0
    x, y = x[keep], y[keep].astype(np.int64)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None, None
    ap_fn = AP_VARIANTS[config.ap]
    folds = min(config.cv_folds, n_pos, n_neg)
    costs = sorted(config.costs)
    if folds >= 2 and len(costs) > 1:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        cv_ap = [
            np.mean(
                [
                    ap_fn(_fit(cost, config, seed, x[fit], y[fit]).decision_function(x[held]), y[held])
                    for fit, held in splitter.split(x, y)
                ]
            )
            for cost in costs
        ]
        cost = costs[int(np.argmax(cv_ap))]  # argmax takes the first maximum: the smallest cost of a tie
    else:  # too few positives or negatives to cross-validate: the grid's middle
        cost = costs[len(costs) // 2]
    return _fit(cost, config, seed, x, y), float(cost)


def _fit(cost: float, config: SVMConfig, seed: int, x: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    svm = LinearSVC(
        C=cost,
        loss="squared_hinge",
        penalty="l2",
        dual="auto",
        class_weight={1: config.positive_weight, 0: 1.0},
        max_iter=2000,
        random_state=seed,
    )
    with warnings.catch_warnings():  # the iteration cap is reached harmlessly on tiny or separable data
        warnings.simplefilter("ignore", ConvergenceWarning)
        return svm.fit(x, y)


PROTOCOL = Protocol("svm", SVMConfig, load_data, evaluate, description=__doc__)
