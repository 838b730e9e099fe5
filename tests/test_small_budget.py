"""The small-budget study: its plan (scripts/small_budget.sh, dry runs) and its report, on hand-written results."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densecl import checkpoint

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("small_budget_report", ROOT / "scripts" / "small_budget_report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _write(run: Path, name: str, protocol: str, metrics: dict[str, float]) -> None:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    record = {"metrics": {k: {"mean": v, "std": 0.0, "per_seed": [v]} for k, v in metrics.items()}}
    (run / "eval" / f"{name}_{protocol}.json").write_text(json.dumps(record))


def _point(run: Path, name: str, c4: float, c5: float, miou: float) -> None:
    _write(run, name, "correspondence", {"c4_accuracy": c4, "c5_accuracy": c5})
    _write(run, name, "seg-probe", {"mIoU": miou})


def test_the_budget_that_learns_is_the_first_point_where_every_seed_clears_both_margins(tmp_path):
    run = tmp_path / "run"
    _point(run, "random", 0.10, 0.20, 5.0)  # floor: C4 10 %, seg-probe 5 mIoU; the margins ask for 20 % and 7
    _point(run, "densecl-s0-at750", 0.15, 0.22, 6.0)
    _point(run, "densecl-s0-at1500", 0.21, 0.25, 7.5)  # both margins cleared
    _point(run, "mocov2-s0-at1500", 0.25, 0.30, 6.9)  # seg-probe short by 0.1
    _point(run, "both-s0-at1500", 0.30, 0.30, 8.0)
    _point(run, "both-s1-at1500", 0.19, 0.30, 8.0)  # one seed's C4 short: the budget does not count
    (run / "timing.tsv").write_text(
        "pretrain-densecl-s0\t3600\tT\npretrain-densecl-s0\t1800\tT\ncorrespondence-x\t9\tT\n"
    )
    points, floor = report.read_points(run), report.read_floor(run)
    assert floor[("correspondence", "c4_accuracy")] == pytest.approx(10.0)
    assert report.learning_budget(points, floor, "densecl") == 1500
    assert report.learning_budget(points, floor, "mocov2") is None
    assert report.learning_budget(points, floor, "both") is None
    text = report.report(run, None, tmp_path / "out.md")
    assert "| 750 | 15.00 | — | — |" in text  # C4: DenseCL, MoCo-v2, both
    assert "| 1500 | 21.00 | 25.00 | 24.50 ± 7.78 (2) |" in text
    assert "| DenseCL (paper) | 1500 | 1.5 h |" in text and "| MoCo-v2 | — | — |" in text
    assert "Random init: 10.00." in text


def _dry_run(run: Path, data: Path, **env: str) -> list[str]:
    environment = {
        **os.environ,
        "DRY_RUN": "1",
        "RUN": str(run),
        "DATA": str(data),
        "BIN": str(Path(sys.executable).parent),
        **env,
    }
    script = ROOT / "scripts" / "small_budget.sh"
    result = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_the_curves_advance_every_method_a_stretch_at_a_time_and_read_each_stretchs_checkpoint(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("made")
    state = checkpoint.TrainingState({"epochs": 2}, {}, {}, None, 10, 1, 10, {})
    checkpoint.save(run / "densecl-s0" / "checkpoint.pt", state)  # the first stretch of DenseCL is done
    env = {"N_IMAGES": "100", "BATCH": "6", "EPOCHS": "2", "STRETCH": "10", "SWITCH": "15", "STEPS": "data curves"}
    lines = _dry_run(run, data, **env)  # 10 iterations an epoch (60 train images / 6): 20 in all, 2 stretches
    steps = [line.split(":")[1].strip() for line in lines]
    assert steps[:2] == ["correspondence-random", "seg-probe-random"]
    pretrain = [s for s in steps if s.startswith(("pretrain-", "skip pretrain-"))]
    assert pretrain[:5] == ["skip pretrain-densecl-s0 (at iteration 10)"] + [
        f"pretrain-{m}-s0" for m in ("mocov2", "hybrid", "geometry", "both")
    ]
    assert len(pretrain) == 2 * 5
    text = "\n".join(lines)
    assert f"--resume {run}/densecl-s0/checkpoint.pt --epochs 2 --max-iters 20" in text
    hybrid = next(line for line in lines if "pretrain-hybrid-s0:" in line)
    assert (
        "--max-iters 10 --keep-every 10 --loss-lambda 0.5 --dense-matching hybrid --dense-matching-switch 15" in hybrid
    )
    assert "--crop-size 96" in hybrid and "--precision fp32" in hybrid
    mocov2 = next(line for line in lines if "pretrain-mocov2-s0:" in line)
    assert "--loss-lambda 0 " in mocov2 and "--dense-matching" not in mocov2
    assert f"--weights {run}/both-s0/checkpoint_0000020.pt" in text  # the last point
    assert "--crop 160" in next(line for line in lines if "correspondence-both-s0-at20:" in line)
    assert not (run / "eval").exists()  # nothing written


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_the_gpu_variant_plans_the_curves_at_one_gpus_budget(tmp_path):
    environment = {**os.environ, "DRY_RUN": "1", "OUT_DIR": str(tmp_path), "STUDY": "small-budget"}
    script = ROOT / "scripts" / "experiment_gpu.sh"
    result = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first = next(line for line in lines if "pretrain-both-s0:" in line)
    for flag in ("--device cuda", "--precision bf16", "--batch-size 256", "--crop-size 160", "--epochs 200"):
        assert flag in first
    assert "--max-iters 180 --keep-every 180" in first
    assert sum("pretrain-densecl-s0:" in line for line in lines) == 1800 // 180
    assert "--out docs/results-small-budget-gpu.md" in next(line for line in lines if "report:" in line)
    assert not (tmp_path / "small-budget-gpu").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_the_4_band_study_makes_its_scenes_trains_on_their_train_images_and_reads_val(tmp_path):
    run, data = tmp_path / "run", tmp_path / "bands"
    lines = _dry_run(run, data, DATASET="bands4", TRAIN_N="64", BATCH="32", EPOCHS="2", STRETCH="2", METHODS="both")
    text = "\n".join(lines)
    for layout in ("coco", "voc"):
        assert f"export-scenes --format {layout} --out {data}/{layout} --n-train 64" in text and "--bands 4" in text
    assert "--weights random --arch resnet18 --in-channels 4 --mean M --std S" in text  # the floor reads 4 bands
    first = next(line for line in lines if "pretrain-both-s0:" in line)
    assert f"--data {data}/coco/train" in first
    corr = next(line for line in lines if "correspondence-both-s0-at2:" in line)
    assert f"--data {data}/coco/val" in corr and "--crop 112" in corr
    assert f"--data {data}/voc --val-split val" in next(line for line in lines if "seg-probe-both-s0-at4:" in line)
