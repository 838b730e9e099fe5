"""Pure tensor functions of the DenseCL objective (Wang et al., CVPR 2021, eqs. 1-3).

No state and no modules: the queues are passed in, nothing is updated. Every
function computes in the dtype of its inputs; callers give float32 (or float64)
tensors, never half precision.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Contrast(NamedTuple):
    """An InfoNCE loss and how often its ``(K + 1)``-way task is solved."""

    loss: torch.Tensor  # scalar, the mean over queries
    accuracy: torch.Tensor  # scalar in [0, 1], no gradient: the fraction of queries whose positive scores highest


def info_nce(
    q: torch.Tensor, k_pos: torch.Tensor, negatives: torch.Tensor, tau: float, rows: torch.Tensor | None = None
) -> Contrast:
    """InfoNCE with one positive per query and a shared bank of negatives.

    ``-log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_k- exp(q.k- / tau))``,
    averaged over the rows of ``q``. Its top-1 accuracy (MoCo's Acc@1) is the
    health signal of the global task: near 1 within a few hundred steps means
    the positive is found by a shortcut (a batch-norm leak), near chance
    ``1 / (K + 1)`` for long means nothing is learned. (DenseCL's dense
    positive is the key location most similar in backbone features, so the
    dense task's accuracy is near 1 by construction.)

    Args:
        q: ``M x D`` L2-normalised queries.
        k_pos: ``M x D`` L2-normalised positive key for each query.
        negatives: ``D x K`` L2-normalised negative keys, one per column (a queue).
        tau: temperature.
        rows: ``M`` bool, the rows that count (None: all). The means run over
            them, with fixed shapes (no device sync); none counting gives 0.

    Returns:
        The mean loss over the ``M`` rows and the fraction of rows whose
        positive logit is the largest (ties count for the positive).
    """
    l_pos = torch.einsum("md,md->m", q, k_pos).unsqueeze(1)  # M x 1
    l_neg = torch.einsum("md,dk->mk", q, negatives)  # M x K
    logits = torch.cat([l_pos, l_neg], dim=1) / tau  # M x (1 + K)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # the positive is column 0
    with torch.no_grad():
        right = (l_pos.squeeze(1) >= l_neg.amax(dim=1)).to(logits.dtype)  # M: no device sync, stays a tensor
    if rows is None:
        return Contrast(F.cross_entropy(logits, target), right.mean())
    weight = rows.to(logits.dtype)  # M
    count = weight.sum().clamp(min=1)
    loss = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / count
    return Contrast(loss, (right * weight).sum() / count)


@torch.no_grad()
def match_locations(f_q: torch.Tensor, f_k: torch.Tensor) -> torch.Tensor:
    """For each query location, the key location of highest cosine similarity.

    The correspondence of DenseCL (Sec. 3.3): hard, one-way (query -> key)
    argmax over the ``S x T`` similarity of L2-normalised backbone features.

    Args:
        f_q: ``N x C x S`` L2-normalised query-view features.
        f_k: ``N x C x T`` L2-normalised key-view features.

    Returns:
        ``N x S`` long tensor: ``j*(i)`` for every query location ``i``.
    """
    sim = torch.einsum("ncs,nct->nst", f_q, f_k)  # N x S x T
    return sim.argmax(dim=2)


def gather_locations(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Picks, per image, the key vectors at the matched locations.

    Args:
        t: ``N x D x T`` key dense vectors.
        index: ``N x S`` key location for every query location.

    Returns:
        ``N x D x S``: column ``i`` of image ``n`` is ``t[n, :, index[n, i]]``.
    """
    return torch.gather(t, 2, index.unsqueeze(1).expand(-1, t.shape[1], -1))


#: how a query location finds its positive key location (``positives`` of :func:`dense_info_nce`)
POSITIVES = ("features", "geometry", "both")


def dense_info_nce(
    r: torch.Tensor,
    t: torch.Tensor,
    f_q: torch.Tensor,
    f_k: torch.Tensor,
    negatives: torch.Tensor,
    tau: float,
    match: torch.Tensor | None = None,
    positives: str = "features",
) -> Contrast:
    """The dense contrastive loss: InfoNCE at every query location (and its top-1 accuracy over locations).

    The positive of query vector ``r_i`` is the key vector ``t_j*(i)`` at the
    location matched by backbone-feature similarity; the negatives are the
    pooled key vectors of past images (``queue2``), shared by every location.
    The mean runs over all ``N * S`` locations.

    Args:
        r: ``N x D x S`` L2-normalised query dense-head vectors.
        t: ``N x D x T`` L2-normalised key dense-head vectors.
        f_q: ``N x C x S`` L2-normalised query backbone features (for matching).
        f_k: ``N x C x T`` L2-normalised key backbone features (for matching).
        negatives: ``D x K`` the dense queue.
        tau: temperature.
        match: ``N x S`` key location of every query location known from the
            views' geometry, -1 where the key view does not show it; needed by
            every rule but ``features``.
        positives: ``features``, the feature argmax ``j*(i)`` (the paper);
            ``geometry``, the geometric match where the key view shows the
            location, else the argmax; ``both``, the mean of the paper's loss
            and a loss whose positives are the geometric matches alone, over
            the shown locations (VICRegL's use of both; docs/small-data.md).
            Accuracy: the argmax task's for ``features``, the geometric one's
            otherwise.
    """
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {', '.join(POSITIVES)}, got {positives!r}")
    if positives != "features" and match is None:
        raise ValueError(f"positives {positives!r} needs the views' geometric match")
    d = r.shape[1]
    queries = r.transpose(1, 2).reshape(-1, d)  # NS x D

    def contrast(index: torch.Tensor, rows: torch.Tensor | None = None) -> Contrast:
        t_pos = gather_locations(t, index)  # N x D x S
        return info_nce(queries, t_pos.transpose(1, 2).reshape(-1, d), negatives, tau, rows)

    argmax = match_locations(f_q, f_k)  # N x S
    if positives == "features":
        return contrast(argmax)
    shown = match >= 0  # N x S
    if positives == "geometry":
        return contrast(torch.where(shown, match, argmax))
    paper, geometric = contrast(argmax), contrast(match.clamp(min=0), shown.reshape(-1))
    return Contrast((paper.loss + geometric.loss) / 2, geometric.accuracy)
