"""How lists and exceptions appear inside the one-line errors of :mod:`densecl.weights`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def few(items: Any, n: int = 4) -> str:
    """The first ``n`` items, comma-separated, and how many more there are."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``, at most 120 characters."""
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= 120 else line[:117] + "..."


def shape_difference(want: Mapping[str, tuple], have: Mapping[str, tuple]) -> str:
    """How a file's tensors (``have``: name -> shape) differ from a model's (``want``), in a few words:
    ``2 keys missing (a, b), 1 unexpected (c), 1 of other shape (d (3,) vs (4,))``."""
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    wrong = [f"{k} {have[k]} vs {want[k]}" for k in want if k in have and have[k] != want[k]]
    parts = [
        f"{len(missing)} keys missing ({few(missing)})" if missing else "",
        f"{len(extra)} unexpected ({few(extra)})" if extra else "",
        f"{len(wrong)} of other shape ({few(wrong, 2)})" if wrong else "",
    ]
    return ", ".join(p for p in parts if p)
