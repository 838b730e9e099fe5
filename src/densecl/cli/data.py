"""``densecl data <action>``: data utilities. Actions: ``export-scenes``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="data utilities (export-scenes)")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _register_export_scenes(actions)


def _register_export_scenes(actions) -> None:
    from densecl.data.export_scenes import FORMATS

    p = actions.add_parser(
        "export-scenes",
        help="write the embedded scenes as VOC, COCO or ImageFolder data",
        description="Render the embedded scenes and write them in a standard layout (train and val use "
        "disjoint scenes), so evaluation runs the same code on them as on real data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="layout to write")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--n-train", type=int, default=64, help="train scenes")
    p.add_argument("--n-val", type=int, default=32, help="val scenes")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--max-objects", type=int, default=4, help="objects per scene at most")
    p.add_argument("--overwrite", action="store_true", help="replace what a previous export of this format wrote")
    p.set_defaults(func=run_export_scenes)


def run_export_scenes(args: argparse.Namespace) -> int:
    from densecl.data.export_scenes import export_scenes

    summary = export_scenes(
        args.out, args.format, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
        max_objects=args.max_objects, overwrite=args.overwrite,
    )
    counts = ", ".join(f"{n} {split}" for split, n in summary.counts.items())
    print(f"wrote {counts} scenes ({args.size} px) as {summary.format} to {summary.out}")
    return 0
