"""Where training numbers go: a JSON-lines file, TensorBoard when installed, stdout."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch


class MeanMeter:
    """Running means of named scalars over a logging interval.

    Tensors are summed where they live, so a GPU loss is read (and the host
    waits for the GPU) once per interval, in :meth:`pop`, not once per step.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = defaultdict(float)
        self.count = 0

    def update(self, **values: float | torch.Tensor) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + (v.detach() if isinstance(v, torch.Tensor) else float(v))
        self.count += 1

    def pop(self) -> dict[str, float]:
        means = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums.clear()
        self.count = 0
        return means


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; mirrors scalars to TensorBoard.

    Only rank 0 creates one; other ranks pass ``enabled=False`` and write nothing.
    A resumed run (``resume_step``) first drops the lines of steps after it,
    written after the last checkpoint by the run that crashed, so the file
    holds one run's history, each step once.
    """

    NAME = "metrics.jsonl"
    TENSORBOARD = "tensorboard"  # the folder of TensorBoard's event files, next to NAME

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / self.NAME
        self.tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                _drop_lines_after(self.path, resume_step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1  # TensorBoard's own rewind
                self.tb = SummaryWriter(str(Path(run_dir) / self.TENSORBOARD), purge_step=purge)
            except ImportError:  # tensorboard is optional
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_lines_after(path: Path, step: int) -> None:
    """Rewrites ``path`` without the records of steps after ``step`` (atomically: a crash keeps the old file)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line if line.endswith("\n") else line + "\n" for line in lines if _step_of(line) <= step]
    if kept == lines:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", -1)
    except (ValueError, AttributeError):  # a line cut short by the crash
        return math.inf
