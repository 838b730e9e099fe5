"""The pre-training engine end to end on tiny scenes: CLI, checkpoints, resume, bad input, signals."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densecl import checkpoint
from densecl.cli import main
from densecl.errors import InputError

TINY = [
    "--arch", "resnet18", "--hidden-dim", "32", "--out-dim", "16", "--queue-len", "48",
    "--batch-size", "4", "--crop-size", "64", "--scenes-size", "64", "--scenes-length", "12",
    "--workers", "0", "--precision", "fp32", "--log-every", "1", "--lr", "0.3",
]  # fmt: skip


def pretrain(tmp_path: Path, *extra: str) -> int:
    return main(["pretrain", *TINY, "--output-dir", str(tmp_path), *extra])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cli_writes_a_complete_checkpoint_and_metrics(tmp_path, capsys):
    assert pretrain(tmp_path, "--epochs", "1") == 0
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state.step == 3 and state.epoch == 1 and state.iters_per_epoch == 3 and state.world_size == 1
    assert state.config["arch"] == "resnet18" and state.config["queue_len"] == 48
    model_keys = set(state.model)
    for key in (
        "global_queue.keys",
        "global_queue.ptr",
        "dense_queue.keys",
        "dense_queue.ptr",
        "encoder.backbone.conv1.weight",
        "momentum_encoder.dense_head.mlp.2.weight",
    ):
        assert key in model_keys
    assert int(state.model["global_queue.ptr"]) == 12 % 48
    assert state.optimizer["state"] and "torch" in state.rng and state.scaler is None
    lines = [m for m in metrics(tmp_path) if "loss" in m]
    assert len(lines) == 3
    for m in lines:
        assert {
            "loss",
            "loss_global",
            "loss_dense",
            "acc_global",
            "acc_dense",
            "lr",
            "pairs_per_s",
            "data_time",
        } <= set(m)
        assert 0 <= m["acc_global"] <= 100 and 0 <= m["acc_dense"] <= 100  # top-1, percent
        assert m["loss"] == pytest.approx(0.5 * m["loss_global"] + 0.5 * m["loss_dense"], rel=1e-5)
    assert metrics(tmp_path)[-1]["skipped_images"] == 0
    out = capsys.readouterr().out
    assert "lr 0.3 for 256 -> 0.0046875" in out and "arch: resnet18" in out  # scaled lr and resolved config printed


@pytest.mark.slow
def test_a_queue_as_long_as_the_data_set_is_warned_about(tmp_path, capsys):
    assert pretrain(tmp_path / "long", "--epochs", "1") == 0  # 48 keys, 12 images, 12 keys an epoch
    err = capsys.readouterr().err
    assert (
        "warning: queue_len 48 holds 4.0 keys of each image, dense_queue_len 48 holds 4.0 keys of each image of the "
        "12 images"
        in err
        and "--queue-len auto and --dense-queue-len auto (8, the largest multiple of the batch 4" in err
    )
    assert len([line for line in err.splitlines() if "warning" in line]) == 1
    assert pretrain(tmp_path / "short", "--epochs", "1", "--queue-len", "8") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_small_folder_with_the_imagenet_recipe_is_warned_then_auto_sizes_the_queues(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (70, 70), (25 * i, 40, 200 - 10 * i)).save(folder / f"{i}.png")
    small = [
        "--arch",
        "resnet18",
        "--hidden-dim",
        "16",
        "--out-dim",
        "8",
        "--batch-size",
        "4",
        "--bn-group-size",
        "2",
        "--crop-size",
        "64",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--max-iters",
        "1",
        "--data",
        str(folder),
    ]
    recipe = ["pretrain", "--config", "densecl_r50_imagenet_200ep", *small]
    assert main([*recipe, "--output-dir", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "queue_len 65536 holds 8192.0 keys of each image" in err and "(8, the largest multiple" in err

    assert main([*recipe, "--queue-len", "auto", "--dense-queue-len", "auto", "--output-dir", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "queue_len: 8\n" in out and "dense_queue_len: 8\n" in out  # the resolved values
    state = checkpoint.load(tmp_path / "b" / "checkpoint.pt")
    assert state.config["queue_len"] == 8 and state.model["global_queue.keys"].shape == (8, 8)
    assert state.model["dense_queue.keys"].shape == (8, 8)
    assert "batch norm over 2 groups of 2 per process" in out


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    args = ("--epochs", "2", "--deterministic", "true")
    assert pretrain(straight, *args) == 0
    assert pretrain(halves, *args, "--max-iters", "4") == 0  # stops mid-epoch 1
    assert checkpoint.load(halves / "checkpoint.pt").step == 4
    assert main(["pretrain", "--resume", str(halves / "checkpoint.pt"), "--max-iters", "none"]) == 0

    def losses(run):
        return [(m["step"], m["loss"]) for m in metrics(run) if "loss" in m]

    assert losses(halves) == losses(straight)
    a = checkpoint.load(straight / "checkpoint.pt")
    b = checkpoint.load(halves / "checkpoint.pt")
    assert a.step == b.step == 6
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key


def test_resume_keeps_this_runs_optimizer_implementation(tmp_path):
    # a checkpoint from before make_sgd (foreach None), or from a GPU (fused), resumes with the engine's choice
    from densecl.checkpoint import restore
    from densecl.config import PretrainConfig
    from densecl.engine import make_sgd
    from densecl.models.densecl import DenseCL

    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=16)
    old = torch.optim.SGD(model.encoder.parameters(), lr=0.1, momentum=0.9, foreach=None)
    state = _state(step=2, iters_per_epoch=1)
    state.model, state.optimizer = model.state_dict(), old.state_dict()
    optimizer = make_sgd(model.encoder.parameters(), 0.1, 0.9, 1e-4, "cpu")
    cfg = PretrainConfig(arch="resnet18", hidden_dim=16, out_dim=8, queue_len=16)
    assert restore(state, model, optimizer, None, 1, cfg) == 2
    assert all(g["foreach"] is True and not g["fused"] for g in optimizer.param_groups)


@pytest.mark.slow
def test_resume_auto_finds_the_checkpoint_in_the_output_dir(tmp_path):
    assert pretrain(tmp_path, "--epochs", "2", "--max-iters", "2") == 0
    assert pretrain(tmp_path, "--resume", "--epochs", "2", "--max-iters", "3") == 0
    assert checkpoint.load(tmp_path / "checkpoint.pt").step == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/no/such/folder"], "does not exist"),
        (["--queue-len", "50"], "not a positive multiple of the global batch"),
        (["--sync-bn", "true"], "sync_bn is refused in pre-training"),
        (["--bn-group-size", "3"], "bn_group_size 3 must be >= 2 and divide the batch of each process, 4"),
        (["--loss-lambda", "2"], "loss_lambda must be in"),
        (["--crop-size", "32"], "at least 2x2"),
        (["--scenes-length", "2"], "fewer than one global batch"),
        (["--config", "no_such_recipe"], "unknown recipe"),
    ],
)
def test_bad_input_gives_one_error_line_before_training(tmp_path, capsys, extra, message):
    assert pretrain(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "checkpoint.pt").exists()


def test_empty_folder_and_unknown_recipe_key(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert pretrain(tmp_path / "run", "--data", str(tmp_path / "empty")) == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("arch: resnet18\nlearning_rate: 0.1\n")
    assert main(["pretrain", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and "unknown config key(s) learning_rate" in err


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from densecl.models.densecl import DenseCL

    forward, calls = DenseCL.forward, []

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        return out._replace(loss=out.loss * float("nan")) if len(calls) == 3 else out

    monkeypatch.setattr(DenseCL, "forward", poisoned)
    assert pretrain(tmp_path, "--epochs", "2", "--save-every", "1") == 1
    assert "iteration 2" in capsys.readouterr().err
    assert checkpoint.load(tmp_path / "checkpoint.pt").step == 2  # the last good one


@pytest.mark.slow
def test_sigint_saves_at_the_next_iteration_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "densecl",
        "pretrain",
        *TINY,
        "--workers",
        "1",
        "--epochs",
        "50",
        "--output-dir",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped by signal" in out and "Traceback" not in out
    step = checkpoint.load(run / "checkpoint.pt").step
    assert 2 <= step < 150
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "densecl",
            "pretrain",
            "--resume",
            str(run / "checkpoint.pt"),
            "--max-iters",
            str(step + 2),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(run / "checkpoint.pt").step == step + 2


@pytest.mark.slow
def test_init_starts_both_backbones_from_given_weights(tmp_path, capsys):
    from densecl.models.backbones import build_backbone
    from densecl.models.densecl import DenseCL
    from densecl.train import _init_backbone

    torch.manual_seed(7)
    weights = build_backbone("resnet18").state_dict()
    torch.save(weights, tmp_path / "r18.pth")
    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=16)
    _init_backbone(model, str(tmp_path / "r18.pth"), print)
    for encoder in (model.encoder, model.momentum_encoder):
        for key, value in encoder.backbone.state_dict().items():
            assert torch.equal(value, weights[key]), key
    torch.save(build_backbone("resnet34").state_dict(), tmp_path / "r34.pth")
    assert pretrain(tmp_path / "run", "--init", str(tmp_path / "r34.pth"), "--epochs", "1") == 2
    assert "holds a resnet34 backbone" in capsys.readouterr().err


# --------------------------------------------------------------------------- the checkpoint file


def _state(step: int = 5, iters_per_epoch: int = 2) -> checkpoint.TrainingState:
    return checkpoint.TrainingState(
        config={"arch": "resnet18", "epochs": 4, "loss_lambda": 0.5},
        model={"encoder.backbone.conv1.weight": torch.arange(6.0).reshape(2, 3)},
        optimizer={"state": {}, "param_groups": []},
        scaler=None,
        step=step,
        epoch=step // iters_per_epoch,
        iters_per_epoch=iters_per_epoch,
        rng={"torch": torch.get_rng_state()},
        world_size=2,
    )


def test_save_writes_the_documented_dict_atomically_and_load_reads_it_back(tmp_path):
    path = tmp_path / "run" / checkpoint.CHECKPOINT_NAME
    checkpoint.save(path, _state())
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {
        "format",
        "version",
        "config",
        "model",
        "optimizer",
        "scaler",
        "step",
        "epoch",
        "iters_per_epoch",
        "rng",
        "world_size",
    }
    assert (raw["format"], raw["version"], raw["step"]) == ("densecl", 1, 5)
    back = checkpoint.load(path)
    assert (back.step, back.epoch, back.iters_per_epoch, back.world_size) == (5, 2, 2, 2)
    assert torch.equal(back.model["encoder.backbone.conv1.weight"], torch.arange(6.0).reshape(2, 3))


def test_a_checkpoint_written_the_old_way_loads(tmp_path):
    """Version-1 files from before TrainingState: a plain torch.save of the documented dict, no world_size."""
    old = {
        "format": "densecl",
        "version": 1,
        "config": {"arch": "resnet18", "epochs": 2},
        "model": {"global_queue.ptr": torch.tensor([4])},
        "optimizer": {"state": {}, "param_groups": []},
        "scaler": None,
        "step": 6,
        "epoch": 2,
        "iters_per_epoch": 3,
        "rng": {"torch": torch.get_rng_state()},
    }
    torch.save(old, tmp_path / "old.pt")
    state = checkpoint.load(tmp_path / "old.pt")
    assert (state.step, state.epoch, state.iters_per_epoch, state.world_size) == (6, 2, 3, None)
    assert int(state.model["global_queue.ptr"]) == 4
    assert state.planned_steps() == 6 and state.finished() and not state.finished(epochs=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("rng"), r"lacks rng; a densecl version-1 training checkpoint has config, model"),
        (lambda d: d.update(extra=1), r"holds unknown entries extra"),
        (lambda d: d.update(version=2), r"densecl checkpoint of version 2; this densecl reads version 1, upgrade"),
        (lambda d: d.update(format="other"), r"is not a densecl training checkpoint \(for other weights use --init\)"),
    ],
)
def test_load_is_strict(tmp_path, change, message):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, _state())
    raw = torch.load(path, weights_only=True)
    change(raw)
    torch.save(raw, path)
    with pytest.raises(InputError, match=message):
        checkpoint.load(path)


def test_checkpoint_info_and_finished_commands(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, _state(step=5, iters_per_epoch=2))  # 5 of 4 x 2 = 8 steps
    assert main(["checkpoint", "info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {
        "path": str(path),
        "step": 5,
        "epoch": 2,
        "iters_per_epoch": 2,
        "epochs": 4,
        "planned_steps": 8,
        "finished": False,
        "arch": "resnet18",
        "loss_lambda": 0.5,
        "world_size": 2,
        "config": {"arch": "resnet18", "epochs": 4, "loss_lambda": 0.5},
    }
    assert main(["checkpoint", "info", str(path), "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["planned_steps"] == 4
    assert main(["checkpoint", "finished", str(path)]) == 1
    assert capsys.readouterr().out.strip() == f"{path}: step 5 of 8 (4 epochs)"
    assert main(["checkpoint", "finished", str(path), "--epochs", "2"]) == 0
    assert main(["checkpoint", "finished", str(tmp_path / "none.pt")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"densecl checkpoint: error: checkpoint {tmp_path / 'none.pt'} does not exist"
    )


@pytest.mark.slow
def test_geometric_matching_trains_and_changes_the_dense_loss(tmp_path):
    # the ablation: same data, seed and views' distribution; only the dense positives differ
    assert pretrain(tmp_path / "features", "--epochs", "1", "--deterministic", "true") == 0
    assert (
        pretrain(tmp_path / "geometry", "--epochs", "1", "--deterministic", "true", "--dense-matching", "geometry") == 0
    )
    a, b = ([row for row in metrics(tmp_path / run) if "loss_dense" in row] for run in ("features", "geometry"))
    assert checkpoint.load(tmp_path / "geometry" / "checkpoint.pt").config["dense_matching"] == "geometry"
    assert all(math.isfinite(row["loss_dense"]) for row in b) and a[0]["loss_dense"] != b[0]["loss_dense"]


@pytest.mark.slow
def test_hybrid_is_geometry_until_the_switch_then_the_papers_argmax(tmp_path):
    runs = {
        "geometry": ("--dense-matching", "geometry"),
        "hybrid": ("--dense-matching", "hybrid", "--dense-matching-switch", "2"),
        "both": ("--dense-matching", "both"),
    }
    for name, flags in runs.items():
        assert pretrain(tmp_path / name, "--epochs", "1", "--deterministic", "true", *flags) == 0
    geometry, hybrid, both = ([r for r in metrics(tmp_path / name) if "loss_dense" in r] for name in runs)
    assert [r["loss_dense"] for r in hybrid[:2]] == [r["loss_dense"] for r in geometry[:2]]  # steps 0, 1: geometry
    assert hybrid[2]["loss_dense"] != geometry[2]["loss_dense"]  # step 2: the argmax
    assert all(math.isfinite(r["loss_dense"]) for r in both) and both[0]["loss_dense"] != geometry[0]["loss_dense"]


@pytest.mark.slow
def test_mocov2_runs_without_dense_head_logs_no_dense_task_and_resumes(tmp_path):
    assert pretrain(tmp_path, "--epochs", "1", "--loss-lambda", "0") == 0
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert not any("dense" in key for key in state.model)
    rows = [r for r in metrics(tmp_path) if "loss" in r]
    assert rows and all("loss_dense" not in r and "acc_dense" not in r and r["loss"] == r["loss_global"] for r in rows)
    assert main(["pretrain", "--resume", str(tmp_path / "checkpoint.pt"), "--epochs", "2"]) == 0
    assert checkpoint.load(tmp_path / "checkpoint.pt").step == 6


def test_a_switch_point_past_the_end_stops_before_anything_is_built(tmp_path, capsys):
    code = pretrain(tmp_path, "--epochs", "1", "--dense-matching", "hybrid", "--dense-matching-switch", "3")
    assert code == 2 and not (tmp_path / "checkpoint.pt").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "densecl pretrain: error: dense_matching_switch 3 is not before the run's end at iteration 3 (1 epochs of 3 "
        "iterations): choose a point below 3"
    ]


# --------------------------------------------------------------------------- the run folder is never reused silently


@pytest.mark.slow
def test_a_second_new_run_in_the_same_folder_stops_and_names_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert pretrain(run, "--epochs", "1", "--max-iters", "1") == 2
    assert capsys.readouterr().err.strip() == (
        f"densecl pretrain: error: {run / 'checkpoint.pt'} holds a run at step 3; this command would start a new one "
        "there: continue it with --resume, give another --output-dir, or pass --overwrite to move the old run aside"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, "--epochs", "1") == 0
    old = (run / "checkpoint.pt").read_bytes()
    assert pretrain(run, "--epochs", "1", "--max-iters", "1", "--overwrite") == 0
    assert f"moved the earlier run in {run} to {tmp_path / 'run.old-1'}" in capsys.readouterr().out
    assert (tmp_path / "run.old-1" / "checkpoint.pt").read_bytes() == old
    assert len(metrics(tmp_path / "run.old-1")) == 4  # 3 steps and the epoch line, untouched
    assert checkpoint.load(run / "checkpoint.pt").step == 1 and [m["step"] for m in metrics(run)] == [1]
    assert pretrain(run, "--epochs", "1", "--max-iters", "1", "--overwrite") == 0
    assert (tmp_path / "run.old-2" / "checkpoint.pt").is_file()  # never over an earlier old one


@pytest.mark.slow
def test_resume_auto_is_one_command_for_the_first_start_and_every_restart(tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain(run, "--epochs", "1", "--resume", "auto") == 0
    assert "new run in" in capsys.readouterr().out
    first = metrics(run)
    assert pretrain(run, "--epochs", "1", "--resume", "auto") == 0  # finished: nothing more to do, nothing lost
    assert "resuming at iteration 3" in capsys.readouterr().out
    assert checkpoint.load(run / "checkpoint.pt").step == 3 and metrics(run) == first


@pytest.mark.slow
def test_logs_of_a_run_that_never_saved_are_moved_aside_not_mixed_in(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    assert pretrain(run, "--epochs", "1", "--max-iters", "1") == 0
    assert (tmp_path / "run.old-1" / "metrics.jsonl").read_text().count("\n") == 2
    assert [m["step"] for m in metrics(run)] == [1] and metrics(run)[0]["loss"] != 9.0


@pytest.mark.slow
def test_resuming_a_file_into_a_folder_that_holds_another_run_stops(tmp_path, capsys):
    assert pretrain(tmp_path / "a", "--epochs", "1", "--max-iters", "1") == 0
    assert pretrain(tmp_path / "b", "--epochs", "1", "--max-iters", "2") == 0
    b = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    code = main(["pretrain", "--resume", str(tmp_path / "a" / "checkpoint.pt"), "--output-dir", str(tmp_path / "b")])
    assert code == 2 and "holds another run" in capsys.readouterr().err
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == b


@pytest.mark.parametrize(
    "change, message",
    [
        (["--arch", "resnet34"], "holds another model (arch 'resnet18' -> 'resnet34')"),
        (["--hidden-dim", "64"], "holds another model (hidden_dim 32 -> 64)"),
        (["--scenes-length", "16"], "had 3 iterations per epoch, this run has 4"),
    ],
)
@pytest.mark.slow
def test_a_checkpoint_of_another_model_or_data_size_is_one_line_and_nothing_is_written(
    tmp_path, capsys, change, message
):
    run = tmp_path / "run"
    assert pretrain(run, "--epochs", "2", "--max-iters", "2") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert pretrain(run, "--epochs", "2", "--resume", "auto", *change) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and f"the checkpoint of {run} (step 2)" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --------------------------------------------------------------------------- speed: precision, checks, compile


@pytest.mark.slow
def test_precision_auto_on_the_cpu_times_once_then_remembers(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache" / "precision.json"
    monkeypatch.setenv("DENSECL_PRECISION_CACHE", str(cache))
    assert pretrain(tmp_path / "a", "--precision", "auto", "--max-iters", "1") == 0
    out = capsys.readouterr().out
    assert "precision auto: timed on this CPU, fp32 " in out and cache.exists()
    choice = next(iter(json.loads(cache.read_text())["entries"].values()))["choice"]
    assert f"cpu {choice} channels_last" in out  # the run uses what was chosen
    assert pretrain(tmp_path / "b", "--precision", "auto", "--max-iters", "1") == 0
    assert f"precision auto: {choice} (timed earlier on this CPU" in capsys.readouterr().out


@pytest.mark.slow
def test_an_explicit_precision_is_never_timed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DENSECL_PRECISION_CACHE", str(tmp_path / "precision.json"))
    assert pretrain(tmp_path / "run", "--precision", "bf16", "--max-iters", "1") == 0
    assert "precision auto" not in capsys.readouterr().out and not (tmp_path / "precision.json").exists()


@pytest.mark.slow
def test_the_precision_probe_leaves_the_run_untouched():
    from densecl.models.densecl import DenseCL
    from densecl.precision import cpu_probe

    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step = cpu_probe(model, 2, 64, True)
    step("fp32"), step("bf16")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_where_the_host_checks_does_not_change_the_weights(tmp_path):
    # the loss is read every iteration, or every 4th and at the epoch's end: the same training
    args = ("--epochs", "2", "--deterministic", "true")
    assert pretrain(tmp_path / "every", *args, "--log-every", "1") == 0
    assert pretrain(tmp_path / "fourth", *args, "--log-every", "4") == 0
    a, b = (checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("every", "fourth"))
    assert a.step == b.step == 6
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key
    logged = [m for m in metrics(tmp_path / "fourth") if "loss" in m]
    every = [m["loss"] for m in metrics(tmp_path / "every") if "loss" in m]
    assert [m["step"] for m in logged] == [4, 6]  # 6: the end of the run, two steps into an interval, logged too
    assert logged[0]["loss"] == pytest.approx(sum(every[:4]) / 4, rel=1e-6)
    assert logged[1]["loss"] == pytest.approx(sum(every[4:]) / 2, rel=1e-6)


def _poison(monkeypatch, at_call: int) -> None:
    from densecl.models.densecl import DenseCL

    forward, calls = DenseCL.forward, []

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        return out._replace(loss=out.loss * float("nan")) if len(calls) == at_call else out

    monkeypatch.setattr(DenseCL, "forward", poisoned)


@pytest.mark.slow
def test_a_nan_between_checks_is_caught_before_the_next_save(tmp_path, monkeypatch, capsys):
    # checks at iterations 3 (save) and 10 (log): the NaN of iteration 1 is read at 3, before saving
    _poison(monkeypatch, at_call=2)
    assert pretrain(tmp_path / "run", "--epochs", "4", "--log-every", "10", "--save-every", "3") == 1
    assert "epoch 0: loss is nan at iteration 1; stopped without saving" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # the epoch's end is a check too (the epoch's checkpoint follows it): the one of epoch 0 stays
    _poison(monkeypatch, at_call=5)
    assert pretrain(tmp_path / "end", "--epochs", "4", "--log-every", "10") == 1
    assert "epoch 1: loss is nan at iteration 4" in capsys.readouterr().err
    assert checkpoint.load(tmp_path / "end" / "checkpoint.pt").step == 3


@pytest.mark.slow
def test_compile_that_fails_costs_one_line_and_trains_eagerly_as_without_it(tmp_path, monkeypatch, capsys):
    def broken_compile(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler found\ndetails")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    args = ("--epochs", "1", "--deterministic", "true")
    assert pretrain(tmp_path / "compiled", *args, "--compile", "true") == 0
    out = capsys.readouterr().out
    assert "--compile failed (RuntimeError: no C++ compiler found); training eagerly" in out
    assert pretrain(tmp_path / "eager", *args) == 0
    a, b = (checkpoint.load(tmp_path / run / "checkpoint.pt") for run in ("compiled", "eager"))
    for key, value in a.model.items():  # the trial step's BN statistics were put back
        assert torch.equal(value, b.model[key]), key


@pytest.mark.slow
def test_compile_encoders_keeps_the_state_dict_keys_and_the_state():
    from torch import nn

    from densecl.models.densecl import DenseCL
    from densecl.precision import Precision, compile_encoders

    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=32, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    backbone.out_channels = 8
    model = DenseCL(hidden_dim=8, out_dim=4, queue_len=8, backbone=backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert compile_encoders(model, 2, 64, True, Precision(None, "cpu"), print, backend="eager")
    assert model.encoder._compiled_call_impl is not None
    assert {k: v for k, v in model.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)).loss.backward()


@pytest.mark.slow
def test_a_training_step_reads_nothing_back_to_the_host(monkeypatch):
    # on a GPU each read (.item(), int(), bool(), float()) makes the host wait for the device: none per step
    from densecl.engine import NonFiniteWatch, make_sgd
    from densecl.models.densecl import DenseCL
    from densecl.training_log import MeanMeter

    model = DenseCL("resnet18", hidden_dim=16, out_dim=8, queue_len=8, bn_group_size=2)  # grouped BN and its shuffle
    optimizer = make_sgd(model.encoder.parameters(), 0.1, 0.9, 1e-4, "cpu")
    watch, meter = NonFiniteWatch(torch.device("cpu")), MeanMeter()
    x = torch.randn(4, 3, 64, 64)

    def read(self, *args):
        raise AssertionError("a tensor was read on the host during the step")

    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, read)
    for step in range(3):  # the queue wraps around
        out = model(x, x.flip(3))
        watch.update(out.loss, step)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        meter.update(loss=out.loss, acc_global=100 * out.accuracy_global, acc_dense=100 * out.accuracy_dense)
    monkeypatch.undo()
    assert watch.first() is None and int(model.global_queue.ptr) == 4 and meter.count == 3


@pytest.mark.slow
def test_a_run_stopped_short_of_a_log_interval_logs_its_iterations(tmp_path):
    assert pretrain(tmp_path / "every", "--epochs", "2", "--max-iters", "2") == 0
    losses = [m["loss"] for m in metrics(tmp_path / "every") if "loss" in m]
    assert pretrain(tmp_path / "short", "--epochs", "2", "--log-every", "10", "--max-iters", "2") == 0
    logged = [m for m in metrics(tmp_path / "short") if "loss" in m]
    assert [m["step"] for m in logged] == [2] and logged[0]["loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)
