"""One process with grouped batch norm trains exactly as several processes with shuffle-BN (float64, gloo).

One process, global batch 8, groups of 2 images; 4 gloo processes with 2 images
each (the authors' setting: plain batch norm per process, shuffle-BN across
them). Same initial weights, same data order, same shuffle permutation: after 2
steps the losses, accuracies, weights and queues are the same, and the one
process's running statistics are the mean of the processes'.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from densecl import distributed
from densecl.models.densecl import DenseCL

WORLD, PER_RANK, STEPS, SIZE = 4, 2, 2, 64  # 64 px: a 2 x 2 C5 grid
BATCH = WORLD * PER_RANK


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        tuple(torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2))
        for _ in range(STEPS)
    ]


def train(bn_group_size: int | None, rows: slice) -> dict:
    """Two steps on ``rows`` of every batch; the same seed everywhere, so the same weights, queues and permutations."""
    torch.manual_seed(0)
    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=32, momentum=0.9, bn_group_size=bn_group_size)
    model = model.double().train()
    ddp = distributed.wrap_ddp(model, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.encoder.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    outputs = []
    for im_q, im_k in batches():
        out = ddp(im_q[rows], im_k[rows])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        outputs.append(
            torch.stack([out.loss, out.loss_global, out.loss_dense, out.accuracy_global, out.accuracy_dense])
        )
    return {"outputs": torch.stack(outputs).detach(), "state": {k: v.clone() for k, v in model.state_dict().items()}}


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    result = train(None, slice(rank * PER_RANK, (rank + 1) * PER_RANK))  # plain batch norm over this rank's 2 images
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_one_process_with_groups_of_2_equals_4_processes_of_2(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    one = train(PER_RANK, slice(None))

    # a rank's losses and accuracies are over its own queries; their mean is the one process's (equal counts)
    assert torch.allclose(one["outputs"], torch.stack([r["outputs"] for r in ranks]).mean(0), atol=1e-10)
    for key, value in one["state"].items():
        if not value.is_floating_point():  # queue pointers, num_batches_tracked
            assert all(torch.equal(r["state"][key], value) for r in ranks), key
        elif "running_" in key:  # per-rank statistics in the processes; their mean in the one process
            assert torch.allclose(torch.stack([r["state"][key] for r in ranks]).mean(0), value, atol=1e-10), key
        else:  # weights (both encoders) and queues
            assert torch.allclose(ranks[0]["state"][key], value, atol=1e-10), key

    # and the grouping matters: one group of 8 (shuffle-BN off) trains differently
    plain = train(None, slice(None))
    assert not torch.allclose(plain["outputs"], one["outputs"], atol=1e-6)
