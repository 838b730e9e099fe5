"""The loss functions against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from densecl import losses


def test_info_nce_matches_hand_computed_value():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])  # q.k = 0.6
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # columns (0,1) and (-1,0): q.n = 0, -1
    tau = 0.5
    expected = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.0) + math.exp(-1.0 / tau)))
    assert math.isclose(losses.info_nce(q, k, queue, tau).loss.item(), expected, rel_tol=1e-6)


def test_info_nce_averages_rows():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(5, 4), dim=1), F.normalize(torch.randn(5, 4), dim=1)
    queue = F.normalize(torch.randn(4, 7), dim=0)
    rows = [losses.info_nce(q[i : i + 1], k[i : i + 1], queue, 0.2) for i in range(5)]
    both = losses.info_nce(q, k, queue, 0.2)
    assert torch.allclose(both.loss, torch.stack([row.loss for row in rows]).mean())
    assert torch.allclose(both.accuracy, torch.stack([row.accuracy for row in rows]).mean())


def test_info_nce_accuracy_counts_queries_whose_positive_scores_highest():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])  # q.k+ = 0.6, 0.8, 0.0
    queue = torch.tensor([[0.8, -1.0], [0.6, 0.0]])  # q.n: (0.8, -1), (0.6, 0), (0.8, -1)
    # row 0: 0.6 < 0.8 wrong; row 1: 0.8 > 0.6 right; row 2: 0.0 < 0.8 wrong
    out = losses.info_nce(q, k, queue, 0.2)
    assert math.isclose(out.accuracy.item(), 1 / 3, rel_tol=1e-6) and not out.accuracy.requires_grad
    tie = losses.info_nce(q[:1], torch.tensor([[0.8, 0.6]]), queue, 0.2)  # q.k+ = 0.8 = the best negative
    assert tie.accuracy.item() == 1.0  # a tie counts for the positive


def test_match_locations_picks_argmax_of_cosine_similarity():
    # one image, 2 channels; query locations point at 0, 90 and 200 degrees
    f_q = torch.tensor([[[1.0, 0.0, -0.94], [0.0, 1.0, -0.34]]])  # 1 x 2 x 3
    # key locations at 100, 10, 180 degrees
    angles = torch.deg2rad(torch.tensor([100.0, 10.0, 180.0]))
    f_k = torch.stack([torch.cos(angles), torch.sin(angles)])[None]  # 1 x 2 x 3
    # 0 deg -> closest 10 deg (index 1); 90 -> 100 (0); 200 -> 180 (2)
    assert losses.match_locations(f_q, f_k).tolist() == [[1, 0, 2]]


def test_match_locations_is_one_way():
    # both query locations prefer key 0: no mutual check, no one-to-one constraint
    f_q = F.normalize(torch.tensor([[[1.0, 1.0], [0.1, -0.1]]]), dim=1)
    f_k = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), dim=1)
    assert losses.match_locations(f_q, f_k).tolist() == [[0, 0]]


def test_gather_locations_takes_the_matched_key_columns():
    t = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # N=2, D=3, T=4
    index = torch.tensor([[3, 0], [1, 1]])  # N x S, S=2
    out = losses.gather_locations(t, index)
    assert out.shape == (2, 3, 2)
    assert torch.equal(out[0, :, 0], t[0, :, 3]) and torch.equal(out[0, :, 1], t[0, :, 0])
    assert torch.equal(out[1, :, 0], t[1, :, 1]) and torch.equal(out[1, :, 1], t[1, :, 1])


def _two_locations():
    """N=1, S=T=2, D=2. Backbone features swap the locations (query 0 matches key 1); one negative, (1,0).

    Returns ``f_q, f_k, r, t, queue2, tau``: r_0 = (1,0), r_1 = (0,1); t_0 = (0.6,0.8), t_1 = (0.8,0.6).
    """
    return (
        torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
        torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]),
        torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
        torch.tensor([[[0.6, 0.8], [0.8, 0.6]]]),
        torch.tensor([[1.0], [0.0]]),
        0.2,
    )


def test_dense_loss_by_hand_on_two_locations():
    f_q, f_k, r, t, queue2, tau = _two_locations()
    # r_0 positive t_1: 0.8, negative 1.0; r_1 positive t_0: 0.8, negative 0.0
    l0 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(1.0 / tau)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0)))
    got = losses.dense_info_nce(r, t, f_q, f_k, queue2, tau)
    assert math.isclose(got.loss.item(), (l0 + l1) / 2, rel_tol=1e-6)
    assert got.accuracy.item() == 0.5  # location 0: 0.8 < 1.0; location 1: 0.8 > 0.0


def test_a_geometric_match_replaces_the_feature_argmax_where_known():
    # the same numbers as above, but geometry says query 0 is key 0; query 1 is unknown (-1): argmax (key 0)
    f_q, f_k, r, t, queue2, tau = _two_locations()
    # r_0 positive t_0: 0.6, negative 1.0; r_1 positive t_0: 0.8, negative 0.0
    l0 = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(1.0 / tau)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0)))
    got = losses.dense_info_nce(r, t, f_q, f_k, queue2, tau, match=torch.tensor([[0, -1]]), positives="geometry")
    assert math.isclose(got.loss.item(), (l0 + l1) / 2, rel_tol=1e-6)
    assert got.accuracy.item() == 0.5  # location 0: 0.6 < 1.0; location 1: 0.8 > 0.0
    paper = losses.dense_info_nce(r, t, f_q, f_k, queue2, tau, match=torch.tensor([[0, -1]]))
    assert not math.isclose(paper.loss.item(), got.loss.item())  # the default rule ignores the match: the argmax


def test_both_is_the_mean_of_the_papers_loss_and_the_geometric_loss_over_shown_locations():
    # the same numbers; geometry knows query 0 (key 0) only
    f_q, f_k, r, t, queue2, tau = _two_locations()

    def ce(pos, neg):
        return -math.log(math.exp(pos / tau) / (math.exp(pos / tau) + math.exp(neg / tau)))

    paper = (ce(0.8, 1.0) + ce(0.8, 0.0)) / 2  # argmax: r_0 -> t_1, r_1 -> t_0
    geometric = ce(0.6, 1.0)  # r_0 -> t_0; location 1 is not shown and does not count
    got = losses.dense_info_nce(r, t, f_q, f_k, queue2, tau, match=torch.tensor([[0, -1]]), positives="both")
    assert math.isclose(got.loss.item(), (paper + geometric) / 2, rel_tol=1e-6)
    assert got.accuracy.item() == 0.0  # the geometric task's: 0.6 < 1.0 on its one location
    nothing_shown = losses.dense_info_nce(r, t, f_q, f_k, queue2, tau, match=torch.tensor([[-1, -1]]), positives="both")
    assert math.isclose(nothing_shown.loss.item(), paper / 2, rel_tol=1e-6)  # the geometric term is empty: 0


def test_rules_other_than_the_papers_need_the_match():
    x = F.normalize(torch.randn(1, 2, 2), dim=1)
    for rule in ("geometry", "both"):
        with pytest.raises(ValueError, match="needs the views' geometric match"):
            losses.dense_info_nce(x, x, x, x, torch.eye(2), 0.2, positives=rule)
    with pytest.raises(ValueError, match="positives must be one of"):
        losses.dense_info_nce(x, x, x, x, torch.eye(2), 0.2, positives="hybrid")  # a schedule, resolved per step


def test_info_nce_over_some_rows_equals_info_nce_of_those_rows():
    torch.manual_seed(1)
    q, k = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    queue = F.normalize(torch.randn(4, 5), dim=0)
    rows = torch.tensor([True, False, True, True, False, False])
    some = losses.info_nce(q, k, queue, 0.2, rows)
    alone = losses.info_nce(q[rows], k[rows], queue, 0.2)
    assert torch.allclose(some.loss, alone.loss) and torch.allclose(some.accuracy, alone.accuracy)
    none = losses.info_nce(q, k, queue, 0.2, torch.zeros(6, dtype=torch.bool))
    assert none.loss.item() == 0.0 and none.accuracy.item() == 0.0


def test_dense_negatives_come_only_from_the_queue():
    # with an empty-ish queue the other locations of the image never act as negatives:
    # a queue of vectors orthogonal to every r gives log(1 + K e^0 / e^(pos/tau))
    r = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])  # D=3, both locations (1,0,0)
    t = r.clone()
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    queue2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # K=2, orthogonal to r
    tau = 0.2
    expected = math.log(1 + 2 * math.exp(-1 / tau))
    assert math.isclose(losses.dense_info_nce(r, t, f, f, queue2, tau).loss.item(), expected, rel_tol=1e-6)
