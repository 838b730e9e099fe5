"""`make experiment`: the report writer on hand-made results, and the script's dry run and resume logic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densecl import checkpoint
from densecl import experiment_report as report

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "experiment.sh"


def _record(protocol: str, metric: str, per_seed: list[float]) -> dict:
    mean = sum(per_seed) / len(per_seed)
    std = 0.0 if len(per_seed) == 1 else (sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1)) ** 0.5
    return {"protocol": protocol, "headline": [metric], "metrics": {metric: {"mean": mean, "std": std, "per_seed": per_seed}}}


# ------------------------------------------------------------------ the report


def test_results_table_values_missing_and_difference():
    records = {
        ("densecl", "seg-probe"): _record("seg-probe", "mIoU", [40.0, 42.0, 44.0]),
        ("mocov2", "seg-probe"): _record("seg-probe", "mIoU", [38.5]),
        ("densecl", "svm"): _record("svm", "mAP", [61.234]),
        ("random", "det-box"): _record("det", "bbox_AP", [3.0]),
        ("densecl", "det-box-10pct"): _record("det", "bbox_AP", [0.101]),
        ("mocov2", "det-box-10pct"): _record("det", "bbox_AP", [0.104]),  # rounds to zero: "+0.00", not "-0.00"
    }
    lines = report.results_table(records).splitlines()
    header, rows = lines[0], {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert "seg-probe mIoU (C4+C5)" in header and "det box AP, 10 % labels" in header
    cells = lambda row: [c.strip() for c in rows[row].strip("| ").split(" | ")]  # noqa: E731
    # columns: weights, seg-probe, seg-finetune, det-box, det-box-10pct, svm
    assert cells("DenseCL") == ["DenseCL", "42.00 ± 2.00", "—", "—", "0.10", "61.23"]
    assert cells("MoCo-v2") == ["MoCo-v2", "38.50", "—", "—", "0.10", "—"]
    assert cells("random init") == ["random init", "—", "—", "3.00", "—", "—"]
    assert cells("DenseCL − MoCo-v2") == ["DenseCL − MoCo-v2", "+3.50", "—", "—", "+0.00", "—"]


def test_metric_cell_tolerates_broken_records():
    assert report.metric_cell(None, "mIoU") == "—"
    assert report.metric_cell({"metrics": {}}, "mIoU") == "—"
    assert report.metric_cell({"metrics": {"mIoU": {"mean": None, "per_seed": [None]}}}, "mIoU") == "—"
    assert report.metric_cell({"metrics": {"mIoU": {"mean": 1.0}}}, "mIoU") == "1.00"


def test_render_empty_and_full():
    empty = report.render(report.ReportInputs())
    assert "make experiment" in empty and "no correspondence report yet" in empty and "no step has finished" in empty
    inputs = report.ReportInputs(
        records={("densecl", "seg-finetune"): _record("seg-finetune", "mIoU", [12.5])},
        correspondence={"threshold": 0.9, "weights": [
            {"label": "DenseCL", "pairs": 64, "locations_per_view": 25, "mean_mutual_per_pair": 14.0, "mean_kept_per_pair": 3.25},
            {"label": "MoCo-v2", "pairs": 64, "locations_per_view": 25, "mean_mutual_per_pair": 12.0, "mean_kept_per_pair": 1.5},
        ]},
        timings=[("pretrain-densecl", 1800.0), ("pretrain-densecl", 1800.0), ("svm-random", 30.0)],
        settings={"EPOCHS": "40", "CROP": "128"},
        machine={"platform": "Linux-x", "cores": "2", "torch": "2.14.1"},
        figures=[("figures/curves.png", "Pre-training loss")],
    )
    text = report.render(inputs)
    assert "EPOCHS=40 CROP=128 make experiment" in text
    assert "| DenseCL | 64 | 25 | 14.00 | 3.25 |" in text
    assert "matches >= 0.9 / pair" in text
    assert "| pretrain-densecl | 60.0 |" in text and "| svm-random | 0.5 |" in text and "**60.5**" in text
    assert "![Pre-training loss](figures/curves.png)" in text
    assert "cores 2" in text and "12.50" in text


def test_write_report_reads_a_run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "figures").mkdir()
    (run / "eval" / "densecl_svm.json").write_text(json.dumps(_record("svm", "mAP", [55.0])))
    (run / "eval" / "mocov2_svm.json").write_text("{not json")  # a half-written file: shown as missing
    (run / "timing.tsv").write_text("scenes\t100\t2024-01-01T00:00:00Z\nbroken line\n")
    (run / "settings.txt").write_text("EPOCHS=3 CROP=128\n")
    from PIL import Image

    Image.new("RGB", (3000, 1500), "white").save(run / "figures" / "curves.png")
    out = report.write_report(run, tmp_path / "docs" / "results.md", tmp_path / "docs" / "figures")
    text = out.read_text()
    assert "| DenseCL | — | — | — | — | 55.00 |" in text
    assert "| MoCo-v2 | — | — | — | — | — |" in text
    assert "| scenes | 1.7 |" in text and "EPOCHS=3 CROP=128 make experiment" in text
    assert "(figures/curves.png)" in text and "correspondence.png" not in text.split("## Figures")[1].split("##")[0]
    with Image.open(tmp_path / "docs" / "figures" / "curves.png") as im:
        assert max(im.size) == report.FIGURE_MAX_SIDE
    assert text.endswith(f"{report.ANALYSIS_MARKER}\n\n{report.NO_ANALYSIS}")


def test_the_pictured_scene_is_attributed_from_its_manifest(tmp_path):
    scenes = tmp_path / "scenes"
    (scenes / "coco" / "test").mkdir(parents=True)
    manifest = {"images": [
        {"name": "test_000001", "background": "train/Other.jpg", "objects": []},
        {"name": "test_000007", "background": "test/Flower.jpg",
         "objects": [{"cutout": "animals/fish.png"}, {"cutout": "food/pear.png"}]},
    ]}  # fmt: skip
    (scenes / "manifest.json").write_text(json.dumps(manifest))
    corr = {"source": f"folder {scenes / 'coco' / 'test'}", "first_pair": str(scenes / "coco" / "test" / "test_000007.png")}
    assert report.picture_sources(corr) == (
        "`test_000007`, background `test/Flower.jpg` (mate-backgrounds), "
        "cut-outs `animals/fish.png`, `food/pear.png` (tuxpaint-stamps-default)"
    )
    assert report.picture_sources({"first_pair": str(tmp_path / "elsewhere" / "x.png")}) is None
    assert report.picture_sources(None) is None
    text = report.render(report.ReportInputs(correspondence=corr))
    assert "background `test/Flower.jpg`" in text and "licensed GPL-2" in text


def test_rewriting_the_report_keeps_the_hand_written_analysis(tmp_path):
    run, out = tmp_path / "run", tmp_path / "results.md"
    (run / "eval").mkdir(parents=True)
    report.write_report(run, out, tmp_path / "figures")
    analysis = "## Analysis\n\nDenseCL is ahead by 1.0 mIoU because ...\n"
    out.write_text(out.read_text().split(report.ANALYSIS_MARKER)[0] + report.ANALYSIS_MARKER + "\n\n" + analysis)
    (run / "eval" / "densecl_svm.json").write_text(json.dumps(_record("svm", "mAP", [55.0])))  # a new result
    text = report.write_report(run, out, tmp_path / "figures").read_text()
    assert "| DenseCL | — | — | — | — | 55.00 |" in text  # the generated part is new
    assert text.endswith(report.ANALYSIS_MARKER + "\n\n" + analysis) and text.count(report.ANALYSIS_MARKER) == 1


# ------------------------------------------------------------------ the script


def _dry_run(run: Path, data: Path, **env: str) -> list[str]:
    environment = {**os.environ, "DRY_RUN": "1", "RUN": str(run), "DATA": str(data), "ASSETS": str(run.parent),
                   "BIN": str(Path(sys.executable).parent), **env}
    result = subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    lines = _dry_run(run, data, EPOCHS="7")
    steps = [line.split(":")[1].strip() for line in lines]
    assert steps[0] == "scenes" and steps[-1] == "report"
    assert "pretrain-densecl" in steps and "pretrain-mocov2" in steps
    for w in ("densecl", "mocov2", "random"):
        for p in ("seg-probe", "seg-finetune", "det-box", "det-box-10pct", "svm"):
            assert f"{p}-{w}" in steps
    assert "correspond" in steps and "plot" in steps
    pretrain = {s: line for s, line in zip(steps, lines) if s.startswith("pretrain-")}
    assert "--loss-lambda 0.5" in pretrain["pretrain-densecl"] and "--loss-lambda 0 " in pretrain["pretrain-mocov2"]
    # everything else identical
    same = lambda line: line.split(":", 2)[2].replace("--loss-lambda 0.5", "").replace("--loss-lambda 0", "")  # noqa: E731
    assert same(pretrain["pretrain-densecl"]).replace("run/densecl", "run/mocov2") == same(pretrain["pretrain-mocov2"])
    assert "--epochs 7" in pretrain["pretrain-densecl"]
    assert not run.exists()  # nothing written


def _fake_checkpoint(path: Path, step: int, iters_per_epoch: int = 10) -> None:
    state = checkpoint.TrainingState({"epochs": 99}, {}, {}, None, step, step // iters_per_epoch, iters_per_epoch, {})
    checkpoint.save(path, state)


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_dry_run_skips_what_exists_and_resumes_unfinished_pretraining(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("done")
    _fake_checkpoint(run / "densecl" / "checkpoint.pt", step=30)  # 3 of EPOCHS=3 epochs: finished
    _fake_checkpoint(run / "mocov2" / "checkpoint.pt", step=12)  # interrupted in epoch 2
    (run / "eval").mkdir()
    (run / "eval" / "densecl_svm.json").write_text("{}")
    (run / "eval" / "random_det-box-10pct.json").write_text("{}")

    lines = _dry_run(run, data, EPOCHS="3")
    text = "\n".join(lines)
    assert "skip scenes" in text
    assert f"skip pretrain-densecl ({run}/densecl/checkpoint.pt has all 3 epochs)" in text
    resume = next(line for line in lines if "pretrain-mocov2:" in line)
    assert f"--resume {run}/mocov2/checkpoint.pt --epochs 3" in resume
    assert "skip svm-densecl" in text and "skip det-box-10pct-random" in text
    assert "experiment: svm-mocov2:" in text and "experiment: det-box-10pct-densecl:" in text

