"""``densecl embed``: a backbone's features of your images in a ``.npy`` file (see :mod:`densecl.embed`).

densecl embed --weights runs/demo/checkpoint.pt --data photos/ --out feats.npy
densecl embed --weights ckpt.pt --data list.txt --out maps.npy --stage c4 --dense --image-size 224
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densecl.cli.eval import add_input_options, input_options_of
from densecl.config import RANDOM_WEIGHTS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed",
        help="write a backbone's features of your images to a .npy file (pooled vectors or dense maps)",
        description="Compute a backbone's features of every image of --data and write them to --out (.npy, one row "
        "per readable image, in the order of --data) and OUT.json (the image of every row, the weights, the "
        "settings). Read with numpy.load(OUT, mmap_mode='r').",
    )
    p.add_argument("--weights", required=True, help=f"checkpoint (any layout densecl reads) or '{RANDOM_WEIGHTS}'")
    p.add_argument("--arch", default=None, help="backbone name; required with --weights random, else from the file")
    p.add_argument("--data", required=True, help="a folder tree of images, a .txt list of paths, or a COCO .json")
    p.add_argument("--out", required=True, help="the .npy file to write; OUT.json is written beside it")
    p.add_argument("--stage", default="c5", choices=("c2", "c3", "c4", "c5"), help="which stage (default: c5)")
    p.add_argument("--dense", action="store_true", help="the stage's C x h x w maps instead of pooled C vectors")
    p.add_argument(
        "--image-size", type=int, default=224, help="shorter side resized and centre-cropped to this (default: 224); "
        "0 keeps each image's size (pooled features only)",
    )  # fmt: skip
    p.add_argument("--l2-normalize", action="store_true", help="pooled vectors scaled to unit length")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="of the array (default: float32)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="image-reading processes (default: 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_input_options(p)
    p.add_argument("--seed", type=int, default=0, help="the initialisation of --weights random (default: 0)")
    p.add_argument(
        "--overwrite", action="store_true", help="if OUT exists, rename it (and OUT.json) OUT.old-N first; "
        "without it the command stops",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from densecl import run_dir
    from densecl.devices import resolve_device
    from densecl.embed import EmbedSettings, embed, sidecar_path
    from densecl.errors import InputError
    from densecl.evaluation.backbone import load_weights
    from densecl.evaluation.features import parse_stage
    from densecl.inputs.sources import image_source

    out = Path(args.out)
    if out.suffix != ".npy":
        raise InputError(f"--out {out} must end in .npy (numpy's format; OUT.json is written beside it)")
    for path in (out, sidecar_path(out)):
        if args.overwrite:
            moved = run_dir.move_aside(path)
            if moved:
                print(f"densecl embed: moved the earlier {path} to {moved}")
        else:
            run_dir.refuse_existing(path, "the file")
    if args.image_size < 0 or args.batch_size < 1 or args.workers < 0:
        raise InputError("--image-size must be >= 0, --batch-size >= 1 and --workers >= 0")
    source = image_source(args.data)  # a bad path fails before the weights are read
    torch.manual_seed(args.seed)
    backbone, weights = load_weights(args.weights, args.arch, input_options_of(args))
    device = resolve_device(args.device)
    settings = EmbedSettings(
        stage=parse_stage(args.stage), dense=args.dense, image_size=args.image_size, l2_normalize=args.l2_normalize,
        dtype=args.dtype, batch_size=args.batch_size, workers=args.workers, device=str(device),
    )  # fmt: skip
    record = embed(backbone, source, out, settings, weights)
    skipped = f", {len(record['skipped'])} unreadable images skipped" if record["skipped"] else ""
    print(f"densecl embed: wrote {out} ({' x '.join(map(str, record['shape']))} {record['dtype']}{skipped}) "
          f"and {sidecar_path(out)}")  # fmt: skip
    return 0
