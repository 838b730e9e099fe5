"""Over-clustering: do the frozen patch features of the val images fall into class-shaped clusters? (mIoU)

1. Every val image's frozen feature map; each patch vector L2-normalised,
   then PCA (``pca_dim`` components) over all val patches.
2. K-means with K = the number of classes, and with larger K.
3. Each cluster map is upsampled (nearest) to its label; a K x classes table
   counts labelled pixels. K = classes: clusters and classes are paired
   one-to-one to cover the most pixels (Hungarian matching). K > classes:
   each cluster takes the class of most of its pixels (many-to-one).
4. mIoU of the resulting class maps; the seed moves K-means' initialisation.

No label is seen before the clusters exist: the number is a property of the
feature space alone.

    densecl eval overcluster --weights runs/a/checkpoint.pt --data scenes-voc --ks 0,32,64
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.datasets import IGNORE_INDEX, SegmentationSplit, read_segmentation_splits
from densecl.evaluation.dense_nn import check_patches, check_val_classes
from densecl.evaluation.features import frozen_segmentation_maps, parse_stages
from densecl.evaluation.metrics import confusion_matrix, iou_from_confusion
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class OverclusterConfig:
    data: str = options.data()
    val_split: str = options.val_split()
    num_classes: int | None = options.num_classes()
    label_dir: str = options.label_dir()
    stages: str = option("c5", "stage(s) to read: c5, c4, or c4,c5 (C5 upsampled to C4 and concatenated)")
    image_size: int = options.image_size(0)
    ks: str = option(
        "0,4x", "cluster counts: integers, 0 = the number of classes, Nx = N times it; the first is the headline"
    )
    pca_dim: int = option(32, "PCA components before K-means (0: no PCA)")
    batch_size: int = options.batch_size(16)
    device: str = options.device()


def load_data(config: OverclusterConfig) -> SegmentationSplit:
    """The val split, every label read once; the cluster counts checked against its patches."""
    stages = parse_stages(config.stages)
    (val,) = read_segmentation_splits(config, config.val_split)
    check_val_classes(val)
    ks = cluster_counts(config.ks, val.num_classes)
    check_patches(max(ks), "K", "--ks", val, config.val_split, stages[0], config)
    return val


def evaluate(
    backbone: ResNetBackbone, data: SegmentationSplit, config: OverclusterConfig, seeds: list[int]
) -> Evaluation:
    val = data
    ((maps, labels),) = frozen_segmentation_maps(backbone, [val], config)
    x = np.concatenate([F.normalize(m.float().flatten(1).T, dim=1).numpy() for m in maps])  # P x C
    x = project(x, config.pca_dim, seed=0)
    ks = cluster_counts(config.ks, val.num_classes)
    per_seed, details = [], []
    for seed in seeds:
        scores, per_class = {}, {}
        for k in ks:
            assignment = kmeans(x, k, seed)
            iou = cluster_iou(split_maps(assignment, maps), labels, k, val.num_classes)
            scores[f"mIoU@K{k}"] = iou.mean
            per_class[k] = dict(zip(val.classes, iou.per_class))
        per_seed.append({"mIoU": scores[f"mIoU@K{ks[0]}"], **scores})
        details.append({"seed": seed, "iou": per_class})
    data_info = {
        "root": str(config.data),
        "val_split": config.val_split,
        "n_val": len(val),
        "classes": list(val.classes),
        "patches": int(x.shape[0]),
        "ks": ks,
        "pca_dim": int(x.shape[1]),
        "feature_size": list(maps[0].shape[1:]),
    }
    return Evaluation(headline=["mIoU"], per_seed=per_seed, details=details, data=data_info)


def cluster_counts(text: str, num_classes: int) -> list[int]:
    """``"0,4x,64"`` -> ``[K, 4K, 64]`` for K = ``num_classes``; the first is the headline."""
    ks = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            k = num_classes * int(part[:-1]) if part.endswith("x") else int(part) or num_classes
        except ValueError:
            raise InputError(
                f"--ks takes integers, 0 (= the number of classes) or Nx (N times it); got {part!r}"
            ) from None
        if k < num_classes:
            raise InputError(
                f"K {k} is below the {num_classes} classes; over-clustering needs K >= the number of classes"
            )
        ks.append(k)
    if not ks:
        raise InputError("--ks is empty; give at least one cluster count (0 = the number of classes)")
    return list(dict.fromkeys(ks))


def project(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """PCA to ``dim`` components (all of them when ``dim`` is 0 or not smaller than C)."""
    if not dim or dim >= x.shape[1]:
        return x
    from sklearn.decomposition import PCA

    return PCA(n_components=dim, random_state=seed).fit_transform(x)


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means (k-means++ initialisation, 3 restarts) -> cluster index per row."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)


def split_maps(assignment: np.ndarray, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Flat cluster indices -> one ``h x w`` cluster map per feature map, in order."""
    out, start = [], 0
    for m in maps:
        h, w = m.shape[-2:]
        out.append(torch.from_numpy(assignment[start : start + h * w].reshape(h, w)).long())
        start += h * w
    return out


def cluster_iou(cluster_maps: list[torch.Tensor], labels: list[torch.Tensor], k: int, num_classes: int):
    """mIoU of cluster maps after labelling each cluster: one-to-one when ``k == num_classes``, else by majority."""
    upsampled = [
        F.interpolate(c[None, None].float(), size=tuple(y.shape), mode="nearest")[0, 0].long()
        for c, y in zip(cluster_maps, labels)
    ]
    counts = torch.zeros(num_classes, k, dtype=torch.int64)  # class x cluster, labelled pixels
    for c, y in zip(upsampled, labels):
        keep = y.long() != IGNORE_INDEX
        counts += torch.bincount(y.long()[keep] * k + c[keep], minlength=num_classes * k).reshape(num_classes, k)
    if k == num_classes:
        from scipy.optimize import linear_sum_assignment

        classes, clusters = linear_sum_assignment(counts.numpy(), maximize=True)
        label_of = torch.empty(k, dtype=torch.long)
        label_of[torch.from_numpy(clusters)] = torch.from_numpy(classes)
    else:
        label_of = counts.argmax(dim=0)  # k: the class most of the cluster's pixels have
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for c, y in zip(upsampled, labels):
        cm += confusion_matrix(label_of[c], y, num_classes, IGNORE_INDEX)
    return iou_from_confusion(cm)


PROTOCOL = Protocol("overcluster", OverclusterConfig, load_data, evaluate, description=__doc__)
