"""Weighted k-nearest-neighbour classification on frozen features (top-1).

The protocol of InstDisc (Wu et al., CVPR 2018) as DINO reports it: pooled,
L2-normalised features; for each val image its ``k`` most cosine-similar
train images vote for their class with weight ``exp(s / T)``; the class with
the largest total wins. ``k = 20``, ``T = 0.07``. Single-label data only.
Deterministic: the seed changes nothing (kept for a uniform CLI).

CPU example::

    densecl data export-scenes --format imagefolder --out runs/scenes-folder --size 96
    densecl eval knn --weights runs/demo/checkpoint.pt --data runs/scenes-folder --image-size 96
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densecl.evaluation import options
from densecl.evaluation.datasets import ClassificationSplit, describe_splits, read_classification_splits
from densecl.evaluation.features import parse_stage, train_val_features
from densecl.evaluation.metrics import top1_accuracy
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class KNNConfig(options.ClassificationData):
    k: int = option(20, "neighbours")
    temperature: float = option(0.07, "vote weight exp(similarity / temperature)")
    batch_size: int = options.batch_size(64)
    workers: int = options.workers()
    device: str = options.device()


def weighted_knn(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class votes of the k nearest train features, weighted by ``exp(cosine / T)``.

    Args:
        train_x: ``N x C`` L2-normalised. train_y: ``N`` class indices.
        query_x: ``Q x C`` L2-normalised.
        k: neighbours (capped at N).

    Returns:
        ``Q x K`` vote totals; ``argmax(1)`` is the prediction.
    """
    k = min(k, train_x.shape[0])
    votes = []
    for q in query_x.split(chunk):
        sim = torch.einsum("qc,nc->qn", q, train_x)  # Q x N cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # Q x k
        weight = (top_sim / temperature).exp()  # Q x k
        one_hot = torch.zeros(q.shape[0], k, num_classes, dtype=weight.dtype)
        one_hot.scatter_(2, train_y[top_idx].unsqueeze(2), 1.0)  # Q x k x K
        votes.append(torch.einsum("qk,qkc->qc", weight, one_hot))
    return torch.cat(votes)


def load_data(config: KNNConfig) -> tuple[ClassificationSplit, ClassificationSplit]:
    parse_stage(config.stage)
    return read_classification_splits(config.data, config.train_split, config.val_split, single_label=True)


def evaluate(
    backbone: ResNetBackbone, data: tuple[ClassificationSplit, ClassificationSplit], config: KNNConfig, seeds: list[int]
) -> Evaluation:
    train, val = data
    x_train, x_val = train_val_features(backbone, data, config)
    y_train, y_val = torch.from_numpy(train.labels()), torch.from_numpy(val.labels())
    votes = weighted_knn(x_train, y_train, x_val, len(train.classes), config.k, config.temperature)
    top1 = top1_accuracy(votes.argmax(dim=1), y_val)
    data_info = describe_splits(config.data, train, val, config.train_split, config.val_split)
    return Evaluation(headline=["top1"], per_seed=[{"top1": top1} for _ in seeds], data=data_info)


PROTOCOL = Protocol("knn", KNNConfig, load_data, evaluate, description=__doc__)
