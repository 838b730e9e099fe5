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
_spec = importlib.util.spec_from_file_location("step_speed", ROOT / "benchmarks" / "step_speed.py")
step_speed = sys.modules["step_speed"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_speed)


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
    assert len(steps) == 5 and all("--arch resnet50 --crop 224 --device cuda" in line for line in steps)
    assert "--batch 128 --settings tf32+cl,bf16+cl,fp16+cl,bf16+cl+bn32" in steps[0] and "--batch 256" in steps[1]
    assert [line.split("--settings ")[1].split()[0] for line in steps[2:]] == [
        "bf16+cl+compile",
        "fp16+cl+compile",
        "tf32+cl+compile",
    ]
    assert lines[0].startswith("gpu_bench: 20") and lines[-1].endswith("log docs/gpu-bench-dry-run.log")
    if (ROOT / "benchmarks" / "end_to_end.py").exists():
        e2e = [line for line in lines if "end_to_end.py" in line]
        assert [line.split("--data-backend ")[1].split()[0] for line in e2e] == ["cpu", "gpu"]
        assert all("--device cuda" in line and "--arch resnet50 --crop 224 --batch 128" in line for line in e2e)
    else:
        assert any("end_to_end.py does not exist yet" in line for line in lines)
    assert dry_run(tmp_path, OUT_DIR="/x")[-1].endswith("log /x/gpu-bench-dry-run.log")
    assert not [line for line in dry_run(tmp_path, COMPILE_SETTINGS="") if "compile" in line and "step_speed" in line]


def test_step_speed_settings_parse_and_refuse():
    cpu = torch.device("cpu")
    s = step_speed.Setting.parse("bf16+cl+bn32", cpu)
    assert (s.precision, s.channels_last, s.compile, s.bn32) == ("bf16", True, False, True)
    for bad in ("fp64", "bf16+nhwc", "tf32", "fp16+cl"):  # unknown, unknown option, CUDA only
        with pytest.raises(SystemExit):
            step_speed.Setting.parse(bad, cpu)


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
