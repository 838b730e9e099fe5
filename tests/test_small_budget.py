"""The small-budget study: its plan (scripts/small_budget.sh, dry runs) and its report, on hand-written results."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _study import dry_run, plan

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
    assert "### C4 correspondence" in report.document([("photo scenes", run)], None, tmp_path / "out.md", None)
    assert "| 750 | 15.00 | — | — |" in text  # C4: DenseCL, MoCo-v2, both
    assert "| 1500 | 21.00 | 25.00 | 24.50 ± 7.78 (2) |" in text
    assert "| DenseCL (paper) | 1500 | 1.5 h |" in text and "| MoCo-v2 | — | — |" in text
    assert "Random init: 10.00." in text


def _all_instruments(run: Path, name: str, c4: float, miou: float, dense_nn: float) -> None:
    _write(run, name, "correspondence", {"c4_accuracy": c4, "c5_accuracy": c4, "c5_within_32": c4})
    _write(run, name, "dense-nn", {"mIoU": dense_nn})
    _write(run, name, "overcluster", {"mIoU": 10.0})
    _write(run, name, "seg-probe", {"mIoU": miou})
    _write(run, name, "svm", {"mAP": 20.0})


def test_the_study_pairs_each_method_with_moco_v2_by_seed_and_a_rule_with_two_dense_wins_is_the_recipe(tmp_path):
    run = tmp_path / "run"
    #           seed:      0     1     2
    mocov2 = {"c4": (0.20, 0.22, 0.24), "seg": (10.0, 11.0, 12.0), "nn": (15.0, 16.0, 17.0)}
    hybrid = {"c4": (0.25, 0.26, 0.30), "seg": (10.5, 11.4, 12.6), "nn": (16.0, 15.0, 17.0)}
    densecl = {"c4": (0.19, 0.20, 0.20), "seg": (10.0, 11.0, 12.0), "nn": (15.0, 16.0, 17.0)}
    for method, values in (("mocov2", mocov2), ("hybrid", hybrid), ("densecl", densecl)):
        for seed in range(3):
            c4, seg, nn = (values[k][seed] for k in ("c4", "seg", "nn"))
            _all_instruments(run, f"{method}-s{seed}-at1500", c4, seg, nn)
    _all_instruments(run, "densecl-s0-at750", 0.9, 90.0, 90.0)  # another iteration: not the study's
    _all_instruments(run, "random", 0.10, 9.0, 12.0)
    _all_instruments(run, "oracle", 0.11, 30.0, 25.0)
    _point(run, "both-s0-at1500", 0.9, 0.9, 90.0)  # a rule with the curve instruments only: not in the study
    _all_instruments(run, "geometry-s0-at1500", 0.9, 90.0, 90.0)  # a rule on one seed: no interval yet
    (run / "timing.tsv").write_text("pretrain-hybrid-s0\t3600\tT\npretrain-hybrid-s0\t1800\tT\nseg-probe-x\t9\tT\n")
    found = report.read_study(run, 1500)
    assert report.complete_seeds(found) == {
        "densecl": [0, 1, 2],
        "mocov2": [0, 1, 2],
        "hybrid": [0, 1, 2],
        "geometry": [0],
    }
    assert report.study_methods(found) == ["densecl", "mocov2", "geometry", "hybrid"]
    # hybrid - MoCo-v2 in C4 points: 5, 4, 6 -> mean 5, sd 1, t(0.975, 2) = 4.3027 -> half-width 2.484
    # seg-probe: 0.5, 0.4, 0.6 -> 0.5 +- 0.248; dense-nn: 1, -1, 0 -> 0 +- 2.48, no win
    assert report.recipe_wins(found, "hybrid") == [
        "correspondence c4_accuracy",
        "correspondence c5_accuracy",
        "seg-probe mIoU",
    ]
    assert report.recipe_wins(found, "densecl") == []
    assert report.recipe_wins(found, "geometry") is None
    text = "\n".join(report.study_section(run, 1500))
    assert "| hybrid − MoCo-v2 (3 seeds) | +5.00 [+2.52, +7.48] |" in text  # the C5 column comes first
    assert "| MoCo-v2 (3 seeds) | 22.00 ± 2.00 |" in text and "| geometry (1 seed) | 90.00 |" in text
    assert "| geometry − MoCo-v2 (1 seed) | +70.00 (one seed) |" in text
    assert "| random init | 10.00 |" in text and "| supervised reference | — |" in text
    assert "- geometry: not compared yet" in text and "Recipe: hybrid." in text
    assert "| hybrid | 1.50 | — | — |" in text  # wall time of each run, hours
    # MoCo-v2's third seed misses an instrument: its row reads two seeds, each comparison the two it shares
    (run / "eval" / "mocov2-s2-at1500_svm.json").unlink()
    text = "\n".join(report.study_section(run, 1500))
    assert "| MoCo-v2 (2 seeds) | 21.00 ± 1.41 |" in text and "| hybrid (3 seeds) | 27.00 ± 2.65 |" in text
    # C5 differences 5, 4: mean 4.5, sd 0.7071, t(0.975, 1) = 12.706 -> half-width 6.353
    assert "| hybrid − MoCo-v2 (2 seeds) | +4.50 [-1.85, +10.85] |" in text
    assert report.recipe_wins(report.read_study(run, 1500), "hybrid") == []
    assert "Recipe: not decided (a rule has fewer than two seeds shared with MoCo-v2)." in text
    _all_instruments(run, "geometry-s1-at1500", 0.22, 11.0, 16.0)
    assert "Recipe: none; no rule beats MoCo-v2 on 2 dense instruments at 1500 iterations." in "\n".join(
        report.study_section(run, 1500)
    )


def _dry_run(run: Path, data: Path, **env: str) -> list[str]:
    return dry_run("small_budget.sh", run, data, **env)


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_the_curves_take_each_run_to_its_end_a_stretch_at_a_time_and_read_each_stretchs_checkpoint(tmp_path):
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
    # one run to its end before the next (a lost run directory costs one run), the first stretch of DenseCL kept
    runs = [f"pretrain-{m}-s0" for m in ("densecl", "mocov2", "mocov2", "hybrid", "hybrid", "geometry", "geometry")]
    assert pretrain == ["skip pretrain-densecl-s0 (at iteration 10)", *runs, "pretrain-both-s0", "pretrain-both-s0"]
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


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_the_study_adds_seeds_up_to_the_budget_trains_the_supervised_backbones_and_reads_everything_there(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    env = {"N_IMAGES": "100", "BATCH": "6", "EPOCHS": "2", "STRETCH": "5", "BUDGET": "10"}
    lines = _dry_run(run, data, STEPS="seeds supervised eval", STUDY_METHODS="mocov2 hybrid", **env)
    steps = [line.split(":")[1].strip() for line in lines]
    pretrain = [s for s in steps if s.startswith("pretrain-")]
    # two stretches of 5 up to the budget of 10 (not the schedule's 20), one run after the other
    assert pretrain == [f"pretrain-{m}-s{seed}" for seed in (1, 2) for m in ("mocov2", "hybrid") for _ in (1, 2)]
    text = "\n".join(lines)
    assert "--epochs 2 " in text and "--max-iters 10 --keep-every 5" in text
    reference = next(line for line in lines if "reference:" in line)
    assert "seg-finetune --weights random --arch resnet18 --data" in reference and "--train-split train " in reference
    assert "--train-split train+test --val-split test" in next(line for line in lines if "oracle:" in line)
    study = [s for s in steps if s.startswith("svm-")]
    # each seed's run and each supervised backbone read by every instrument as soon as it is there; then the
    # curves' seed 0 and random init
    assert study == [f"svm-{m}-s{seed}-at10" for seed in (1, 2) for m in ("mocov2", "hybrid")] + [
        "svm-reference",
        "svm-oracle",
        "svm-mocov2-s0-at10",
        "svm-hybrid-s0-at10",
        "svm-random",
    ]
    assert steps.index("svm-reference") < steps.index("oracle")
    assert steps.index("svm-mocov2-s1-at10") < steps.index("pretrain-hybrid-s1")  # read before the next run
    assert f"--weights {run}/hybrid-s0/checkpoint_0000010.pt" in text
    assert steps.index("dense-nn-random") < steps.index("svm-mocov2-s0-at10")  # whole columns first
    assert not run.exists() or not (run / "eval").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_on_four_bands_the_supervised_backbones_and_their_readings_take_the_measured_statistics(tmp_path):
    lines = _dry_run(
        tmp_path / "run", tmp_path / "bands", DATASET="bands4", TRAIN_N="64", BATCH="32", EPOCHS="2", STRETCH="2",
        STEPS="supervised eval", STUDY_METHODS="mocov2", STUDY_SEEDS="",
    )  # fmt: skip
    oracle = next(line for line in lines if "oracle:" in line)
    assert "--weights random --arch resnet18 --in-channels 4 --mean M --std S" in oracle
    assert "--train-split train+val --val-split val" in oracle
    reading = next(line for line in lines if "seg-probe-reference:" in line)
    assert "reference/backbone.pth --arch resnet18 --mean M --std S" in reading
    assert "--in-channels 4 --mean M --std S" in next(line for line in lines if "svm-random:" in line)


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_a_run_whose_every_point_is_recorded_is_not_trained_again(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    (run / "eval").mkdir(parents=True)
    curve, study = ("correspondence", "seg-probe"), ("correspondence", "dense-nn", "overcluster", "seg-probe", "svm")
    protocols = {5: curve, 10: study}
    for at, names in protocols.items():  # mocov2-s1 read at both points, its run directory gone (a new machine)
        for protocol in names:
            (run / "eval" / f"mocov2-s1-at{at}_{protocol}.json").write_text("{}")
    (run / "eval" / "hybrid-s1-at5_correspondence.json").write_text("{}")  # hybrid-s1 read at 5 only
    env = {"N_IMAGES": "100", "BATCH": "6", "EPOCHS": "2", "STRETCH": "5", "BUDGET": "10", "STUDY_SEEDS": "1"}
    lines = _dry_run(run, data, STEPS="seeds eval", STUDY_METHODS="mocov2 hybrid", **env)
    steps = [line.split(":")[1].strip() for line in lines]
    assert "skip mocov2-s1 from 5 (every point read)" in steps
    assert not any(s.startswith("pretrain-mocov2") for s in steps)
    assert [s for s in steps if s.startswith("pretrain-")] == ["pretrain-hybrid-s1"] * 2  # a point left: again


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_a_budget_between_kept_checkpoints_stops_with_one_line(tmp_path):
    environment = {**os.environ, "DRY_RUN": "1", "RUN": str(tmp_path / "run"), "BUDGET": "1000", "STRETCH": "750"}
    script = ROOT / "scripts" / "small_budget.sh"
    result = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "small-budget: BUDGET (1000) must be a multiple of STRETCH (750): only those iterations keep a checkpoint"
    )


def test_the_wall_time_of_a_run_counts_its_stretches_since_it_last_started_from_zero(tmp_path):
    lines = [
        ("pretrain-hybrid-s0", 600),  # an older record: no iteration column, the point read next says 750
        ("correspondence-hybrid-s0-at750", 10),
        ("pretrain-mocov2-s0", 700),
        ("correspondence-mocov2-s0-at750", 10),
        ("pretrain-hybrid-s0", 610),
        ("seg-probe-hybrid-s0-at1500", 100),
        ("pretrain-hybrid-s0", 500, 750),  # a new machine: hybrid again from 0
        ("pretrain-hybrid-s0", 200, 1000),  # stopped at a deadline inside a stretch, then resumed
        ("pretrain-hybrid-s0", 300, 1500),
    ]
    tsv = "".join(
        "\t".join([name, str(wall), "2026-12-07T00:00:00Z", *map(str, at)]) + "\n" for name, wall, *at in lines
    )
    (tmp_path / "timing.tsv").write_text(tsv)
    assert report.read_wall_time(tmp_path, per="run") == {"hybrid-s0": 1000.0, "mocov2-s0": 700.0}
    assert report.read_wall_time(tmp_path) == {"hybrid": 1000.0, "mocov2": 700.0}


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_a_supervised_backbone_trained_with_other_settings_stops_the_study_instead_of_standing_for_these(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    (run / "reference").mkdir(parents=True)
    trained = {"crop": 96, "batch_size": 8, "iters": 4500, "lr": 0.02, "output_stride": 32}
    (run / "reference" / "seg-finetune.json").write_text(json.dumps({"config": trained}))
    result = plan("small_budget.sh", run, data, STEPS="supervised")  # the default schedule is output stride 8
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        f"small-budget: stop: {run}/reference was trained with --output-stride 32 (asked 8); move it and its "
        f"readings ({run}/eval/reference_*) away to train it again"
    )
    # the settings it was trained with: planned as before
    result = plan("small_budget.sh", run, data, STEPS="supervised", REF_OS="32")
    assert result.returncode == 0, result.stdout + result.stderr
    reference = next(line for line in result.stdout.splitlines() if "reference:" in line)
    assert "--crop 96 --batch-size 8 --iters 4500 --lr 0.02 --output-stride 32 " in reference
    lines = _dry_run(tmp_path / "fresh", data, STEPS="supervised")
    assert "--lr 0.02 --output-stride 8 " in next(line for line in lines if "oracle:" in line)
