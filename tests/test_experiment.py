"""`make experiment`: the report's statistics and tables on hand-made results, and the script's dry run and resume
logic.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _study import dry_run

from densecl import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "experiment.sh"
_spec = importlib.util.spec_from_file_location("experiment_report", ROOT / "scripts" / "experiment_report.py")
report = sys.modules["experiment_report"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(report)


def _record(metrics: dict[str, float]) -> dict:
    return {"metrics": {k: {"mean": v, "std": 0.0, "per_seed": [v]} for k, v in metrics.items()}}


def _write(run: Path, name: str, protocol: str, metrics: dict[str, float]) -> None:
    (run / "eval").mkdir(parents=True, exist_ok=True)
    (run / "eval" / f"{name}_{protocol}.json").write_text(json.dumps(_record(metrics)))


# ------------------------------------------------------------------ statistics


def test_paired_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 df) = 4.302653 -> half-width 4.302653 / sqrt(3)
    mean, half = report.paired_interval([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
    assert report.paired_interval([1.0], [0.5]) == (0.5, None)
    assert report.mean_std([2.0, 4.0]) == (3.0, pytest.approx(2**0.5))


def test_headline_cells_difference_and_verdict(tmp_path):
    run = tmp_path / "run"
    for seed, (d, m) in enumerate([(0.30, 0.20), (0.32, 0.21), (0.31, 0.22)]):
        _write(run, f"densecl-s{seed}", "correspondence", {"c5_accuracy": d})
        _write(run, f"mocov2-s{seed}", "correspondence", {"c5_accuracy": m})
        _write(run, f"densecl-s{seed}", "svm", {"mAP": 50.0 + seed})
        _write(run, f"mocov2-s{seed}", "svm", {"mAP": 50.0 + (1 - seed)})  # 50, 51, 52 vs 51, 50, 49
    _write(run, "random", "correspondence", {"c5_accuracy": 0.15})
    _write(run, "mocov2-s9", "svm", {"mAP": 1.0})  # a seed without its DenseCL twin is left out
    study = report.collect(run)
    assert study.seeds == [0, 1, 2]
    assert report.method_cell(study, "densecl", "correspondence", "c5_accuracy", 100) == "31.00 ± 1.00"
    # differences 10, 11, 9 points: mean 10, sd 1
    half = 4.302653 / 3**0.5
    assert (
        report.difference_cell(study, "correspondence", "c5_accuracy", 100)
        == f"+10.00 [+{10 - half:.2f}, +{10 + half:.2f}]"
    )
    assert report.verdict(study, "correspondence", "c5_accuracy") == "DenseCL higher (DenseCL higher on 3 of 3 seeds)"
    assert (
        report.verdict(study, "svm", "mAP") == "no difference resolved (DenseCL higher on 2 of 3 seeds)"
    )  # differences -1, +1, +3
    assert report.single_cell(study, "random", "correspondence", "c5_accuracy", 100) == "15.00"
    assert report.single_cell(study, "reference", "svm", "mAP", 1) == "—"
    table = report.headline_table(study)
    assert "| DenseCL (3 seeds) | 31.00 ± 1.00 |" in table and "| random init | 15.00 |" in table


def test_the_grouped_section_pairs_each_method_with_its_single_group_self_and_counts_seeds_above_the_floor(tmp_path):
    run = tmp_path / "run"
    # seg-probe mIoU: one group D 12, 13, 14 / M 13, 13, 13; groups of 8 D 15, 16, 17 / M 14, 13, 15; floor 13.5
    for seed, (d, m, dg, mg) in enumerate([(12, 13, 15, 14), (13, 13, 16, 13), (14, 13, 17, 15)]):
        for name, v in (("densecl", d), ("mocov2", m), ("densecl-bn8", dg), ("mocov2-bn8", mg)):
            _write(run, f"{name}-s{seed}", "seg-probe", {"mIoU": float(v)})
    _write(run, "random", "seg-probe", {"mIoU": 13.5})
    study = report.collect(run)
    assert report.group_size(study) == 8
    table = report.grouped_table(study, 8)
    half = 4.302653 / 3**0.5  # sd 1 of the paired differences
    assert "| DenseCL, groups of 8 |" in table and "16.00 ± 1.00 |" in table
    # DenseCL − MoCo-v2 with groups: 1, 3, 2 -> mean 2, sd 1
    assert (
        f"| DenseCL − MoCo-v2, groups, 95 % CI | — | — | — | — | — | +2.00 [{2 - half:+.2f}, {2 + half:+.2f}] |"
        in table
    )
    # DenseCL: groups − one group = 3, 3, 3 (sd 0); MoCo-v2: 1, 0, 2 -> mean 1, sd 1
    assert "| DenseCL: groups − one group, 95 % CI | — | — | — | — | — | +3.00 [+3.00, +3.00] |" in table
    assert f"+1.00 [{1 - half:+.2f}, {1 + half:+.2f}]" in table
    assert "| DenseCL, one group: seeds above random init | — | — | — | — | — | 1 of 3 |" in table
    assert "| MoCo-v2, groups: seeds above random init | — | — | — | — | — | 2 of 3 |" in table


def test_a_study_whose_grouped_runs_are_not_all_done_compares_them_on_the_seeds_that_have_them(tmp_path):
    run = tmp_path / "run"
    # seg-probe mIoU: seeds 0 and 1 with one group (D 12, 14 / M 13, 13), only seed 0 with groups (D 15 / M 14)
    for seed, (d, m) in enumerate([(12, 13), (14, 13)]):
        _write(run, f"densecl-s{seed}", "seg-probe", {"mIoU": float(d)})
        _write(run, f"mocov2-s{seed}", "seg-probe", {"mIoU": float(m)})
    _write(run, "densecl-bn8-s0", "seg-probe", {"mIoU": 15.0})
    _write(run, "mocov2-bn8-s0", "seg-probe", {"mIoU": 14.0})
    _write(run, "densecl-bn8-s1", "seg-probe", {"mIoU": 99.0})  # its MoCo-v2 twin is not evaluated yet: left out
    study = report.collect(run)
    assert study.seeds == [0, 1] and report.grouped_seeds(study, 8) == [0]
    table = report.grouped_table(study, 8)
    assert "| DenseCL, groups of 8 | — | — | — | — | — | 15.00 |" in table
    assert "| DenseCL − MoCo-v2, groups, 95 % CI | — | — | — | — | — | +1.00 (one seed) |" in table
    # the single-group rows read seed 0 only: 12 − 13, not the two seeds' mean difference (+0.00)
    assert "| DenseCL − MoCo-v2, one group, 95 % CI | — | — | — | — | — | -1.00 (one seed) |" in table
    assert "| DenseCL: groups − one group, 95 % CI | — | — | — | — | — | +3.00 (one seed) |" in table
    assert "Every row of this table reads the seeds with all four runs: seed 0." in "\n".join(
        report.grouped_section(study, run)
    )


def test_the_accuracy_table_reads_the_logged_accuracies_at_fixed_steps_and_the_end(tmp_path):
    run = tmp_path / "run"
    for seed in (0, 1):
        for name in ("densecl", "mocov2"):
            _write(run, f"{name}-s{seed}", "svm", {"mAP": 1.0})
        lines = [
            {"step": st, "loss": 1.0, "acc_global": 10.0 * st / 100 + seed, "acc_dense": 90.0} for st in (100, 300, 400)
        ]
        lines.append({"epoch": 3, "step": 400, "skipped_images": 0})  # an epoch line, no accuracy
        (run / f"densecl-s{seed}").mkdir(parents=True)
        (run / f"densecl-s{seed}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    study = report.collect(run)
    table = report.accuracy_table(study, run, None)
    # step 100: 10 and 11 -> 10.5 ± 0.7; step 300: 30, 31; the end (step 400): 40, 41; MoCo-v2 logged nothing
    assert "| DenseCL, one group (2 seeds) | 10.5 ± 0.7 | 30.5 ± 0.7 | 40.5 ± 0.7 | 90.0 ± 0.0 |" in table
    assert "| MoCo-v2, one group (0 seeds) | — | — |" in table


def test_settings_come_from_the_checkpoints_and_every_difference_is_named(tmp_path):
    run = tmp_path / "run"
    base = {"arch": "resnet18", "queue_len": 64, "loss_lambda": 0.5, "seed": 0, "output_dir": "a", "crop_size": 160}
    for name, config in (
        ("densecl-s0", base),
        ("mocov2-s0", {**base, "loss_lambda": 0.0, "output_dir": "b", "queue_len": 128}),
    ):
        checkpoint.save(run / name / "checkpoint.pt", checkpoint.TrainingState(config, {}, {}, None, 1, 0, 1, {}))
    lines = report.settings_lines(report.collect(run))
    assert "arch resnet18" in lines[0] and "crop_size 160" in lines[0]
    assert "DenseCL lambda 0.5, MoCo-v2 lambda 0.0" in lines[1] and "**they also differ in queue_len**" in lines[1]


def test_a_checkpoint_older_than_a_setting_reads_as_its_default(tmp_path):
    # densecl-s0 of the CPU study predates dense_matching; the default ("features") is what it ran
    run = tmp_path / "run"
    base = {"arch": "resnet18", "loss_lambda": 0.5}
    for name, config in (
        ("densecl-s0", base),
        ("mocov2-s0", {**base, "loss_lambda": 0.0, "dense_matching": "features"}),
    ):
        checkpoint.save(run / name / "checkpoint.pt", checkpoint.TrainingState(config, {}, {}, None, 1, 0, 1, {}))
    assert report.settings_lines(report.collect(run))[1].endswith("every other setting is the same.")
    config = {**base, "loss_lambda": 0.0, "dense_matching": "geometry"}
    checkpoint.save(run / "mocov2-s0" / "checkpoint.pt", checkpoint.TrainingState(config, {}, {}, None, 1, 0, 1, {}))
    assert "**they also differ in dense_matching**" in report.settings_lines(report.collect(run))[1]


def test_each_ablation_row_names_what_its_checkpoint_changed(tmp_path):
    run = tmp_path / "run"
    base = {"arch": "resnet18", "loss_lambda": 0.5, "dense_queue_len": 1024, "output_dir": "a"}
    configs = {  # an ablation's comment (experiment.sh's --comment) is its label
        "densecl-s0": base,
        "mocov2-s0": {**base, "loss_lambda": 0.0},
        "densecl-densequeue-s0": {
            **base,
            "dense_queue_len": 256,
            "output_dir": "b",
            "comment": "a shorter dense queue",
        },
        "densecl-warmup-s0": {**base, "output_dir": "c", "comment": "lambda warm-up over the first half of the run"},
        "densecl-geometry-s0": {**base, "dense_queue_len": None, "dense_matching": "geometry"},  # no comment
        "densecl-bn8-s0": {**base, "bn_group_size": 8},  # grouped batch norm: its own section, no ablation
    }

    def save(name):
        checkpoint.save(
            run / name / "checkpoint.pt", checkpoint.TrainingState(configs[name], {}, {}, None, 1, 0, 1, {})
        )

    for name in configs:
        _write(run, name, "svm", {"mAP": 50.0})
        if name != "densecl-densequeue-s0":
            save(name)
    assert "| densecl-densequeue-s0 | — |" in report.ablation_table(report.collect(run))  # no checkpoint yet: its name
    save("densecl-densequeue-s0")
    table = report.ablation_table(report.collect(run))
    assert "| a shorter dense queue (dense_queue_len 256 instead of 1024) |" in table
    assert "| lambda warm-up over the first half of the run (**no setting differs**) |" in table
    assert (
        "| densecl-geometry-s0 (dense_matching geometry instead of features, dense_queue_len None instead of " in table
    )
    assert "bn8" not in table
    assert "| MoCo-v2 | — |" in table and "| DenseCL (paper) | — |" in table


@pytest.mark.slow
def test_rewriting_the_report_keeps_the_analysis_and_draws_the_radius_figure(tmp_path):
    run, out, figures = tmp_path / "run", tmp_path / "docs" / "results.md", tmp_path / "docs" / "figures"
    for seed in (0, 1):
        for method, base in (("densecl", 0.3), ("mocov2", 0.2)):
            metrics = {f"{s}_within_{r}": base + r / 200 for s in ("c4", "c5") for r in (16, 32, 64)}
            _write(run, f"{method}-s{seed}", "correspondence", {**metrics, "c5_accuracy": base})
    import numpy as np

    masks = {
        "images": np.zeros((2, 8, 8, 3), np.uint8),
        "labels": np.zeros((2, 8, 8), np.uint8),
        "predictions": np.ones((2, 8, 8), np.uint8),
        "classes": np.array(["background", "cat"]),
    }
    np.savez(run / "eval" / "densecl-s0_dense-nn-masks.npz", **masks)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    report.write_report(run, "scenes", out, figures)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # the run folder (a kept record) is read only
    text = out.read_text()
    assert "(figures/accuracy_radius.png)" in text and (figures / "accuracy_radius.png").exists()
    assert "(figures/dense_nn_masks.png)" in text and (figures / "dense_nn_masks.png").exists()
    assert text.endswith(f"{report.ANALYSIS_MARKER}\n\n{report.NO_ANALYSIS}")
    analysis = "## Analysis\n\nHand-written.\n"
    out.write_text(text.split(report.ANALYSIS_MARKER)[0] + report.ANALYSIS_MARKER + "\n\n" + analysis)
    _write(run, "densecl-s0", "svm", {"mAP": 55.0})
    text = report.write_report(run, "scenes", out, figures).read_text()
    assert text.endswith(report.ANALYSIS_MARKER + "\n\n" + analysis) and text.count(report.ANALYSIS_MARKER) == 1


def test_the_report_names_the_machines_the_record_ran_on_not_the_one_writing_it(tmp_path):
    run = tmp_path / "run"
    _write(run, "densecl-s0", "svm", {"mAP": 55.0})
    assert report.collect(run).machine.startswith("not recorded (cpu ")  # which machine wrote it, marked as such
    (run / "MACHINE").write_text("cpu Intel(R) Xeon(R) Processor, cores 2\n\nAMD EPYC, 2 cores\n")
    study = report.collect(run)
    assert study.machine == "cpu Intel(R) Xeon(R) Processor, cores 2; AMD EPYC, 2 cores"
    assert "Machine: cpu Intel(R) Xeon(R) Processor, cores 2; AMD EPYC, 2 cores." in report.render(study, "d", run)


# ------------------------------------------------------------------ the script


def _dry_run(run: Path, data: Path, **env: str) -> list[str]:
    return dry_run("experiment.sh", run, data, **env)


def _step(line: str) -> str:
    return line.split(":")[1].strip()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_dry_run_pairs_the_methods_and_runs_nothing(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    lines = _dry_run(run, data, EPOCHS="7", SEEDS="0 1")
    steps = [_step(line) for line in lines]
    assert steps[0] == "scenes" and steps[-1] == "report"
    pretrain = {_step(line): line for line in lines if _step(line).startswith("pretrain-")}
    assert list(pretrain) == [
        "pretrain-densecl-s0",
        "pretrain-mocov2-s0",
        "pretrain-densecl-bn8-s0",
        "pretrain-mocov2-bn8-s0",
        "pretrain-densecl-s1",
        "pretrain-mocov2-s1",
        "pretrain-densecl-bn8-s1",
        "pretrain-mocov2-bn8-s1",
        "pretrain-densecl-warmup-s0",
        "pretrain-densecl-geometry-s0",
        "pretrain-densecl-densequeue-s0",
    ]  # a stop leaves whole seeds of both batch-norm settings

    # DenseCL and MoCo-v2 differ in lambda (and their folder) only
    def same(line):
        return line.split(":", 2)[2].replace("--loss-lambda 0.5", "").replace("--loss-lambda 0", "")

    assert same(pretrain["pretrain-densecl-s1"]).replace("densecl-s1", "mocov2-s1") == same(
        pretrain["pretrain-mocov2-s1"]
    )
    assert "--seed 1" in pretrain["pretrain-densecl-s1"] and "--epochs 7" in pretrain["pretrain-mocov2-s0"]
    assert "--dense-matching geometry" in pretrain["pretrain-densecl-geometry-s0"]
    # the single-group runs say so (the demo recipe they start from groups), the grouped ones differ in that only
    assert pretrain["pretrain-densecl-s0"].endswith("--bn-group-size none --loss-lambda 0.5 ")
    assert same(pretrain["pretrain-mocov2-bn8-s1"]).replace("-bn8", "").replace(" --bn-group-size 8", "") == same(
        pretrain["pretrain-mocov2-s1"]
    )
    assert "reference" in steps and "skip eval of densecl-s0 (pre-training not finished)" in "\n".join(lines)
    supervised = {_step(line): line for line in lines if _step(line) in ("reference", "oracle")}
    assert "--train-split train --" in supervised["reference"] and "--train-split train+test --" in supervised["oracle"]
    assert same(supervised["reference"]).replace("reference", "oracle").replace("train --", "train+test --") == same(
        supervised["oracle"]
    )
    for p in ("correspondence", "dense-nn", "overcluster", "seg-probe", "svm"):
        assert f"{p}-random" in steps
    matches = next(line for line in lines if _step(line) == "matches")  # the picture of right and wrong matches
    assert (
        "densecl-s0/checkpoint.pt" in matches and "mocov2-s0/checkpoint.pt" in matches and "--weights random" in matches
    )
    assert not run.exists()  # nothing written


def _fake_checkpoint(path: Path, step: int, iters_per_epoch: int = 10) -> None:
    state = checkpoint.TrainingState({"epochs": 99}, {}, {}, None, step, step // iters_per_epoch, iters_per_epoch, {})
    checkpoint.save(path, state)


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_dry_run_skips_what_exists_and_resumes_unfinished_pretraining(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("done")
    _fake_checkpoint(run / "densecl-s0" / "checkpoint.pt", step=30)  # 3 of EPOCHS=3 epochs: finished
    _fake_checkpoint(run / "mocov2-s0" / "checkpoint.pt", step=12)  # interrupted in epoch 2
    (run / "eval").mkdir()
    (run / "eval" / "densecl-s0_svm.json").write_text("{}")
    lines = _dry_run(run, data, EPOCHS="3", SEEDS="0", STEPS="data pretrain eval")
    text = "\n".join(lines)
    assert "scenes" not in [_step(line) for line in lines]
    assert f"skip pretrain-densecl-s0 ({run}/densecl-s0/checkpoint.pt has all 3 epochs)" in text
    assert f"--resume {run}/mocov2-s0/checkpoint.pt --epochs 3" in next(
        line for line in lines if "pretrain-mocov2-s0:" in line
    )
    assert "skip svm-densecl-s0" in text and "experiment: dense-nn-densecl-s0:" in text
    assert "skip eval of mocov2-s0 (pre-training not finished)" in text
    assert "pretrain-densecl-warmup" not in text  # STEPS leaves the ablations out


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_pretraining_stops_when_the_study_was_started_by_other_code(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("done")
    _fake_checkpoint(run / "densecl-s0" / "checkpoint.pt", step=30)  # finished: needs no code
    _fake_checkpoint(run / "mocov2-s0" / "checkpoint.pt", step=12)  # to resume: must be the recorded code
    (run / "PRETRAIN_COMMIT").write_text("0123abcd\n")
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "RUN": str(run),
        "DATA": str(data),
        "EPOCHS": "3",
        "SEEDS": "0",
        "STEPS": "pretrain",
        "BIN": str(Path(sys.executable).parent),
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "skip pretrain-densecl-s0" in result.stdout and "pretrain-mocov2-s0:" not in result.stdout
    assert (
        f"stop: {run} was pre-trained by commit 0123abcd" in result.stdout
        and "git worktree add ../study-code 0123abcd" in result.stdout
    )
    mixed = subprocess.run(
        ["bash", str(SCRIPT)], env={**env, "MIXED_CODE": "1"}, capture_output=True, text=True, timeout=120
    )
    assert mixed.returncode == 0 and f"--resume {run}/mocov2-s0/checkpoint.pt" in mixed.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_past_the_deadline_every_step_but_the_report_is_skipped(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("done")
    lines = _dry_run(run, data, DEADLINE="1", SEEDS="0", STEPS="pretrain eval report")
    text = "\n".join(lines)
    assert "skip pretrain-densecl-s0 (deadline: " in text and "skip dense-nn-random (deadline: " in text
    assert [_step(line) for line in lines if not line.startswith("experiment: skip")] == ["report"]
    ahead = _dry_run(run, data, DEADLINE="99999999999", SEEDS="0", STEPS="pretrain")  # time left: planned as usual
    assert [_step(line) for line in ahead] == ["pretrain-densecl-s0", "pretrain-mocov2-s0"]


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_keep_going_reports_a_failed_step_and_runs_the_rest(tmp_path):
    run, data, bin_dir = tmp_path / "run", tmp_path / "data", tmp_path / "bin"
    data.mkdir()
    (data / "README.md").write_text("done")
    bin_dir.mkdir()
    (bin_dir / "densecl").write_text('#!/bin/sh\n[ "$2" = svm ] && exit 3\necho "ran $*" >> "$LOG"\n')  # svm fails
    (bin_dir / "densecl").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {
        **os.environ,
        "RUN": str(run),
        "DATA": str(data),
        "BIN": str(bin_dir),
        "SEEDS": "0",
        "STEPS": "eval",
        "LOG": str(tmp_path / "log"),
        "KEEP_GOING": "1",
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "experiment: svm-random failed (exit status 3); going on" in result.stdout
    assert "ran plot" in (tmp_path / "log").read_text()  # the steps after the failure ran
    stopped = subprocess.run(
        ["bash", str(SCRIPT)], env={**env, "KEEP_GOING": ""}, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 3  # without it a failure ends the study, as before


# a densecl that writes what each command would: a pre-training's checkpoint and metrics, an instrument's JSON
_FAKE_DENSECL = """#!/bin/sh
echo "ran $*" >> "$LOG"
if [ "$1" = checkpoint ]; then
  [ "$2" = finished ] && { grep -q done "$3" 2>/dev/null; exit $?; }
  echo '{"step": 30, "config": {"arch": "resnet18", "loss_lambda": 0.5}}'; exit 0
