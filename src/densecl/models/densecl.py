"""DenseCL: Dense Contrastive Learning (Wang et al., CVPR 2021), MoCo-v2 when lambda = 0.

One training step, in the order of the paper and the authors' code::

    q, r, f_q  = encoder(im_q)                      # global, dense, backbone grid
    momentum_encoder <- m * momentum_encoder + (1 - m) * encoder   # EMA, params only
    k, t, f_k  = momentum_encoder(shuffle(im_k))    # no gradient, unshuffled after (shuffle-BN)
    L_global   = InfoNCE(q, k, queue)               # MoCo-v2
    L_dense    = InfoNCE(r_i, t_j*(i), queue2)      # j*(i) = argmax_j cos(f_q_i, f_k_j)
    L          = (1 - lambda) L_global + lambda L_dense
    enqueue(queue, gather(k)); enqueue(queue2, gather(normalize(mean_s t_raw)))

Built with lambda = 0 it is MoCo-v2 at MoCo-v2's cost: no dense head, no
dense queue, no matching. ``positives`` chooses another source of the dense
positive ``j*(i)`` (the views' known geometry; :func:`densecl.losses.dense_info_nce`).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from densecl import distributed, losses
from densecl.models import authors_layout
from densecl.models.backbones import build_backbone
from densecl.models.batchnorm import group_batch_norms, has_batch_norm
from densecl.models.heads import Encoder
from densecl.models.queue import KeyQueue


class DenseCLOutput(NamedTuple):
    loss: torch.Tensor  # (1 - lambda) * loss_global + lambda * loss_dense
    loss_global: torch.Tensor  # unweighted InfoNCE of the global head
    loss_dense: torch.Tensor | None  # unweighted dense InfoNCE; None without a dense head (MoCo-v2)
    accuracy_global: torch.Tensor  # top-1 of the global (K+1)-way task, in [0, 1], no gradient
    accuracy_dense: torch.Tensor | None  # top-1 of the dense task over all query locations; None likewise


class DenseCL(nn.Module):
    """DenseCL on a CNN backbone; ``loss_lambda=0`` is MoCo-v2 in the same code, without the dense parts.

    Args:
        arch: backbone name from :data:`densecl.models.backbones.BACKBONES`, or ``timm/<name>``.
        hidden_dim: hidden width of both heads (2048 in the paper).
        out_dim: embedding size of both heads (128 in the paper).
        queue_len: negatives per queue (65536 in the paper).
        momentum: EMA momentum ``m`` of the key encoder.
        temperature: ``tau`` of both InfoNCE losses.
        loss_lambda: weight ``lambda`` of the dense loss; 0 builds no dense head
            and no dense queue (MoCo-v2), and a step may then not ask for another.
        num_grid: pool the dense head input to ``G x G`` (``None``: the C5 grid).
        dense_queue_len: negatives in the dense queue (``None``: ``queue_len``, as in the paper).
        backbone: use this module instead of building ``arch`` (must keep the
            backbone contract: ``forward`` -> C5 map, ``out_channels``).
        bn_group_size: in training, every batch norm of both encoders normalises
            groups of this many consecutive images, and the key batch is shuffled
            across groups (shuffle-BN in one process; :mod:`densecl.models.batchnorm`).
            ``None``: the whole local batch is one group, as on each of the authors' GPUs.
            A backbone without batch norm has nothing to group, and its keys are not shuffled
            (:attr:`shuffle_keys`): each image's output depends on that image alone.
        in_channels: input channels of both encoders' first convolution (3: RGB).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        hidden_dim: int = 2048,
        out_dim: int = 128,
        queue_len: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        loss_lambda: float = 0.5,
        num_grid: int | None = None,
        backbone: nn.Module | None = None,
        dense_queue_len: int | None = None,
        bn_group_size: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _check(0.0 <= momentum <= 1.0, f"momentum must be in [0, 1], got {momentum}")
        _check(0.0 <= loss_lambda <= 1.0, f"loss_lambda must be in [0, 1], got {loss_lambda}")
        _check(temperature > 0, f"temperature must be positive, got {temperature}")
        _check(queue_len > 0 and hidden_dim > 0 and out_dim > 0, "queue_len, hidden_dim and out_dim must be positive")
        _check(num_grid is None or num_grid >= 1, f"num_grid must be None or >= 1, got {num_grid}")
        _check(
            dense_queue_len is None or dense_queue_len > 0,
            f"dense_queue_len must be None or > 0, got {dense_queue_len}",
        )
        _check(bn_group_size is None or bn_group_size >= 1, f"bn_group_size must be None or >= 1, got {bn_group_size}")
        self.arch, self.momentum, self.temperature, self.loss_lambda = arch, momentum, temperature, loss_lambda
        self.bn_group_size = bn_group_size

        backbone = backbone or build_backbone(arch, in_channels)
        if bn_group_size is not None:
            group_batch_norms(backbone, bn_group_size)
        #: shuffle-BN's key shuffle; pointless without batch statistics to hide the batch's composition in
        self.shuffle_keys: bool = has_batch_norm(backbone)
        dense = loss_lambda > 0
        self.encoder = Encoder(backbone, hidden_dim, out_dim, num_grid, dense)
        self.in_channels: int = getattr(backbone, "in_channels", in_channels)
        self.momentum_encoder = copy.deepcopy(self.encoder)  # starts as a copy, then EMA only
        self.momentum_encoder.requires_grad_(False)
        self.global_queue = KeyQueue(out_dim, queue_len)  # MoCo's queue: one key per past image
        # pooled key dense vectors of past images
        self.dense_queue = KeyQueue(out_dim, dense_queue_len or queue_len) if dense else None

    def forward(
        self,
        im_q: torch.Tensor,
        im_k: torch.Tensor,
        momentum: float | None = None,
        loss_lambda: float | None = None,
        match: torch.Tensor | None = None,
        positives: str = "features",
    ) -> DenseCLOutput:
        """One DenseCL step on two views ``N x C x H x W`` (``C`` = :attr:`in_channels`).

        In train mode the key encoder is first moved by EMA and the keys are
        enqueued last; in eval mode both are left alone (a validation loss).
        ``momentum`` and ``loss_lambda`` override the constructor's values for
        this step (schedules are the caller's business). ``positives`` is this
        step's rule for the dense positives (``features``: the paper's argmax;
        ``geometry``, ``both``: from ``match``, ``N x S`` key cell of every
        query cell by the views' known geometry, -1 = not shown).
        """
        m = self.momentum if momentum is None else momentum
        lam = self.loss_lambda if loss_lambda is None else loss_lambda
        if self.dense_queue is None and lam > 0:
            raise ValueError(
                f"this model was built with loss_lambda 0 (MoCo-v2, no dense head): a step cannot ask {lam}"
            )

        q, r, f_q = self.encoder(im_q)  # N x D, N x D x S, N x C x S

        with torch.no_grad():
            if self.training:
                self._momentum_update(m)
            # shuffle-BN: across ranks, and across this process's groups when there are groups
            unshuffle = None
            if self.shuffle_keys:
                im_k, unshuffle = distributed.batch_shuffle(im_k, in_process=self.bn_group_size is not None)
            k, t, f_k = (
                x if x is None else distributed.batch_unshuffle(x, unshuffle) for x in self.momentum_encoder(im_k)
            )

        # normalisation, logits and softmax in fp32 even under autocast
        with torch.autocast(im_q.device.type, enabled=False):
            q, k = _unit(_fp32(q)), _unit(_fp32(k))  # along channels
            # the queues as they were before this step's enqueue (cloned: enqueue writes in place)
            global_ = losses.info_nce(q, k, self.global_queue.keys.clone(), self.temperature)
            loss, dense = global_.loss, None  # MoCo-v2 has no dense head: the global loss alone
            if self.dense_queue is not None:
                r, f_q, t, f_k = (_fp32(x) for x in (r, f_q, t, f_k))
                k_pooled = _unit(t.mean(dim=2))  # N x D: mean of the UNnormalised dense keys
                r, f_q, t, f_k = (_unit(x) for x in (r, f_q, t, f_k))
                dense = losses.dense_info_nce(
                    r, t, f_q, f_k, self.dense_queue.keys.clone(), self.temperature, match, positives
                )
                loss = (1 - lam) * global_.loss + lam * dense.loss

        if self.training:
            self.global_queue.enqueue(distributed.concat_all_gather(k))
            if dense is not None:
                self.dense_queue.enqueue(distributed.concat_all_gather(k_pooled))
        if dense is None:
            return DenseCLOutput(loss, global_.loss, None, global_.accuracy, None)
        return DenseCLOutput(loss, global_.loss, dense.loss, global_.accuracy, dense.accuracy)

    @torch.no_grad()
    def _momentum_update(self, m: float) -> None:
        """``theta_k <- m * theta_k + (1 - m) * theta_q`` over parameters (not BN statistics)."""
        k_params = list(self.momentum_encoder.parameters())
        q_params = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(k_params, m)
        torch._foreach_add_(k_params, q_params, alpha=1 - m)

    @property
    def backbone(self) -> nn.Module:
        """The query (online) backbone: the network people fine-tune."""
        return self.encoder.backbone

    def load_authors_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads, strictly, a checkpoint in the authors' layout (``encoder_q.0.*``, ``queue2``, ...).

        The momentum encoder keeps its own weights as stored; a MoCo-v2 model
        (``loss_lambda=0``) leaves the file's dense head and queue out. Accepts the bare
        state dict or a checkpoint with a ``state_dict`` entry. The layout and
        its rule for ``backbone.*``, ``neck.*`` and ``head.*`` are
        :mod:`densecl.models.authors_layout`'s.
        """
        state = authors_layout.from_authors(state_dict)
        if self.dense_queue is None:  # MoCo-v2 keeps no dense head: the file's is left out, by its named prefixes
            state = {k: v for k, v in state.items() if not k.startswith(authors_layout.DENSE_PARTS)}
        self.load_state_dict(state, strict=True)

    def authors_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's state in the authors' key layout (the inverse of the loader)."""
        return authors_layout.to_authors(self.state_dict())


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Half precision up to float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalises along dim 1, the channels of ``N x D`` and ``N x D x S`` tensors."""
    return F.normalize(x, dim=1)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
