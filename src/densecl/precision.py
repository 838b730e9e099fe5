"""The step's numeric precision: the autocast dtype, and on a CPU fp32 or bf16 chosen by timing both.

Also the trial steps of a run's encoders made before training: the CPU timing
(:func:`cpu_probe`) and the ``--compile`` check (:func:`compile_encoders`).

CPU flags do not predict bf16's speed: a ResNet step in bf16 runs at 0.8x
of fp32 on an Intel Xeon with AVX512-BF16 and no AMX, at 1.9-2.9x on an AMD Zen 5
with AVX512-BF16, and at 0.05-0.1x on a CPU without AVX-512. So ``--precision
auto`` on a CPU times a few steps of each with the run's own model, crop and batch,
keeps the faster (fp32 on a tie: it is never slower than fp32 by choice), and
remembers the answer in a small JSON file keyed by everything the timing depends on,
so a resume or a second run does not pay again.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densecl import distributed
from densecl.errors import InputError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CACHE_VERSION = 1
WARMUP_ROUNDS = 1  # the first step of each builds oneDNN primitives: not timed
TIMED_ROUNDS = 3  # best of three, fp32 and bf16 interleaved round by round
GIVE_UP = 2.0  # a bf16 step over twice the fp32 step ends the timing early: fp32 wins anyway
# (4x in the warm-up round, whose first steps pay one-off costs; without native bf16 it is 10-20x)


@dataclass
class Precision:
    """How the forward runs: autocast dtype (None = fp32) on a device type."""

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        return {dtype: name for name, dtype in DTYPES.items()}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device, choose_on_cpu: Callable[[], str] | None = None) -> Precision:
    """The precision ``name`` means on ``device``.

    ``auto``: bf16 on GPUs that have it, fp16 on older ones; on a CPU whatever
    ``choose_on_cpu()`` returns (:func:`choose_cpu_precision`, which times both),
    fp32 when no chooser is given. ``fp32``, ``bf16`` and ``fp16`` are taken as
    they are and never timed.

    Raises:
        InputError: fp16 on a CPU.
    """
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = choose_on_cpu() if choose_on_cpu is not None else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise InputError("precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if name not in DTYPES:
        raise InputError(f"precision must be one of auto, {', '.join(DTYPES)}, got {name!r}")
    return Precision(DTYPES[name], device.type)


def for_run(
    name: str,
    device: torch.device,
    model: nn.Module,
    batch: int,
    crop: int,
    channels_last: bool,
    cache: Path | None,
    say: Callable[[str], Any],
    is_main: bool,
) -> Precision:
    """The precision a pre-training run trains with (:func:`resolve_precision`).

    ``auto`` on a CPU: rank 0 times the run's own encoders at fp32 and bf16
    (:func:`cpu_probe`, or remembers an earlier timing in ``cache``) and every
    rank takes its answer, so all ranks compute alike.
    """

    def time_on_cpu() -> str:
        choice = "fp32"
        if is_main:
            key = cache_key(model.arch, crop, batch, channels_last)
            choice = choose_cpu_precision(cpu_probe(model, batch, crop, channels_last), key, cache, say)
        return "bf16" if distributed.broadcast_flag(choice == "bf16") else "fp32"

    return resolve_precision(name, device, time_on_cpu)


def time_steps(
    step: Callable[[str], None],
    clock: Callable[[], float] = time.perf_counter,
    rounds: int = TIMED_ROUNDS,
    warmup: int = WARMUP_ROUNDS,
    give_up: float = GIVE_UP,
) -> dict[str, float]:
    """Seconds per step of ``step("fp32")`` and ``step("bf16")``: the best of ``rounds``.

    The two alternate round by round (a machine busy with something else slows
    both alike); the ``warmup`` rounds are run and not counted. As soon as a
    bf16 step takes over ``give_up`` times the fp32 step of its round, timing
    stops (on a CPU without native bf16 that is 10-20x, and fp32 wins anyway;
    twice ``give_up`` in a warm-up round), and that round's times are returned.
    """
    best: dict[str, float] = {}
    for r in range(warmup + rounds):
        this_round = {}
        for name in ("fp32", "bf16"):
            t = clock()
            step(name)
            this_round[name] = clock() - t
        if this_round["bf16"] > (give_up if r >= warmup else 2 * give_up) * this_round["fp32"]:
            return this_round
        if r >= warmup:
            best = {k: min(v, best.get(k, v)) for k, v in this_round.items()}
    return best


def faster(times: dict[str, float]) -> str:
    """``bf16`` only if its step is strictly faster than fp32's."""
    return "bf16" if times["bf16"] < times["fp32"] else "fp32"


