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


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, negatives: torch.Tensor, tau: float) -> Contrast:
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

    Returns:
        The mean loss over the ``M`` rows and the fraction of rows whose
        positive logit is the largest (ties count for the positive).
    """
    l_pos = torch.einsum("md,md->m", q, k_pos).unsqueeze(1)  # M x 1
    l_neg = torch.einsum("md,dk->mk", q, negatives)  # M x K
    logits = torch.cat([l_pos, l_neg], dim=1) / tau  # M x (1 + K)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # the positive is column 0
    with torch.no_grad():
        accuracy = (l_pos.squeeze(1) >= l_neg.amax(dim=1)).float().mean()  # no device sync: stays a tensor
    return Contrast(F.cross_entropy(logits, target), accuracy)


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


def dense_info_nce(
    r: torch.Tensor,
    t: torch.Tensor,
    f_q: torch.Tensor,
    f_k: torch.Tensor,
    negatives: torch.Tensor,
    tau: float,
    match: torch.Tensor | None = None,
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
            views' geometry, -1 where the key view does not show it (the
            feature argmax is kept there); None: the feature argmax everywhere,
            as in the paper. An ablation: does noisy early matching teach
            wrong correspondences?
    """
    index = match_locations(f_q, f_k)  # N x S
    if match is not None:
        index = torch.where(match >= 0, match, index)
    t_pos = gather_locations(t, index)  # N x D x S
    d = r.shape[1]
    return info_nce(
        r.transpose(1, 2).reshape(-1, d),  # NS x D
        t_pos.transpose(1, 2).reshape(-1, d),  # NS x D
        negatives,
        tau,
    )
