"""Fine-tuning under torchrun: 2 processes, gloo on CPU, DDP, one global batch split over ranks."""

import json
import os
import subprocess
import sys

import pytest

from densecl import distributed
from densecl.evaluation.finetune import BatchStream


def test_batch_stream_is_seeded_and_cycles_epochs():
    batches = list(BatchStream(n=5, global_batch=4, iters=3, seed=0))
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    indices = [i for b in batches for i, _ in b]
    assert sorted(indices[:5]) == list(range(5))  # the first epoch is a permutation
    assert batches == list(BatchStream(n=5, global_batch=4, iters=3, seed=0))
    assert batches != list(BatchStream(n=5, global_batch=4, iters=3, seed=1))


def test_batch_stream_gives_each_rank_its_slice_of_the_same_global_batches(monkeypatch):
    whole = list(BatchStream(n=7, global_batch=4, iters=3, seed=2))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    halves = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        halves.append(list(BatchStream(n=7, global_batch=4, iters=3, seed=2)))
    assert [a + b for a, b in zip(*halves)] == whole  # rank 0 the first two samples, rank 1 the next two


def test_each_rank_draws_its_own_training_sizes_and_rank_0_draws_as_before(monkeypatch):
    import torch

    from densecl.evaluation import det
    from densecl.evaluation.det_config import DetConfig
    from densecl.evaluation.det_model import build_detector
    from densecl.models.backbones import build_backbone
    from densecl.seeding import seed_everything

    transform = build_detector(build_backbone("resnet18"), "resnet18", 3, DetConfig(data="-", detector="c4")).transform
    transform.train()

    def sizes() -> list[int]:  # the shorter sides torchvision's transform picks for 8 training images
        return [transform.torch_choice(transform.min_size) for _ in range(8)]

    draws = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        det.seed_training(seed=3)
        draws[rank] = (sizes(), torch.randperm(100).tolist())  # sizes, and what the RPN / RoI samplers draw from
    assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]
    seed_everything(3)  # what every rank drew before: rank 0 still does
    assert draws[0] == (sizes(), torch.randperm(100).tolist())
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    det.seed_training(seed=2)  # seed + rank: rank 1 of seed 2 draws as rank 0 of seed 3
    assert (sizes(), torch.randperm(100).tolist()) == draws[0]


@pytest.mark.slow
def test_det_under_torchrun_two_processes(scenes, weights_file, tmp_path):
    out = tmp_path / "det.json"
    cmd = [
        # --standalone: a free port
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "densecl", "eval", "det", "--weights", str(weights_file), "--data", str(scenes["coco"]),
        "--task", "mask", "--iters", "2", "--batch-size", "4", "--min-size", "64", "--max-size", "64",
        "--workers", "0", "--proposals", "50", "--rois-per-image", "32", "--detections-per-image", "10",
        "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # rank 0 alone writes and prints
    record = json.loads(out.read_text())
    assert record["data"]["world_size"] == 2 and record["config"]["batch_size"] == 4
    m = {name: v["mean"] for name, v in record["metrics"].items()}
    assert m["segm_AP"] <= m["segm_AP50"] and m["bbox_AP75"] <= m["bbox_AP50"]  # stricter IoU, never higher AP


@pytest.mark.slow
def test_c4_on_voc_under_torchrun_each_rank_scores_a_share_of_rank_0s_model(
    scenes, weights_file, tmp_path, monkeypatch
):
    import torch

    from densecl.evaluation.det_config import DetConfig
    from densecl.evaluation.det_data import load_data
    from densecl.evaluation.det_file import load_detector
    from densecl.evaluation.det_score import Detections, predict, voc_scores

    out = tmp_path / "det.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "densecl", "eval", "det", "--weights", str(weights_file), "--data", str(scenes["voc"]),
        "--detector", "c4", "--iters", "2", "--batch-size", "4", "--min-size", "64", "--max-size", "64",
        "--workers", "0", "--proposals", "50", "--rois-per-image", "32", "--detections-per-image", "10",
        "--norm", "bn", "--precise-bn-iters", "0", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["data"]["world_size"] == 2 and record["data"]["n_val"] == 6
    # the same scores from rank 0's final weights (the detector file; the checkpoint holds the same), each share
    # predicted here as its rank did: the ranks evaluated one model (BatchNorm statistics are rank-local with
    # --norm bn) and rank 0 scored all 6
    recorded = {**record["config"], "save_detector": "", "lr_steps": tuple(record["config"]["lr_steps"])}
    config = DetConfig(**{**recorded, "min_size": tuple(recorded["min_size"])})
    _, val = load_data(config)
    model, _ = load_detector(tmp_path / "det.detector.pt")
    state = torch.load(tmp_path / "det-checkpoints" / "seed0.pt", weights_only=True)["model"]
    assert (
        all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        and model.state_dict().keys() == state.keys()
    )
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        shares += predict(model, val, config)
    found = dict(shares)
    detections = [Detections(*(found[i][k].numpy() for k in ("boxes", "labels", "scores"))) for i in range(6)]
    metrics, details = voc_scores(val, detections, config)
    assert {k: v["mean"] for k, v in record["metrics"].items()} == metrics
    assert record["details"] == [details]