def cache_key(arch: str, crop: int, batch: int, channels_last: bool) -> str:
    """What a CPU timing depends on: the CPU, torch, threads, and the run's model, crop and batch."""
    parts = {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arch": arch,
        "crop": crop,
        "batch": batch,
        "channels_last": channels_last,
    }
    return json.dumps(parts, sort_keys=True)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def choose_cpu_precision(
    step: Callable[[str], None],
    key: str,
    cache: Path | None,
    say: Callable[[str], Any] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> str:
    """``fp32`` or ``bf16``, whichever runs ``step`` faster on this CPU; remembered under ``key`` in ``cache``.

    Args:
        step: one training step at the precision it is given (``"fp32"`` or ``"bf16"``).
        key: from :func:`cache_key`.
        cache: a JSON file of earlier decisions (``None``: time every time). An
            unreadable file is ignored and rewritten; one that cannot be written is
            reported and skipped.
        say: where the one line of timings and choice goes.
        clock: seconds, monotonic (tests pass a fake one).
    """
    entries = _read_cache(cache, say)
    hit = entries.get(key)
    if hit is not None:
        say(
            f"precision auto: {hit['choice']} (timed earlier on this CPU: fp32 {hit['fp32_ms']:.1f} ms/step, "
            f"bf16 {hit['bf16_ms']:.1f} ms/step; {cache})"
        )
        return hit["choice"]
    try:
        times = time_steps(step, clock)
    except RuntimeError as e:  # an operator without a bf16 kernel on this CPU, say
        say(
            "precision auto: a timed step failed on this CPU "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}) -> fp32"
        )
        return "fp32"
    choice = faster(times)
    fp32_ms, bf16_ms = 1000 * times["fp32"], 1000 * times["bf16"]
    say(f"precision auto: timed on this CPU, fp32 {fp32_ms:.1f} ms/step, bf16 {bf16_ms:.1f} ms/step -> {choice}")
    if cache is not None:
        entries[key] = {
            "choice": choice,
            "fp32_ms": round(fp32_ms, 3),
            "bf16_ms": round(bf16_ms, 3),
            "when": time.strftime("%Y-%m-%d"),
        }
        _write_cache(cache, entries, say)
    return choice


