"""Linear classification on frozen pooled features (top-1).

Features are extracted once (frozen backbone, eval mode, centre crop, no
augmentation), then a single ``nn.Linear`` is trained on them with softmax
cross-entropy: SGD with momentum 0.9, cosine learning rate, ``epochs`` passes.
Each feature dimension is first standardised with the train split's mean and
standard deviation, a fixed affine map that makes one learning rate work for
any backbone (it is the non-affine BatchNorm of MAE's linear probe, frozen).

This is the fast, precomputed variant, not MoCo's 100-epoch linear
evaluation with random-resized-crop augmentation on ImageNet; numbers are
comparable between backbones evaluated here, not to the paper's ImageNet
linear accuracy. Single-label data only.

CPU example::

    densecl eval linear --weights runs/demo/checkpoint.pt --data runs/scenes-folder --image-size 96
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densecl.evaluation import options
from densecl.evaluation.datasets import ClassificationSplit, describe_splits, read_classification_splits
from densecl.evaluation.features import parse_stage, train_val_features
from densecl.evaluation.metrics import top1_accuracy
from densecl.evaluation.options import option
from densecl.evaluation.probe import train_probe
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class LinearConfig(options.ClassificationData):
    epochs: int = options.epochs(100)
    lr: float = options.lr(0.1)
    weight_decay: float = options.weight_decay(0.0)
    batch_size: int = options.batch_size(256)  # for the classifier; feature extraction uses extract_batch_size
    extract_batch_size: int = option(64, "images per batch for feature extraction")
    workers: int = options.workers()
    device: str = options.device()


def load_data(config: LinearConfig) -> tuple[ClassificationSplit, ClassificationSplit]:
    parse_stage(config.stage)
    return read_classification_splits(config.data, config.train_split, config.val_split, single_label=True)


def train_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, config: LinearConfig, seed: int) -> nn.Module:
    """Fits ``standardise -> Linear`` to ``N x C`` features and ``N`` labels (see
    :func:`~densecl.evaluation.probe.train_probe`).
    """
    mean, std = x.mean(dim=0), x.std(dim=0).clamp(min=1e-6)  # C each
    return train_probe(
        nn.Linear(x.shape[1], num_classes),
        mean,
        std,
        x.shape[0],
        lambda probe, idx: F.cross_entropy(probe(x[idx]), y[idx]),
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=seed,
    )


def evaluate(
    backbone: ResNetBackbone,
    data: tuple[ClassificationSplit, ClassificationSplit],
    config: LinearConfig,
    seeds: list[int],
) -> Evaluation:
    train, val = data
    x_train, x_val = train_val_features(backbone, data, config, config.extract_batch_size)
    y_train, y_val = torch.from_numpy(train.labels()), torch.from_numpy(val.labels())
    per_seed = []
    for seed in seeds:
        model = train_linear(x_train, y_train, len(train.classes), config, seed)
        with torch.no_grad():
            per_seed.append({"top1": top1_accuracy(model(x_val).argmax(dim=1), y_val)})
    data_info = describe_splits(config.data, train, val, config.train_split, config.val_split)
    return Evaluation(headline=["top1"], per_seed=per_seed, data=data_info)


PROTOCOL = Protocol("linear", LinearConfig, load_data, evaluate, description=__doc__)
