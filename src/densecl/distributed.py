"""The only module that touches ``torch.distributed``.

Every helper works without a process group too, where it is the identity:
in one plain process there is nothing to gather, and shuffling a batch cannot
change its batch-norm statistics, so shuffle-BN is a no-op there, unless the
batch norms normalise groups of the batch (``bn_group_size``), when the batch
is shuffled across the groups as it would be across ranks. Under
torchrun the process group exists even for one process, so
``torchrun --nproc_per_node 1`` runs every collective (a cheap way to check
NCCL on one GPU).

Rank and world size come from the torchrun environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), read by :func:`setup` only.
"""

from __future__ import annotations

import datetime
import inspect
import os
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from densecl.config import DEFAULT_TIMEOUT_S


class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Joins the process group torchrun describes; a no-op without torchrun.

    NCCL on CUDA, gloo on CPU. Call once, before building the model.

    Args:
        timeout_s: how long a collective waits before it fails. Finite, so
            that when one rank dies (a lost node, a killed process) the others
            stop with an error instead of hanging, and torchrun (``--max-restarts``)
            or the scheduler can start the group again. It must exceed the
            longest time one rank works alone while the others wait (rank 0
            saving a checkpoint or evaluating).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        return DistInfo(0, 1, 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_ints(value: int) -> list[int]:
    """``value`` of every rank, in rank order (``[value]`` in one process): to check that ranks agree."""
    if not is_distributed():
        return [value]
    device = _collective_device(torch.device("cpu"))
    out = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(out, torch.tensor([value], dtype=torch.int64, device=device))
    return [int(t) for t in out]


def gather_objects(obj: object) -> list[object]:
    """Picklable ``obj`` of every rank, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (for logging); the identity in one process."""
    if not is_distributed():
        return x
    device = _collective_device(x.device)
    y = x.detach().to(device, copy=True)
    dist.all_reduce(y)
    return (y / world_size()).to(x.device)


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (all ranks then make rank 0's choice); ``flag`` itself in one process."""
    if not is_distributed():
        return flag
    device = _collective_device(torch.device("cpu"))
    t = torch.tensor([float(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


@torch.no_grad()
def broadcast_state(module: torch.nn.Module) -> None:
    """Copies rank 0's parameters and buffers (weights, queues, BN statistics) to every rank."""
    if not is_distributed():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the ranks, starting from rank 0's full state.

    Buffers are not re-broadcast at every forward: the queues stay identical
    by construction (every rank enqueues the same all-gathered keys), and
    re-sending 2 x 128 x 65536 floats per step would cost more than the step
    saves. Batch-norm running statistics are rank-local, as in MoCo's
    shuffle-BN; the checkpoint keeps rank 0's.
    """
    if not is_distributed():
        return module
    broadcast_state(module)
    params = inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync
    )


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """``B x ...`` on each rank -> ``(world * B) x ...``, in rank order. No gradient."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, in_process: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shuffle-BN (MoCo): gives each rank a random slice of the global batch.

    The key encoder then normalises with statistics of a batch that mixes
    images from all ranks, so batch norm cannot leak which key matches which
    query. Returns the local shuffled batch and the index that undoes it.

    Without a process group the shuffle is a no-op for plain batch norm
    (``None`` is returned, nothing moves), unless ``in_process``: the batch
    norms then normalise groups of the batch (grouped batch norm), and the
    batch is permuted so that each group gets random images, as each rank does.
    The permutation is drawn the same way in both cases (``torch.randperm`` of
    the global batch, on rank 0's generator), so a process with groups of
    ``N`` and ranks of ``N`` images shuffle alike.
    """
    if not is_distributed():
        if not in_process:
            return x, None
        perm = torch.randperm(x.shape[0], device=x.device)
        return x[perm], torch.argsort(perm)
    x_all = concat_all_gather(x)  # world*B x ...
    b = x.shape[0]
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)  # every rank uses rank 0's permutation
    mine = perm.view(world_size(), b)[rank()]
    return x_all[mine], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, unshuffle: torch.Tensor | None) -> torch.Tensor:
    """Undoes :func:`batch_shuffle` for an output computed on the shuffled batch."""
    if unshuffle is None:
        return x
    if not is_distributed():
        return x[unshuffle]
    x_all = concat_all_gather(x)
    b = x.shape[0]
    return x_all[unshuffle.view(world_size(), b)[rank()]]


def _collective_device(otherwise: torch.device) -> torch.device:
    """Where a collective's tensor must live: this rank's GPU under NCCL, ``otherwise`` under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else otherwise
