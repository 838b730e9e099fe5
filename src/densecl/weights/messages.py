"""How lists and exceptions appear inside the one-line errors of :mod:`densecl.weights`."""

from __future__ import annotations

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
