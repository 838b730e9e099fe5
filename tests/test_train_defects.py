"""Pre-training defects, each pinned by a test that failed before its fix; and the flags' help."""

import dataclasses
import os
import stat
from pathlib import Path

import pytest
import torch

from densecl import checkpoint, config, distributed
from densecl.cli import main
from densecl.data.sampler import EpochSampler
from densecl.seeding import sample_seed

TINY = [
    "--arch",
    "resnet18",
    "--hidden-dim",
    "32",
    "--out-dim",
    "16",
    "--queue-len",
    "8",
    "--batch-size",
    "4",
    "--crop-size",
    "64",
    "--scenes-size",
    "64",
    "--scenes-length",
    "12",
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--log-every",
    "1",
]  # fmt: skip  (12 images, batch 4: 3 iterations an epoch)


def pretrain(run: Path, *extra: str) -> int:
    return main(["pretrain", *TINY, "--output-dir", str(run), *extra])


@pytest.fixture
def saved_steps(monkeypatch) -> list[int]:
    """The step of every checkpoint written, in order."""
    steps, save = [], checkpoint.save

    def counting(path, state):
        steps.append(state.step)
        save(path, state)

    monkeypatch.setattr(checkpoint, "save", counting)
    return steps


@pytest.mark.slow
def test_a_save_every_that_ends_an_epoch_writes_the_checkpoint_once(tmp_path, saved_steps):
    assert pretrain(tmp_path, "--epochs", "2", "--save-every", "3") == 0  # steps 3 and 6 end the epochs
    assert saved_steps == [3, 6]  # was [3, 3, 6, 6]


@pytest.mark.slow
def test_keep_every_keeps_numbered_checkpoints_and_only_those(tmp_path, saved_steps):
    assert pretrain(tmp_path, "--epochs", "3", "--keep-every", "4") == 0  # 9 steps: epoch ends 3, 6, 9; keep 4, 8
    assert saved_steps == [3, 4, 6, 8, 9]
    kept = sorted(p.name for p in tmp_path.glob("checkpoint_*.pt"))
    assert kept == ["checkpoint_0000004.pt", "checkpoint_0000008.pt"]
    assert checkpoint.load(tmp_path / "checkpoint_0000004.pt").step == 4  # a later save left it as it was
    assert checkpoint.load(tmp_path / "checkpoint.pt").step == 9


def test_keep_numbered_never_replaces_an_existing_file(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    path.write_bytes(b"new")
    (tmp_path / "checkpoint_0000010.pt").write_bytes(b"old")
    assert checkpoint.keep_numbered(path, 10) is None
    assert (tmp_path / "checkpoint_0000010.pt").read_bytes() == b"old"
    assert checkpoint.keep_numbered(path, 20).read_bytes() == b"new"


def test_a_numbered_copy_that_cannot_be_written_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import os
    import shutil

    from densecl.errors import StorageError

    path = tmp_path / checkpoint.CHECKPOINT_NAME
    path.write_bytes(b"state")
    (tmp_path / ".checkpoint_0000010.pt.abc.tmp").write_bytes(b"half")  # a copy killed mid-write earlier

    def no_link(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full(src, dst):
        Path(dst).write_bytes(b"par")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(StorageError) as caught:
        checkpoint.keep_numbered(path, 10)
    assert str(caught.value) == (
        "cannot keep checkpoint_0000010.pt (No space left on device); checkpoint.pt is intact: free disk space "
        "(or raise the limit), then resume"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no partial copy, the stale one gone
    monkeypatch.undo()
    monkeypatch.setattr(os, "link", no_link)  # copying works again
    assert checkpoint.keep_numbered(path, 10).read_bytes() == b"state"


def test_resume_with_a_recipe_is_one_line_not_a_silently_dropped_recipe(tmp_path, capsys):
    state = tmp_path / "run" / "checkpoint.pt"
    state.parent.mkdir()
    state.write_bytes(b"not read: the contradiction is found first")
    assert main(["pretrain", "--resume", str(state), "--config", "demo_cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"densecl pretrain: error: --resume {state} continues that run with the config stored in it")
    assert "--config demo_cpu would be ignored" in err and len(err.splitlines()) == 1


def test_an_atomic_write_flushes_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced, fsync = [], os.fsync

    def recording(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    checkpoint.write_atomic(tmp_path / "x.pt", {"a": 1})
    assert synced == [False, True]  # the file's bytes, then the folder's entry for the rename


def test_the_process_group_is_left_even_when_the_run_fails(tmp_path, monkeypatch):
    left = []
    monkeypatch.setattr(distributed, "teardown", lambda: left.append(True))
    assert pretrain(tmp_path, "--data", str(tmp_path / "missing")) == 2  # fails after setup, at the data
    assert left == [True]


def test_sample_seeds_do_not_repeat_across_epochs_of_a_large_data_set():
    # the former (seed * 1_000_003 + epoch) * 10_000_019 + position gave epoch 1's first sample the seed of
    # epoch 0's sample 10_000_019 in a data set of more than 10 M images
    assert sample_seed(0, 1, 0) != sample_seed(0, 0, 10_000_019)
    seeds = {sample_seed(s, e, p) for s in range(3) for e in range(50) for p in (*range(200), 10_000_019, 2**40)}
    assert len(seeds) == 3 * 50 * 202
    assert all(-(2**63) <= s < 2**63 for s in seeds)  # a signed 64-bit integer: a long tensor, a torch seed
    torch.manual_seed(min(seeds)), torch.manual_seed(max(seeds)), torch.tensor(sorted(seeds))


def test_the_sampler_yields_the_pure_function_of_seed_epoch_and_position():
    sampler = EpochSampler(6, 2, rank=1, world_size=2, seed=5, epoch=3)
    positions = [2, 3]  # rank 1's half of the first global batch of 4
    assert [s for _, s in sampler][:2] == [sample_seed(5, 3, p) for p in positions]


def test_every_pretrain_flag_says_what_it_does_and_lists_its_choices(capsys):
    fields = dataclasses.fields(config.PretrainConfig)
    assert [f.name for f in fields if len(f.metadata.get("help", "")) < 15] == []
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--arch {resnet18,resnet34,resnet50," in text and "--precision {auto,fp32,bf16,fp16}" in text
    assert "--queue-len INT|auto" in text and "(default: 65536)" in text and "(default: none)" in text
    from densecl.models.backbones import BACKBONES

    assert tuple(BACKBONES) == config.ARCHS  # one list of names: the config's