def _read_cache(cache: Path | None, say: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    if cache is None or not cache.exists():
        return {}
    try:
        data = json.loads(cache.read_text())
        entries = data["entries"] if data.get("version") == CACHE_VERSION else {}
        return {k: v for k, v in entries.items() if _valid_entry(v)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        say(f"precision auto: ignoring the unreadable cache {cache}; it will be rewritten")
        return {}


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("choice") in ("fp32", "bf16")
        and all(isinstance(entry.get(k), (int, float)) for k in ("fp32_ms", "bf16_ms"))
    )


def _write_cache(cache: Path, entries: dict[str, dict[str, Any]], say: Callable[[str], Any]) -> None:
    """Atomically: write a temporary file next to it, then rename (two runs may start at once)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1)
        os.replace(tmp, cache)
    except OSError as e:
        say(f"precision auto: could not write the cache {cache} ({e.strerror or e}); the next run will time again")


# --------------------------------------------------------------------------- trial steps of the run's encoders


def cpu_probe(model: nn.Module, batch: int, crop: int, channels_last: bool) -> Callable[[str], None]:
    """``step(name)``: one step of the work precision changes, on copies of the run's encoders.

    The query encoder's forward and backward, the key encoder's forward and
    SGD, as in training; the losses are left out because they run in fp32 at
    either precision and cost the same in both. Copies (made at the first
    call, so a cached choice costs nothing), a fixed input and no collective:
    the run's weights, BN statistics, RNG and other ranks are untouched.
    """

    @functools.cache
    def parts():
        encoder, momentum_encoder = copy.deepcopy(model.encoder), copy.deepcopy(model.momentum_encoder)
        # the SGD a run uses on a CPU (engine.make_sgd)
        optimizer = torch.optim.SGD(encoder.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4, foreach=True)
        return (
            encoder,
            momentum_encoder,
            optimizer,
            trial_input(batch, crop, channels_last, torch.device("cpu"), model.in_channels),
        )

    def step(name: str) -> None:
        encoder, momentum_encoder, optimizer, x = parts()
        optimizer.zero_grad(set_to_none=True)
        encoders_step(encoder, momentum_encoder, x, Precision(DTYPES[name], "cpu"))
        optimizer.step()

    return step


def trial_input(batch: int, crop: int, channels_last: bool, device: torch.device, channels: int = 3) -> torch.Tensor:
    """A fixed ``batch x channels x crop x crop`` input in the run's layout, for the steps run before training."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, crop, crop, generator=torch.Generator().manual_seed(0))
    return x.to(device).contiguous(memory_format=fmt)


def encoders_step(
    encoder: torch.nn.Module, momentum_encoder: torch.nn.Module, x: torch.Tensor, precision: Precision
) -> None:
    """The encoders' share of a training step: query forward and backward, key forward (no loss: it is fp32 anyway)."""
    with precision.autocast():
        q, r, _ = encoder(x)
        with torch.no_grad():
            momentum_encoder(x)
    (q.float().sum() + r.float().sum()).backward()


def compile_encoders(
    model: nn.Module,
    batch: int,
    crop: int,
    channels_last: bool,
    precision: Precision,
    say: Callable[[str], Any],
    backend: str | Callable = "inductor",
) -> bool:
    """``torch.compile`` of both encoders in place (state-dict keys unchanged); False and eager where it fails.

    torch compiles at the first call, so one trial step of the encoders (the
    run's batch, crop, precision and layout) is run here: a missing compiler
    or an unsupported operator then costs one line naming the cause
    (:func:`failure_line`), not the run. The trial's BN statistics and
    gradients are put back afterwards.
    """
    encoders = (model.encoder, model.momentum_encoder)
    saved = copy.deepcopy(model.state_dict())
    x = trial_input(batch, crop, channels_last, next(model.parameters()).device, model.in_channels)
    try:
        for encoder in encoders:
            encoder.compile(backend=backend)
        encoders_step(*encoders, x, precision)
        ok = True
    except Exception as e:  # any failure to compile means: train eagerly
        for encoder in encoders:
            encoder._compiled_call_impl = None  # what Module.compile set: back to the eager __call__
        say(f"densecl pretrain: --compile failed ({failure_line(e)}); training eagerly")
        ok = False
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)
    return ok


# an exception quoted at the start of a line: ``AssertionError: ...``, ``torch._dynamo.exc.Unsupported: ...``
_QUOTED_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Failed|Unsupported)\b\s*:")
FAILURE_LINE_CHARS = 400


def failure_line(e: BaseException, limit: int = FAILURE_LINE_CHARS) -> str:
    """One line saying why ``e`` happened: its type, then the cause's type and most informative line.

    torch.compile reports a backend's failure as ``BackendCompilerFailed``
    (message: ``backend='inductor' raised:`` and the original's text), with
    the original exception in ``inner_exception``; other errors chain theirs in
    ``__cause__``. The innermost is the cause. Of its message the last line that
    quotes an exception (``AssertionError: ...``, often the root of a traceback
    or a compiler's report) is taken, else its first line. A line over
    ``limit`` characters keeps its start, where the error or operator is named.
    """
    root, seen = e, {id(e)}
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None and id(inner) not in seen:
        root = inner
        seen.add(id(root))
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    quoted = [line for line in lines if _QUOTED_EXCEPTION.match(line)]
    line = quoted[-1] if quoted else lines[0] if lines else ""
    name = type(root).__name__
    text = line if line.startswith(f"{name}:") else f"{name}: {line}" if line else name
    if root is not e:
        text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
