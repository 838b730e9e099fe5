"""``densecl export``: a checkpoint's query backbone, written for another library.

    densecl export runs/r50/checkpoint.pth --format detectron2 --out r50_densecl.pkl
    densecl export densecl_r50_imagenet_200ep.pth --format timm --out r50_densecl.pth

Any checkpoint ``densecl eval`` reads can be exported (see
:mod:`densecl.weights`); heads, queues and the momentum encoder are dropped and
listed.
"""

from __future__ import annotations

import argparse
from collections import Counter

from densecl.export import FORMATS, export


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "\n".join(f"  {name:<12} {target.summary}" for name, target in FORMATS.items())
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint's backbone for torchvision, timm, detectron2, OpenMMLab or safetensors",
        description="Write the query backbone of CHECKPOINT (any layout densecl reads) in another library's format.",
        epilog=f"formats:\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file (.pth/.pt/.tar/.pkl/.safetensors)")
    parser.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        metavar="FORMAT",
        help=f"one of {', '.join(FORMATS)} (see below)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="output file: .pkl for detectron2, .safetensors for safetensors, else .pth",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export(args.checkpoint, args.format, args.out)
    weights = result.weights
    print(
        f"wrote {result.path} ({result.format}, {weights.arch}, {len(weights.state_dict)} tensors "
        f"from a {weights.source_format} checkpoint)"
    )
    if weights.dropped:
        groups = Counter(_group(key) for key in weights.dropped)
        print(f"dropped {len(weights.dropped)} keys: " + ", ".join(f"{g} ({n})" for g, n in groups.items()))
    else:
        print("dropped nothing")
    print(result.usage)
    return 0


def _group(key: str) -> str:
    """``momentum_encoder.backbone.layer1.0.conv1.weight`` -> ``momentum_encoder.backbone.*``."""
    parts = key.split(".")
    return ".".join(parts[:2]) + ".*" if len(parts) > 2 else key
