"""``densecl plot``: loss, accuracy and learning-rate curves of one or more training runs.

    densecl plot runs/densecl_r18                                   # -> runs/densecl_r18/curves.png
    densecl plot runs/densecl_r18 runs/mocov2_r18 --out compare.png # overlaid, labelled by dir name

Reads each run's ``metrics.jsonl`` (the per-step lines ``densecl pretrain``
appends) and draws total, global and dense loss and the learning rate against
the step, and the top-1 accuracy of the global and dense tasks.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw loss, accuracy and learning-rate curves of training runs",
        description="Draw total / global / dense loss, the two tasks' top-1 accuracy and learning rate against step "
        "from each RUN_DIR/metrics.jsonl; several runs are overlaid and labelled by their directory names.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directory holding metrics.jsonl")
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="image to write, .png/.pdf/.svg (default: FIRST_RUN_DIR/curves.png)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densecl.plotting import metrics_file, plot_curves, read_metrics, run_labels

    records = [read_metrics(r) for r in args.runs]  # every file checked before drawing
    out = Path(args.out) if args.out else metrics_file(args.runs[0]).parent / "curves.png"
    path = plot_curves(list(zip(run_labels(args.runs), records)), out)
    for label, rs in zip(run_labels(args.runs), records):
        last = rs[-1]
        print(f"{label}: {len(rs)} points, steps {rs[0]['step']}..{last['step']}, last loss {last['loss']:.4f}")
    print(f"wrote {path}")
    return 0
