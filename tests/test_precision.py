"""``--precision auto`` on a CPU: timed with a fake clock, so every case is instant and exact."""

import json

import pytest
import torch

from densecl.errors import InputError
from densecl.precision import cache_key, choose_cpu_precision, resolve_precision, time_steps


class FakeMachine:
    """A clock and a step: ``step(name)`` advances the clock by the next scripted duration for ``name``."""

    def __init__(self, fp32: list[float], bf16: list[float]) -> None:
        self.durations = {"fp32": list(fp32), "bf16": list(bf16)}
        self.now = 0.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def step(self, name: str) -> None:
        self.calls.append(name)
        self.now += self.durations[name].pop(0)


def choose(machine: FakeMachine, cache=None, key=None, lines=None) -> str:
    key = key or cache_key("resnet18", 96, 32, True)
    say = lines.append if lines is not None else lambda line: None
    return choose_cpu_precision(machine.step, key, cache, say, clock=machine.clock)


def test_the_faster_is_chosen_from_the_timed_rounds_and_both_timings_are_printed():
    # warm-up round (not timed) 9 / 9, then three rounds: best fp32 1.0, best bf16 0.5
    lines = []
    assert choose(FakeMachine([9, 1.2, 1.0, 1.1], [9, 0.6, 0.5, 0.7]), lines=lines) == "bf16"
    assert lines == ["precision auto: timed on this CPU, fp32 1000.0 ms/step, bf16 500.0 ms/step -> bf16"]


def test_rounds_interleave_and_warmup_is_not_counted():
    machine = FakeMachine([5.0, 1.0, 1.0, 1.0], [0.1, 2.0, 2.0, 2.0])  # bf16's warm-up alone would win
    assert time_steps(machine.step, machine.clock) == {"fp32": 1.0, "bf16": 2.0}
    assert machine.calls == ["fp32", "bf16"] * 4


@pytest.mark.parametrize("bf16", [[1.0, 1.0, 1.0, 1.0], [1.0, 1.25, 1.25, 1.25]])  # a tie; the Xeon's 0.8x
def test_bf16_is_never_chosen_when_it_is_not_faster(bf16):
    assert choose(FakeMachine([1.0, 1.0, 1.0, 1.0], bf16)) == "fp32"


def test_a_far_slower_bf16_ends_the_timing_early():
    # a CPU without native bf16: 15x. The warm-up round already says so (over 4x): no more bf16 steps
    machine = FakeMachine([1.0] * 4, [15.0] * 4)
    assert choose(machine) == "fp32" and machine.calls == ["fp32", "bf16"]
    # 3x shows only in the timed rounds (over 2x): stops after the first
    machine = FakeMachine([1.0] * 4, [3.0] * 4)
    assert choose(machine) == "fp32" and machine.calls == ["fp32", "bf16"] * 2


def test_the_choice_is_cached_and_a_cache_hit_does_not_time(tmp_path):
    cache = tmp_path / "sub" / "precision.json"
    assert choose(FakeMachine([1.0] * 4, [0.5] * 4), cache) == "bf16"
    entry = next(iter(json.loads(cache.read_text())["entries"].values()))
    assert (entry["choice"], entry["fp32_ms"], entry["bf16_ms"]) == ("bf16", 1000.0, 500.0)
    lines, machine = [], FakeMachine([], [])  # any step would fail: nothing left to pop
    assert choose(machine, cache, lines=lines) == "bf16" and machine.calls == []
    assert lines == [
        f"precision auto: bf16 (timed earlier on this CPU: fp32 1000.0 ms/step, bf16 500.0 ms/step; {cache})"
    ]


def test_the_cache_key_names_the_run_and_another_run_times_again(tmp_path):
    keys = {
        cache_key("resnet18", 96, 32, True),
        cache_key("resnet50", 96, 32, True),
        cache_key("resnet18", 160, 32, True),
        cache_key("resnet18", 96, 64, True),
        cache_key("resnet18", 96, 32, False),
    }
    assert len(keys) == 5
    parts = json.loads(cache_key("resnet18", 96, 32, True))
    assert parts["torch"] == torch.__version__ and parts["threads"] == torch.get_num_threads() and parts["cpu"]
    cache = tmp_path / "precision.json"
    choose(FakeMachine([1.0] * 4, [0.5] * 4), cache, key=cache_key("resnet18", 96, 32, True))
    machine = FakeMachine([1.0] * 4, [2.5] * 4)
    assert choose(machine, cache, key=cache_key("resnet50", 224, 8, True)) == "fp32" and machine.calls
    assert len(json.loads(cache.read_text())["entries"]) == 2  # both kept


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "entries": {"k": {"choice": "fp64"}}}', ""])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, content):
    cache = tmp_path / "precision.json"
    cache.write_text(content)
    lines = []
    assert choose(FakeMachine([1.0] * 4, [0.5] * 4), cache, lines=lines) == "bf16"
    assert json.loads(cache.read_text())["version"] == 1
    assert lines[-1].endswith("-> bf16")


def test_a_cache_that_cannot_be_written_costs_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    lines = []
    assert choose(FakeMachine([1.0] * 4, [0.5] * 4), blocker / "precision.json", lines=lines) == "bf16"
    assert "could not write the cache" in lines[-1]


def test_a_failing_step_means_fp32():
    def step(name):
        if name == "bf16":
            raise RuntimeError("no kernel for BFloat16\nmore")

    lines = []
    assert choose_cpu_precision(step, "k", None, lines.append) == "fp32"
    assert lines == ["precision auto: a timed step failed on this CPU (no kernel for BFloat16) -> fp32"]


def test_explicit_precisions_and_gpus_never_time():
    def never() -> str:
        raise AssertionError("timed")

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, never).dtype is None
    assert resolve_precision("bf16", cpu, never).dtype == torch.bfloat16
    assert resolve_precision("auto", cpu, lambda: "bf16").name == "bf16"
    assert resolve_precision("auto", cpu).name == "fp32"  # no chooser: never slower than fp32
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu, never)
