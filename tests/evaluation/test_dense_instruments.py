"""dense-nn and over-clustering: oracle features score 100, noise scores chance, pieces by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densecl.errors import InputError
from densecl.evaluation import dense_nn, overcluster
from densecl.evaluation.metrics import confusion_matrix, iou_from_confusion

K = 4  # classes
GRID = (4, 4)  # patches per image
PATCH = 8  # pixels per patch side


def _block_labels(n: int, seed: int, stripes: bool = False) -> list[torch.Tensor]:
    """``n`` label maps of 32 x 32 px, constant on each 8 x 8 patch (on each column of patches
    with ``stripes``), every class present."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        blocks = torch.randint(0, K, GRID, generator=g)
        blocks.view(-1)[:K] = torch.arange(K)
        if stripes:
            blocks = blocks[:1].expand(GRID).clone()
        out.append(blocks.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1).to(torch.uint8))
    return out


def _oracle_maps(labels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Features that are the one-hot of each patch's class: ``K x h x w``."""
    return [F.one_hot(y[::PATCH, ::PATCH].long(), K).permute(2, 0, 1).float() for y in labels]


def _noise_maps(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, *GRID, generator=g) for _ in range(n)]


def _dense_nn_miou(train_maps, train_labels, val_maps, val_labels, k=30, temperature=0.02) -> float:
    keys, values = dense_nn.build_memory(train_maps, train_labels, K)
    cm = torch.zeros(K, K, dtype=torch.int64)
    for fmap, label in zip(val_maps, val_labels):
        probs = dense_nn.transfer_labels(fmap, keys, values, k, temperature, chunk_mb=1)
        cm += confusion_matrix(dense_nn.upsampled_argmax(probs, label.shape), label, K)
    return iou_from_confusion(cm).mean


def test_patch_histograms_by_hand():
    label = torch.tensor([[0, 0, 1, 255], [0, 2, 1, 1]], dtype=torch.uint8)  # 2 x 4 -> 1 x 2 patches
    hist = dense_nn.patch_histograms(label, (1, 2), num_classes=3)
    assert hist[0, 0].tolist() == pytest.approx([3 / 4, 0, 1 / 4])
    assert hist[0, 1].tolist() == pytest.approx([0, 1, 0])  # the ignored pixel counts for nothing
    empty = dense_nn.patch_histograms(torch.full((2, 2), 255, dtype=torch.uint8), (1, 1), 3)
    assert empty.sum() == 0


def test_transfer_labels_weights_neighbours_by_softmax():
    keys = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    values = torch.eye(3)
    fmap = torch.tensor([1.0, 0.0]).reshape(2, 1, 1)  # cosines 1, 0.6, 0
    probs = dense_nn.transfer_labels(fmap, keys, values, k=2, temperature=0.5)
    w = torch.softmax(torch.tensor([1.0, 0.6]) / 0.5, dim=0)
    assert probs[:, 0, 0].tolist() == pytest.approx([float(w[0]), float(w[1]), 0.0])


def test_dense_nn_oracle_features_score_100():
    # stripes: bilinear upsampling of the patch distributions is exact along one axis; in 2-D a
    # pixel next to a corner where two patches of another class meet goes to that class
    train, val = _block_labels(20, seed=0, stripes=True), _block_labels(6, seed=1, stripes=True)
    assert _dense_nn_miou(_oracle_maps(train), train, _oracle_maps(val), val) == pytest.approx(100.0)
    blocks = _block_labels(6, seed=1)
    assert 85 < _dense_nn_miou(_oracle_maps(train), train, _oracle_maps(blocks), blocks) < 100


def test_dense_nn_noise_scores_chance():
    train, val = _block_labels(40, seed=0), _block_labels(40, seed=1)
    miou = _dense_nn_miou(_noise_maps(40, 2), train, _noise_maps(40, 3), val)
    assert miou == pytest.approx(100 / (2 * K - 1), abs=4)  # uniform guessing over K balanced classes


def test_chunking_does_not_change_the_answer():
    train = _block_labels(10, seed=0)
    keys, values = dense_nn.build_memory(_noise_maps(10, 0), train, K)
    fmap = _noise_maps(1, 5)[0]
    one = dense_nn.transfer_labels(fmap, keys, values, 5, 0.1, chunk_mb=1)
    rows_of_one = dense_nn.transfer_labels(fmap, keys, values, 5, 0.1, chunk_mb=0)  # one query row per chunk
    assert torch.allclose(one, rows_of_one)


def test_a_memory_beyond_the_labelled_patches_is_all_of_them_and_named_by_what_it_used(capsys):
    assert dense_nn.memory_sizes([10, 1000, 0], 5000) == [10, 1000, 5000]
    assert capsys.readouterr().err == ""
    # 4,000 asked of 3,000 labelled patches (the header estimate counts patches without labels): all 3,000, once
    assert dense_nn.memory_sizes([1000, 4000, 0], 3000) == [1000, 3000]
    assert capsys.readouterr().err == (
        "densecl eval: warning: memory size 4000 is more than the 3000 patches with a labelled pixel; "
        "using all of them\n"
    )


def test_parse_sizes():
    assert dense_nn.parse_sizes("0,1000,10") == [10, 1000, 0]
    with pytest.raises(InputError, match="memory-sizes"):
        dense_nn.parse_sizes("-1")


def _cluster(maps, labels, k, seed=0):
    x = np.concatenate([F.normalize(m.float().flatten(1).T, dim=1).numpy() for m in maps])
    assignment = overcluster.kmeans(x, k, seed)
    return overcluster.cluster_iou(overcluster.split_maps(assignment, maps), labels, k, K).mean


@pytest.mark.slow
def test_overcluster_oracle_features_score_100():
    labels = _block_labels(10, seed=0)
    maps = [m + 0.01 * n[:K] for m, n in zip(_oracle_maps(labels), _noise_maps(10, 1))]  # K tight blobs
    assert _cluster(maps, labels, K) == pytest.approx(100.0)
    assert _cluster(maps, labels, 3 * K) == pytest.approx(100.0)  # split blobs map back by majority


def test_overcluster_noise_scores_near_chance():
    labels = _block_labels(40, seed=0)
    assert _cluster(_noise_maps(40, 1), labels, K) == pytest.approx(100 / (2 * K - 1), abs=4)


def test_cluster_iou_matching_by_hand():
    # one image, two classes; cluster 1 covers class 0 and cluster 0 covers class 1 except one pixel
    label = torch.tensor([[0, 0], [1, 1]], dtype=torch.uint8)
    clusters = torch.tensor([[1, 1], [0, 1]])
    one_to_one = overcluster.cluster_iou([clusters], [label], k=2, num_classes=2)
    # cluster 1 -> class 0 (2 px right), cluster 0 -> class 1; prediction [[0,0],[1,0]]
    assert one_to_one.per_class == pytest.approx([100 * 2 / 3, 100 * 1 / 2])


def test_cluster_counts():
    assert overcluster.cluster_counts("0,4x,64", 8) == [8, 32, 64]
    with pytest.raises(InputError, match="below the 8 classes"):
        overcluster.cluster_counts("4", 8)