fi
while [ $# -gt 1 ]; do
  case $1 in
    --output-dir) mkdir -p "$2"; echo done > "$2/checkpoint.pt"; echo '{"step": 10}' > "$2/metrics.jsonl" ;;
    --out) echo '{}' > "$2" ;;
  esac
  shift
done
"""


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_a_record_carries_a_study_to_a_new_machine_without_training_an_evaluated_backbone_again(tmp_path):
    data, bin_dir, record = tmp_path / "data", tmp_path / "bin", tmp_path / "record"
    data.mkdir()
    (data / "README.md").write_text("done")
    bin_dir.mkdir()
    (bin_dir / "densecl").write_text(_FAKE_DENSECL)
    (bin_dir / "densecl").chmod(0o755)
    env = {**os.environ, "DATA": str(data), "BIN": str(bin_dir), "SEEDS": "0", "STEPS": "pretrain eval"}
    env.update(RECORD=str(record), LOG=str(tmp_path / "log"))

    def study(run: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT)], env={**env, "RUN": str(tmp_path / run)}, capture_output=True, text=True, timeout=120
        )

    first = study("a")
    assert first.returncode == 0, first.stderr
    for name in ("densecl-s0", "mocov2-s0", "random"):
        assert (record / "eval" / f"{name}_svm.json").exists()
    assert json.loads((record / "mocov2-s0" / "checkpoint-info.json").read_text())["config"]["arch"] == "resnet18"
    assert (record / "mocov2-s0" / "metrics.jsonl").exists() and (record / "timing.tsv").exists()
    assert not list(record.rglob("checkpoint.pt"))  # the record keeps the small outputs only
    assert set(report.collect(record).configs) == {"densecl-s0", "mocov2-s0"}  # the report reads the record as a run

    (record / "eval" / "mocov2-s0_seg-probe.json").unlink()  # mocov2-s0 not fully evaluated: trained again
    (tmp_path / "log").unlink()
    second = study("b")
    assert second.returncode == 0, second.stderr
    assert (
        "skip pretrain-densecl-s0 (evaluated)" in second.stdout
        and "skip eval of densecl-s0 (evaluated)" in second.stdout
    )
    assert "experiment: pretrain-mocov2-s0:" in second.stdout
    ran = (tmp_path / "log").read_text()
    assert "eval seg-probe --weights" in ran and "eval svm" not in ran  # only the missing instrument
    assert (tmp_path / "b" / "densecl-s0" / "metrics.jsonl").exists()  # restored: the curves can be drawn


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_the_oracle_learns_train_and_test_labels_and_both_supervised_backbones_are_evaluated(tmp_path):
    run, data, bin_dir = tmp_path / "run", tmp_path / "data", tmp_path / "bin"
    splits = data / "voc" / "ImageSets" / "Segmentation"
    splits.mkdir(parents=True)
    (data / "README.md").write_text("done")
    (splits / "train.txt").write_text("a\nb\n")
    (splits / "test.txt").write_text("c\n")
    bin_dir.mkdir()
    # a fake densecl: records its arguments, writes the --save-backbone file as seg-finetune would
    (bin_dir / "densecl").write_text(
        '#!/bin/bash\necho "ran $*" >> "$LOG"\n'
        'while [ $# -gt 0 ]; do [ "$1" = --save-backbone ] && mkdir -p "$(dirname "$2")" && touch "$2"; shift; done\n'
    )
    (bin_dir / "densecl").chmod(0o755)
    env = {
        **os.environ,
        "RUN": str(run),
        "DATA": str(data),
        "BIN": str(bin_dir),
        "SEEDS": "0",
        "STEPS": "reference oracle eval",
        "LOG": str(tmp_path / "log"),
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (splits / "train+test.txt").read_text() == "a\nb\nc\n" and not (splits / "train+test.txt.tmp").exists()
    log = (tmp_path / "log").read_text().splitlines()
    oracle = next(line for line in log if f"--save-backbone {run}/oracle/backbone.pth" in line)
    assert "--train-split train+test " in oracle and "--val-split test " in oracle
    for name in ("reference", "oracle"):
        assert any(f"eval seg-probe --weights {run}/{name}/backbone.pth" in line for line in log)
    again = subprocess.run(
        ["bash", str(SCRIPT)], env={**env, "STEPS": "reference oracle"}, capture_output=True, text=True, timeout=120
    )
    assert "skip oracle" in again.stdout and "skip reference" in again.stdout  # never retrained over


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
@pytest.mark.slow
def test_gpu_variant_plans_the_same_study_at_gpu_scale(tmp_path):
    environment = {**os.environ, "DRY_RUN": "1", "OUT_DIR": str(tmp_path), "ASSETS": str(tmp_path / "assets")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "experiment_gpu.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pretrain = next(line for line in lines if "pretrain-densecl-s0:" in line)
    assert "--device cuda" in pretrain and "--crop-size 224" in pretrain and "--batch-size 256" in pretrain
    grouped = next(line for line in lines if "pretrain-mocov2-bn32-s2:" in line)  # 8 groups of 32: the authors' GPUs
    assert grouped.endswith("--bn-group-size none --loss-lambda 0 --bn-group-size 32 ")
    assert f"--out {tmp_path}/study-gpu-scenes" in next(line for line in lines if "scenes:" in line)
    assert "--out docs/results-gpu.md" in next(line for line in lines if "report:" in line)
    # the comparison first, then the ablations and the reference in the time left
    first_ablation = next(i for i, line in enumerate(lines) if "pretrain-densecl-geometry-s0:" in line)
    assert next(i for i, line in enumerate(lines) if "correspondence-random:" in line) < first_ablation
    assert sum("report:" in line for line in lines) == 2
    assert first_ablation < next(
        i for i, line in enumerate(lines) if "experiment: oracle:" in line
    )  # trained in the second call
    assert not (tmp_path / "study-gpu").exists()
