"""Two CPU processes with gloo: the distributed paths of the step and of the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from densecl import checkpoint, distributed
from densecl.models.densecl import DenseCL

WORLD, B, QLEN = 2, 2, 12


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    # shuffle / unshuffle round trip: every rank gets its own rows back
    x = torch.arange(B * 3, dtype=torch.float32).view(B, 3) + 100 * rank
    shuffled, undo = distributed.batch_shuffle(x)
    assert torch.equal(distributed.batch_unshuffle(shuffled, undo), x)
    everything = distributed.concat_all_gather(shuffled)
    assert sorted(everything[:, 0].tolist()) == sorted([0.0, 3.0, 100.0, 103.0])
    assert distributed.broadcast_flag(rank == 0) and not distributed.broadcast_flag(rank == 1)  # rank 0's, everywhere

    torch.manual_seed(rank)  # different initial weights on purpose: DDP must broadcast rank 0's
    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=QLEN, momentum=0.9)
    ddp = distributed.wrap_ddp(model, torch.device("cpu"))
    opt = torch.optim.SGD(model.encoder.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(10 + rank)  # each rank its own images
    for _ in range(2):
        im_q, im_k = torch.randn(B, 3, 64, 64, generator=g), torch.randn(B, 3, 64, 64, generator=g)
        out = ddp(im_q, im_k)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_in_sync(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    for key in a:
        if key.startswith(("encoder.", "momentum_encoder.")) and "running" not in key and "num_batches" not in key:
            assert torch.allclose(a[key], b[key], atol=1e-6), key  # parameters in sync
    for key in ("global_queue.keys", "dense_queue.keys", "global_queue.ptr", "dense_queue.ptr"):
        assert torch.equal(a[key], b[key]), key  # identical queues on every rank
    assert int(a["global_queue.ptr"]) == (2 * WORLD * B) % QLEN  # pointer advanced by the global batch


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    cmd = [
        # --standalone: a free port
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "densecl", "pretrain", "--arch", "resnet18", "--hidden-dim", "16", "--out-dim", "8",
        "--queue-len", "16", "--batch-size", "8", "--crop-size", "64", "--scenes-size", "64",
        "--scenes-length", "16", "--epochs", "1", "--workers", "0", "--precision", "auto",
        "--device", "cpu", "--log-every", "2", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DENSECL_PRECISION_CACHE": ""}  # rank 0 times, both ranks follow
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state.world_size == 2 and state.step == 2
    assert int(state.model["global_queue.ptr"]) == 0  # 2 steps x global batch 8 = 16 = queue length
    assert "batch 8 = 2 x 4" in result.stdout
    assert result.stdout.count("precision auto: timed on this CPU") == 1
    assert [line["step"] for line in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [2, 2]


def _hang_or_wait(rank: int, port: int, out_dir: str) -> None:
    import time

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.setup("cpu", timeout_s=2)
    if rank == 1:  # alive but never joins the collective: a hung rank
        time.sleep(5)
        return
    start = time.time()
    try:
        distributed.barrier()
        outcome = "returned"
    except RuntimeError:
        outcome = "failed"
    with open(os.path.join(out_dir, "rank0.txt"), "w") as f:
        f.write(f"{outcome} {time.time() - start:.1f}")


@pytest.mark.slow
def test_a_collective_fails_after_the_timeout_instead_of_hanging(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_hang_or_wait, args=(port, str(tmp_path)), nprocs=2, join=True)
    outcome, seconds = (tmp_path / "rank0.txt").read_text().split()
    assert outcome == "failed" and 1.5 <= float(seconds) < 10  # the 2 s given, not gloo's 30 min default


def _nan_on_rank_1(rank: int, init_file: str, out_dir: str) -> None:
    from densecl.errors import NonFiniteLossError
    from densecl.evaluation.finetune import LossWatch

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)

    class EveryStep:  # a checkpoint due after every iteration: the loss is looked at each time
        def due(self, step):
            return True

    watch = LossWatch("det", "lower --lr", "cpu", 0, EveryStep())
    outcome = "trained"
    try:
        watch.after(torch.tensor(1.0), 0)
        watch.after(torch.tensor(float("nan") if rank == 1 else 2.0), 1)
    except NonFiniteLossError as e:
        outcome = str(e)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_of_a_fine_tuning(tmp_path):
    mp.spawn(_nan_on_rank_1, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank1.txt").read_text() == "det: loss is nan at iteration 1; lower --lr"
    assert (tmp_path / "rank0.txt").read_text() == "det: loss is not finite on another rank; lower --lr"
