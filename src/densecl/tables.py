"""Markdown tables, the one writer for evaluation results, summaries and the experiment report."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]], *, padded: bool = True) -> str:
    """A Markdown table, one line per row.

    Args:
        header: column titles.
        rows: cells, converted with ``str``.
        padded: pad every column to its widest cell, so the table also reads
            well in a terminal (``| ab | c  |`` over ``| -- | -- |``); else the
            compact form (``| ab | c |`` over ``| --- | --- |``) that keeps a
            file's diff to the cells that changed.
    """
    header = [str(c) for c in header]
    rows = [[str(c) for c in row] for row in rows]
    if not padded:
        return "\n".join(
            ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows]
        )
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])
