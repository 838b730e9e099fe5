"""The fault matrix: runs killed at the worst moments, full disks, wrong checkpoints; nothing is lost.

Each kill happens in a child process (``tests/_faults.py`` wraps the function
at the fault point), then the same command line with ``--resume auto`` carries
on. In deterministic mode the result must equal an uninterrupted run, weight
for weight and metrics line for metrics line.
"""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densecl import checkpoint
from densecl.cli import main

FAULTS = str(Path(__file__).with_name("_faults.py"))
TINY = [
    "--arch", "resnet18", "--hidden-dim", "32", "--out-dim", "16", "--queue-len", "48",
    "--batch-size", "4", "--crop-size", "64", "--scenes-size", "64", "--scenes-length", "12",
    "--workers", "0", "--precision", "fp32", "--log-every", "1", "--lr", "0.3",
    "--epochs", "2", "--deterministic", "true", "--save-every", "2",
]  # fmt: skip  # 6 steps; saves at steps 2, 3 (epoch end), 4, 6, 6
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# torch >= 2.5 shares torchrun's rendezvous store with the workers and a restarted group then reads the
# addresses of the dead one and hangs (pytorch/pytorch#135712); the README's torchrun commands set this too
RESTARTABLE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def losses(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"]) for m in lines if "loss" in m]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = checkpoint.load(a / "checkpoint.pt"), checkpoint.load(b / "checkpoint.pt")
    assert sa.step == sb.step
    assert sa.model.keys() == sb.model.keys()
    for key, value in sa.model.items():
        assert torch.equal(value, sb.model[key]), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, started by the same command line the restarts use."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["pretrain", *TINY, "--resume", "auto", "--output-dir", str(run)]) == 0
    return run


@pytest.mark.parametrize(
    "kind, n, step_left",
    [
        ("step", 5, 4),  # after the metrics line of step 5: that line must go
        ("write", 2, 2),  # halfway through the checkpoint of step 3: a partial temporary file stays
        ("rename", 3, 3),  # the step-4 checkpoint complete on disk, not yet renamed
    ],
)
@pytest.mark.slow
def test_sigkill_then_the_same_command_equals_an_uninterrupted_run(straight, tmp_path, kind, n, step_left):
    run = tmp_path / "run"
    command = ["pretrain", *TINY, "--resume", "auto", "--output-dir", str(run)]
    killed = subprocess.run(
        [sys.executable, FAULTS, kind, str(n), "-1", "--", *command],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint.load(run / "checkpoint.pt").step == step_left  # the last complete one, readable
    leftovers = list(run.glob(".checkpoint.pt.*.tmp"))
    assert bool(leftovers) == (kind != "step")
    torch.set_num_threads(1)
    assert main(command) == 0
    assert_same_weights(run, straight)
    assert losses(run) == losses(straight)  # each step once, values equal: the crashed run's extra lines dropped
    assert not list(run.glob(".checkpoint.pt.*.tmp")) and not list(tmp_path.glob("run.old-*"))


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_equals_an_uninterrupted_run(tmp_path):
    args = [
        "pretrain", "--arch", "resnet18", "--hidden-dim", "16", "--out-dim", "8", "--queue-len", "16",
        "--batch-size", "8", "--crop-size", "64", "--scenes-size", "64", "--scenes-length", "16", "--epochs", "3",
        "--workers", "0", "--precision", "fp32", "--device", "cpu", "--log-every", "1", "--deterministic", "true",
        "--resume", "auto", "--dist-timeout", "60",
    ]  # fmt: skip  # 2 iterations per epoch, 6 in all; a checkpoint at every epoch end
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    straight = subprocess.run(
        [*torchrun, "-m", "densecl", *args, "--output-dir", str(tmp_path / "straight")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    restarted = subprocess.run(
        [
            *torchrun,
            "--max-restarts",
            "1",
            FAULTS,
            "step",
            "3",
            "1",
            "--",
            *args,
            "--output-dir",
            str(tmp_path / "run"),
        ],
        env={**ENV, **RESTARTABLE},
        capture_output=True,
        text=True,
        timeout=300,
    )  # rank 1 dies after step 3; the group restarts from the checkpoint of step 2
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "resuming at iteration 2" in restarted.stdout and "new run" in restarted.stdout
    assert_same_weights(tmp_path / "run", tmp_path / "straight")
    assert losses(tmp_path / "run") == losses(tmp_path / "straight")


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--max-iters", "2", "--output-dir", str(run)]) == 0
    before = (run / "checkpoint.pt").read_bytes()

    def small_files():  # in the child: files stop growing at 1 MB, writes past it fail (EFBIG) instead of a signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    full = subprocess.run(
        [
            sys.executable,
            "-m",
            "densecl",
            "pretrain",
            *TINY,
            "--resume",
            "auto",
            "--max-iters",
            "3",
            "--output-dir",
            str(run),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    assert full.returncode == 1
    assert "Traceback" not in full.stderr, full.stderr[-2000:]
    assert full.stderr.strip().splitlines()[-1] == (
        f"densecl pretrain: error: cannot write {run / 'checkpoint.pt'} (disk full, quota or file-size limit); "
        "the checkpoint.pt there before is intact: free disk space (or raise the limit), then resume"
    )
    assert (run / "checkpoint.pt").read_bytes() == before and not list(run.glob(".checkpoint.pt.*.tmp"))
    assert checkpoint.load(run / "checkpoint.pt").step == 2


@pytest.mark.parametrize("groups", ["none", "2"])
@pytest.mark.slow
def test_a_run_stopped_mid_epoch_and_resumed_equals_an_uninterrupted_run_with_shuffled_keys(tmp_path, groups):
    # with groups the key batch is shuffled by the global generator each step: resuming must not draw from it
    # before the next shuffle (a DataLoader's iterator did, for its base seed)
    torch.set_num_threads(1)
    command = ["pretrain", *TINY, "--bn-group-size", groups]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main([*command, "--output-dir", str(straight)]) == 0
    assert main([*command, "--output-dir", str(stopped), "--max-iters", "4"]) == 0  # step 4 of 6: inside epoch 1
    assert checkpoint.load(stopped / "checkpoint.pt").step == 4
    assert main(["pretrain", "--resume", str(stopped / "checkpoint.pt"), "--max-iters", "none"]) == 0
    assert_same_weights(stopped, straight)
    assert losses(stopped) == losses(straight)
