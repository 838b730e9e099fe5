"""``densecl checkpoint``: what a training checkpoint holds, for scripts.

densecl checkpoint info runs/demo/checkpoint.pt               # JSON: progress, arch, loss_lambda, config
densecl checkpoint info runs/demo/checkpoint.pt --epochs 40   # progress against 40 epochs instead
densecl checkpoint finished runs/demo/checkpoint.pt --epochs 40 && echo done   # exit 0 done, 1 not yet
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "checkpoint",
        help="inspect a training checkpoint (progress, recipe) for scripts",
        description="Inspect a densecl training checkpoint (the file densecl pretrain writes).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="print step, epoch, planned steps, arch, loss_lambda and the config as JSON")
    finished = actions.add_parser("finished", help="exit 0 when the run has done all its epochs, 1 when not")
    for action in (info, finished):
        action.add_argument("path", metavar="PATH", help="a checkpoint.pt written by densecl pretrain")
        action.add_argument(
            "--epochs", type=int, default=None, help="count progress against this many epochs (default: the config's)"
        )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densecl import checkpoint

    state = checkpoint.load(args.path)
    summary = state.summary(args.epochs)
    if args.action == "info":
        print(json.dumps({"path": args.path, **summary}, indent=2))
        return 0
    print(f"{args.path}: step {summary['step']} of {summary['planned_steps']} ({summary['epochs']} epochs)")
    return 0 if summary["finished"] else 1
