"""Ground-truth correspondence scores on constructed features with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from densecl.data.geometry import ViewGeometry
from densecl.errors import InputError
from densecl.evaluation.correspondence import score_pair


def _codes(h: int, w: int, c: int = 64, seed: int = 0) -> torch.Tensor:
    """``c x h x w`` random features, one distinct code per cell."""
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


def test_identical_views_and_features_score_perfectly():
    g = ViewGeometry(0, 0, 160, 160, 160)
    f = _codes(5, 5)
    s = score_pair(f, f, g, g)
    assert s["overlap_cells"] == 25
    assert s["accuracy"] == s["mutual_precision"] == s["mutual_recall"] == s["same_cell_baseline"] == 1.0
    assert s["within_16"] == 1.0  # every prediction is the true cell, its centre on the point
    assert s["true_similarity"] == pytest.approx(1.0)
    assert s["margin"] > 0


def test_features_that_follow_a_one_cell_shift_are_right():
    # view 2 starts 32 image pixels (one C5 cell at scale 1) to the right of view 1
    g1, g2 = ViewGeometry(0, 0, 160, 160, 160), ViewGeometry(0, 32, 160, 160, 160)
    f1 = _codes(5, 6)[:, :, :5]
    f2 = _codes(5, 6)[:, :, 1:]  # view 2's cell c shows view 1's cell c + 1
    s = score_pair(f1, f2, g1, g2)
    assert s["overlap_cells"] == 20  # view 1's first column is not in view 2
    assert s["accuracy"] == 1.0 and s["mutual_recall"] == 1.0
    # the 5 cells of view 1 that view 2 does not show find a nearest cell, but not a mutual one
    assert s["mutual_precision"] == 1.0 and s["accuracy"] == 1.0


def test_features_that_ignore_a_known_shift_miss_by_exactly_one_cell():
    g1, g2 = ViewGeometry(0, 0, 160, 160, 160), ViewGeometry(0, 32, 160, 160, 160)
    f = _codes(5, 5)
    s = score_pair(f, f, g1, g2, radii=(16, 31.9, 32))
    assert s["accuracy"] == 0.0 and s["mutual_precision"] == 0.0 and s["mutual_recall"] == 0.0
    assert s["same_cell_baseline"] == 0.0  # the answer "same place" is what these features give
    assert s["within_16"] == 0.0 and s["within_31.9"] == 0.0 and s["within_32"] == 1.0  # error is 32 px
    assert s["true_similarity"] < s["best_false_similarity"] == pytest.approx(1.0)


def test_a_mirrored_view_is_matched_through_the_mirror():
    g1, g2 = ViewGeometry(0, 0, 96, 96, 96), ViewGeometry(0, 0, 96, 96, 96, flip=True)
    f1 = _codes(3, 3)
    s = score_pair(f1, f1.flip(-1), g1, g2)
    assert s["accuracy"] == 1.0
    assert score_pair(f1, f1, g1, g2)["accuracy"] == pytest.approx(3 / 9)  # only the centre column agrees


def test_similarities_by_hand():
    # 1 x 2 maps: view 1 cells a=(1,0), b=(0,1); view 2 cells (1,0), (1,1)/sqrt2
    g = ViewGeometry(0, 0, 64, 128, 64)  # 128 x 64 image squeezed to 64: both views identical
    f1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2)
    f2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).reshape(2, 1, 2)
    s = score_pair(f1, f2, g, g, threshold=0.9)
    r = 1 / math.sqrt(2)
    # cell a: true (1,0) sim 1, false r; cell b: true sim r, false 0
    assert s["true_similarity"] == pytest.approx((1 + r) / 2)
    assert s["best_false_similarity"] == pytest.approx(r / 2)
    assert s["accuracy"] == 1.0  # b's best is its own cell (r > 0)
    assert s["within_view_similarity"] == pytest.approx((0 + r) / 2)  # view 1: 0, view 2: r
    assert s["confident"] == 1 and s["confident_correct"] == 1  # a <-> (1,0) at cosine 1; b's r < 0.9


def test_random_features_score_chance():
    g = ViewGeometry(0, 0, 160, 160, 160)
    acc = [score_pair(_codes(5, 5, seed=2 * i), _codes(5, 5, seed=2 * i + 1), g, g)["accuracy"] for i in range(400)]
    assert sum(acc) / len(acc) == pytest.approx(1 / 25, abs=0.01)


def test_no_overlap_gives_nan_not_zero():
    g1, g2 = ViewGeometry(0, 0, 32, 32, 32), ViewGeometry(0, 100, 32, 32, 32)
    s = score_pair(_codes(2, 2), _codes(2, 2, seed=1), g1, g2)
    assert s["overlap_cells"] == 0 and math.isnan(s["accuracy"]) and math.isnan(s["mutual_recall"])
    assert s["mutual_precision"] == 0.0  # mutual pairs exist, none can be right


# --------------------------------------------------------------------------- the protocol


def _folder(tmp_path, n: int):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = (torch.rand(48, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    return tmp_path


def test_view_pairs_depend_on_the_seed_only(tmp_path):
    from densecl.evaluation.correspondence import CorrespondenceConfig, load_data, view_pairs

    config = CorrespondenceConfig(data=str(_folder(tmp_path, 5)), pairs=4, crop=32, max_angle=10)
    source = load_data(config)
    torch.manual_seed(123)
    a = view_pairs(source, config, seed=7)
    torch.manual_seed(456)  # the caller's random state does not matter
    b = view_pairs(source, config, seed=7)
    assert torch.equal(a.view1, b.view1) and torch.equal(a.view2, b.view2) and a.geometry == b.geometry
    assert len(set(a.names)) == 4 and a.view1.shape == (4, 3, 32, 32)
    assert not torch.equal(view_pairs(source, config, seed=8).view1, a.view1)


def test_evaluate_scores_each_stage_with_a_spread(tmp_path):
    from densecl.evaluation.correspondence import CorrespondenceConfig, evaluate, load_data
    from densecl.models.backbones import build_backbone

    config = CorrespondenceConfig(data=str(_folder(tmp_path, 3)), pairs=3, crop=64, stages="c4,c5")
    torch.manual_seed(0)
    result = evaluate(build_backbone("resnet18"), load_data(config), config, seeds=[0])
    metrics = result.per_seed[0]
    assert {"c4_accuracy", "c5_accuracy", "c5_within_32", "c4_within_view_similarity"} <= set(metrics)
    assert result.details[0]["sd_over_pairs"]["c5_overlap_cells"] >= 0
    assert result.headline == ["c5_accuracy", "c5_within_32", "c5_mutual_precision"]


def test_too_few_images_is_one_clear_line(tmp_path):
    from densecl.evaluation.correspondence import CorrespondenceConfig, load_data

    with pytest.raises(InputError, match="has 2 images but --pairs 5"):
        load_data(CorrespondenceConfig(data=str(_folder(tmp_path, 2)), pairs=5, crop=32))
