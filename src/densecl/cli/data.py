"""``densecl data <action>``: data utilities. Actions: ``export-scenes``, ``scenes``, ``stats``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="data utilities (export-scenes, scenes, stats)")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _register_export_scenes(actions)
    _register_scenes(actions)
    _register_stats(actions)


def _register_stats(actions) -> None:
    p = actions.add_parser(
        "stats",
        help="the kind, bands and per-channel mean and std of your images",
        description="Read a sample of the images as pre-training would and print their kind, bands, and the "
        "per-channel mean and std that --mean auto measures (the flags to pass them on).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="a folder of images, a .txt list of paths, or a COCO .json")
    p.add_argument("--bands", default=None, help="the files' bands to use, counted from 1 (e.g. 4,3,2)")
    p.add_argument("--pixels", default="auto", choices=("auto", "values"), help="as densecl pretrain --pixels")
    p.add_argument("--nodata", type=float, default=None, help="a stored value that marks pixels without data")
    p.add_argument("--sample", type=int, default=256, help="images to read, spread evenly over the data")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from densecl.errors import InputError
    from densecl.inputs import format_floats, stats
    from densecl.inputs.files import probe
    from densecl.inputs.resolve import read_as
    from densecl.inputs.sources import image_source

    if args.sample < 1:
        raise InputError(f"--sample must be >= 1, got {args.sample}")
    source = image_source(args.data)
    reading, spec = read_as(source, args.pixels, args.bands, args.nodata)  # as densecl pretrain reads them
    bands = spec.bands
    measured = stats.measure(source, spec, k=args.sample)
    kind = (
        "8-bit photos, read as RGB in [0, 1]"
        if reading.photo
        else f"{probe(reading.reference, values=reading.values).kind}, stored values"
    )
    print(f"{source.origin}: {len(source)} images; {kind}; {reading.file_bands} bands a file (every header checked)")
    print(f"measured on {measured.images} images, {measured.valid_fraction:.1%} of their pixels with data:")
    print(f"  {'channel':>7}  {'band':>4}  {'mean':>14}  {'std':>14}")
    for c, (m, sd) in enumerate(zip(measured.mean, measured.std)):
        print(f"  {c + 1:>7}  {(bands[c] if bands else c + 1):>4}  {m:>14.7g}  {sd:>14.7g}")
    flags = f"--mean {format_floats(measured.mean)} --std {format_floats(measured.std)}"
    if reading.photo:
        print(f"8-bit photos pre-train with ImageNet's mean and std (--mean auto); for these instead: {flags}")
    else:
        print(f"densecl pretrain measures these itself (--mean auto); to fix them: {flags}")
    return 0


def _register_export_scenes(actions) -> None:
    from densecl.formats import FORMATS

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
    p.add_argument(
        "--bands", type=int, default=3, choices=(3, 4), help="3: RGB; 4: RGB and a near-infrared band (TIFF)"
    )
    p.add_argument("--bit-depth", type=int, default=8, choices=(8, 16), help="8, or 16 (uint16 TIFF)")
    _overwrite_option(p)
    p.set_defaults(func=run_export_scenes)


def run_export_scenes(args: argparse.Namespace) -> int:
    from densecl.scenes.export import export_scenes

    summary = export_scenes(
        args.out, args.format, n_train=args.n_train, n_val=args.n_val, bands=args.bands, bit_depth=args.bit_depth,
        **_composition(args),
    )  # fmt: skip
    counts = _counts(summary)
    kind = "" if (args.bands, args.bit_depth) == (3, 8) else f", {args.bands} bands of {args.bit_depth} bits"
    print(f"wrote {counts} scenes ({args.size} px{kind}) as {summary.format} to {summary.out}")
    return 0


def _register_scenes(actions) -> None:
    p = actions.add_parser(
        "scenes",
        help="compose labelled scenes from RGBA cut-outs and background photos",
        description="Paste RGBA cut-outs (one folder per class) on background photos and write the images with "
        "their semantic masks, instance masks and boxes as VOC, COCO and ImageFolder data, plus the train images "
        "alone for pre-training. Train, val and test use disjoint cut-out files and disjoint backgrounds. "
        "Get real assets with `make assets`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--objects",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder with one subfolder of RGBA cut-outs per class",
    )
    p.add_argument(
        "--backgrounds",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of background photos (split 60/20/20), or with train/, val/, test/ subfolders",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--n", type=int, default=200, help="images in all: 60%% train, 20%% val, 20%% test")
    p.add_argument("--size", type=int, default=160, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="composition seed (the asset split depends on file names only)")
    p.add_argument("--max-objects", type=int, default=4, help="objects per image at most")
    p.add_argument("--format", default="voc,coco,imagefolder", help="comma-separated layouts to write")
    _overwrite_option(p)
    p.set_defaults(func=run_scenes)


def run_scenes(args: argparse.Namespace) -> int:
    from densecl.scenes.export_photo import export_photo_scenes, parse_formats

    summary = export_photo_scenes(
        args.out, args.objects, args.backgrounds, n=args.n, formats=parse_formats(args.format),
        on_skip=lambda message: print(f"densecl data: warning: {message}; skipped", file=sys.stderr),
        **_composition(args),
    )  # fmt: skip
    counts = _counts(summary)
    print(
        f"wrote {counts} images ({args.size} px, {len(summary.classes) - 1} classes: "
        f"{', '.join(summary.classes[1:])}) to {summary.out} in {summary.seconds:.1f} s"
    )
    return 0


def _composition(args: argparse.Namespace) -> dict:
    """The options both scene writers take alike."""
    return {"size": args.size, "seed": args.seed, "max_objects": args.max_objects, "overwrite": args.overwrite}


def _counts(summary) -> str:
    return ", ".join(f"{n} {split}" for split, n in summary.counts.items())


def _overwrite_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="a non-empty --out is moved aside (OUT.old-N), never deleted, and written afresh",
    )
