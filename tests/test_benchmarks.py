"""The benchmark scripts' logic (not their timings): scripts/gpu_bench.sh's plan and step_speed's settings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


step_speed = _load("step_speed")
det_step = _load("det_step")


def dry_run(tmp_path: Path, **env: str) -> list[str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_bench.sh")],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return out.splitlines()


def test_gpu_bench_plans_step_only_eager_and_compiled_then_end_to_end(tmp_path):
    lines = dry_run(tmp_path)
    steps = [line for line in lines if "step_speed.py" in line]
    assert len(steps) == 6 and all("--arch resnet50 --crop 224 --device cuda" in line for line in steps)
    eager = "--settings tf32+cl,bf16+cl,fp16+cl,bf16+cl+bn32,bf16+cl+g32,bf16+cl+split32"
    assert f"--batch 128 {eager}" in steps[0] and f"--batch 256 {eager}" in steps[1]
    assert [line.split("--settings ")[1].split()[0] for line in steps[2:]] == [
        "bf16+cl+g32,bf16+cl+compile+g32",  # the recipes' grouped step, eager and compiled side by side, first
        "bf16+cl+compile",
        "fp16+cl+compile",
        "tf32+cl+compile",
    ]
    assert lines[0].startswith("gpu_bench: 20") and lines[-1].endswith("log docs/gpu-bench-dry-run.log")
    e2e = [line for line in lines if "end_to_end.py" in line]
    assert [line.split("--data-backend ")[1].split()[0] for line in e2e] == ["cpu", "gpu"]
    assert all("--device cuda" in line and "--arch resnet50 --crop 224 --batch 128" in line for line in e2e)
    det = [line for line in lines if "det_step.py" in line]
    assert len(det) == 1 and "--device cuda --detector c4 --arch resnet50 --batch 2 --steps 20 --warmup 5" in det[0]
    assert lines.index(det[0]) == len(lines) - 2  # part 4, last, with its own share of the time budget
    assert dry_run(tmp_path, OUT_DIR="/x")[-1].endswith("log /x/gpu-bench-dry-run.log")
    timeouts = [int(line.split("timeout ")[1].split()[0]) for line in steps]
    assert timeouts[:3] == [480 - 200 - 100 - 100] * 2 + [150]  # part 1 leaves COMPILE_S for the compiled groups
    no_compile = [line for line in dry_run(tmp_path, COMPILE_SETTINGS="") if "step_speed" in line]
    assert len(no_compile) == 2 and all("compile" not in line and "timeout 150 " in line for line in no_compile)


def test_step_speed_settings_parse_and_refuse():
    cpu = torch.device("cpu")
    s = step_speed.Setting.parse("bf16+cl+bn32", cpu)
    assert (s.precision, s.channels_last, s.compile, s.bn32) == ("bf16", True, False, True)
    g = step_speed.Setting.parse("bf16+cl+g8", cpu)
    assert (g.bn_group, g.split_group, g.bn32) == (8, None, False)
    compiled = step_speed.Setting.parse("bf16+cl+compile+g32", cpu)  # the compiled grouped step
    assert (compiled.compile, compiled.bn_group, compiled.channels_last) == (True, 32, True)
    assert step_speed.Setting.parse("fp32+split4", cpu).split_group == 4
    for bad in ("fp64", "bf16+nhwc", "tf32", "fp16+cl", "bf16+g8+bn32", "bf16+g8+split8", "bf16+gx"):
        with pytest.raises(SystemExit):  # unknown, unknown option, CUDA only, two batch-norm replacements
            step_speed.Setting.parse(bad, cpu)


def test_split_batch_norm_normalises_the_same_statistics_as_grouped_batch_norm_on_interleaved_groups():
    from densecl.models.batchnorm import GroupedBatchNorm2d

    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    split = torch.nn.BatchNorm2d(3).double()
    split.__class__, split.groups = step_speed.SplitBatchNorm2d, 2  # groups = images n with the same n % 2
    interleaved = torch.cat([x[0::2], x[1::2]])  # the same groups, made consecutive
    grouped = GroupedBatchNorm2d(3, 4).double()
    assert torch.allclose(split(x)[0::2], grouped(interleaved)[:4], atol=1e-12)
    assert torch.allclose(split.running_var, grouped.running_var, atol=1e-12)
    y = split(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_fp32_batch_norm_computes_in_fp32_and_returns_the_input_dtype():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 3, 3)
    reference = bn(x.bfloat16().float())
    bn.__class__ = step_speed.FP32BatchNorm2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.equal(y, reference.bfloat16())


def test_step_speed_rows_take_turns_going_first(monkeypatch, capsys):
    # the first step of a round pays for the previous setting's cache state: every row must go first as often
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(step_speed, "build_step", lambda row, s, args, device: lambda: calls.append((s.name, row)))
    monkeypatch.setattr(sys, "argv", ["step_speed.py", "--settings", "fp32,fp32+cl", "--rounds", "3", "--warmup", "0"])
    step_speed.main()
    rounds = [calls[i : i + 6] for i in range(0, len(calls), 6)]  # 2 settings x 3 rows per round
    assert len(rounds) == 3
    firsts = [[row for name, row in r if name == setting][0] for r in rounds for setting in ("fp32", "fp32+cl")]
    assert sorted(firsts) == sorted(["densecl", "mocov2", "backbone"] * 2)
    assert all(
        sorted(r) == sorted((n, w) for n in ("fp32", "fp32+cl") for w in ("densecl", "mocov2", "backbone"))
        for r in rounds
    )


@pytest.mark.slow
def test_det_step_runs_the_protocols_c4_model_at_a_tiny_size(capsys):
    tiny = ["--arch", "resnet18", "--image-size", "64,48", "--min-size", "64", "--max-size", "64", "--proposals", "50",
            "--rois-per-image", "32", "--steps", "1", "--warmup", "0", "--eval-images", "1", "--precise-bn-passes", "1",
            "--iters", "100", "--precise-bn-iters", "10", "--val-images", "16", "--gpus", "2"]  # fmt: skip
    result = det_step.main(tiny)
    printed = capsys.readouterr().out
    assert "det_step: c4 resnet18, batch 2 per process, 64x48 images" in printed and "it/s" in printed
    # the estimate is the measured times scaled: 100 steps, 10 Precise-BN passes, 16 images over 2 processes
    assert result["run_h"] == pytest.approx(100 * result["step_s"] / 3600)
    expected = (
        100 * result["step_s"] / 3600 + (10 * result["precise_bn_pass_s"] + 8 * result["eval_s_per_image"]) / 3600
    )
    assert f"about {expected:.2f} h" in printed


def test_data_speed_compares_the_kinds_it_writes(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("data_speed", ROOT / "benchmarks" / "data_speed.py")
    data_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_speed)
    pytest.importorskip("tifffile")
    argv = [
        "data_speed.py",
        "--compare",
        "jpeg8,tiff4,png16",
        "--size",
        "48",
        "--crop",
        "32",
        "--files",
        "2",
        "--n",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", [*argv, "--rounds", "1"])
    data_speed.main()
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"jpeg8", "tiff4", "png16"}
    assert "3 channels of 8-bit photos" in rows["jpeg8"] and "4 channels of stored values" in rows["tiff4"]
    assert "1 channel of stored values" in rows["png16"]
