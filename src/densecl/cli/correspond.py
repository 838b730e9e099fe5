"""``densecl correspond``: dense correspondence between two views (supplementary section C, Figure 1).

    # two random crop-and-flip views of one image, DenseCL against MoCo-v2
    densecl correspond --weights densecl_r50.pth --label DenseCL --weights mocov2_r50.pth --label MoCo-v2 \\
        --image cat.jpg --out cat.png
    # two given images, as they are (resized to --crop x --crop)
    densecl correspond --weights densecl_r50.pth --image left.jpg --image2 right.jpg --out lr.png
    # 64 view pairs of a folder (or 'scenes'): mean matches per pair and a score histogram
    densecl correspond --weights densecl_r50.pth --weights mocov2_r50.pth --data images/ --pairs 64 --out folder.png

For each location of view 1 the most similar location of view 2 (cosine of C5
features, backbone in eval mode); kept when mutual, scored by the averaged
similarity (equal to the pair's cosine, see :mod:`densecl.matches`),
drawn when the score is >= ``--threshold``. Writes the picture (one row per
weights, the first pair), a JSON report next to it (``FILE.json``: per weights,
mutual and kept matches per pair and a histogram of mutual-match scores), and
prints the same as a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from densecl.config import RANDOM_WEIGHTS
from densecl.errors import InputError

if TYPE_CHECKING:
    from torch import nn

AUGMENTATIONS = ("crop-flip", "moco-v2")
PICTURE_SUFFIXES = (".png", ".pdf", ".svg")
CHUNK = 8  # view pairs per backbone forward pass


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "correspond",
        help="draw and count dense correspondences between two views (supplementary Figure 1)",
        description="Match the C5 features of two views by mutual nearest neighbours (cosine) and draw the matches "
        "with score >= --threshold, one row per --weights.",
    )
    parser.add_argument(
        "--weights",
        action="append",
        required=True,
        metavar="PATH",
        help=f"backbone checkpoint (any layout densecl reads) or '{RANDOM_WEIGHTS}'; repeat to compare, "
        "one picture row each",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=None,
        metavar="NAME",
        help="row label per --weights, in the same order (default: the file name)",
    )
    parser.add_argument(
        "--arch", default=None, help="backbone name; every --weights must be of it (default: read from the files)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="PATH", help="image to take two augmented views of")
    source.add_argument("--data", metavar="DIR", help="folder, .txt list, COCO .json or 'scenes': --pairs view pairs")
    parser.add_argument("--image2", metavar="PATH", help="with --image: match these two images, no augmentation")
    parser.add_argument("--crop", type=int, default=224, help="view side in pixels (the C5 grid is crop/32)")
    parser.add_argument("--min-scale", type=float, default=0.2, help="smallest random-crop area, as in pre-training")
    parser.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default="crop-flip",
        help="crop-flip: random resized crop and flip only, colours readable (default); moco-v2: the full "
        "pre-training augmentation (colour jitter, grayscale, blur)",
    )
    parser.add_argument("--threshold", type=float, default=0.9, help="draw and count matches with score >= this")
    parser.add_argument(
        "--seed", type=int, default=0, help=f"picks the images, the views and '{RANDOM_WEIGHTS}' weights"
    )
    parser.add_argument("--pairs", type=int, default=None, help="with --data: view pairs to evaluate (default 16)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="picture to write (.png, .pdf or .svg); the report goes to FILE.json",
    )
    parser.set_defaults(func=run)


class Loaded(NamedTuple):
    label: str  # the picture row's and report's name for these weights
    backbone: nn.Module
    provenance: dict[str, Any]  # source, sha256, arch, format


def run(args: argparse.Namespace) -> int:
    from densecl import matches as corr
    from densecl.devices import resolve_device
    from densecl.plotting import draw_correspondence, require_matplotlib

    out = _check_args(args)
    require_matplotlib()  # before any work
    device = resolve_device(args.device)
    loaded = _load_backbones(args.weights, args.label, args.arch, args.seed)
    for w in loaded:
        w.backbone.to(device).eval()

    mode, source_name, pairs = _pairs(args, _one_input(loaded))
    seen, results = corr.compare({w.label: w.backbone for w in loaded}, pairs, CHUNK)
    first = seen[0]
    stats = {label: corr.match_stats(r, args.threshold) for label, r in results.items()}
    right = {label: corr.kept_right(seen, r, args.threshold) for label, r in results.items()}

    rows = []
    for label, r in results.items():
        kept = len(r[0].matches.at_least(args.threshold).score)
        rows.append((f"{label}: {kept} matches >= {args.threshold:g}", r[0]))
    grid = rows[0][1].grid1
    title = f"{Path(first.name).name}: {_describe(mode, args)}, C5 grid {grid[0]}x{grid[1]}"
    draw_correspondence(first, rows, args.threshold, out, title=title, inputs=loaded[0].backbone.input_spec)

    report = {
        "mode": mode,
        "source": source_name,
        "first_pair": first.name,
        "augment": None if mode == "images" else args.augment,
        "crop": args.crop,
        "min_scale": None if mode == "images" else args.min_scale,
        "threshold": args.threshold,
        "seed": args.seed,
        "pairs": len(results[loaded[0].label]),
        "picture": str(out),
        "weights": [{**_weights_report(w, stats[w.label]), "mean_kept_right_per_pair": right[w.label]} for w in loaded],
    }
    report_path = out.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(corr.stats_tables(stats))
    print(f"wrote {out} and {report_path}")
    return 0


def _weights_report(w: Loaded, s) -> dict[str, Any]:
    return {
        "label": w.label,
        **w.provenance,
        "pairs": s.pairs,
        "locations_per_view": s.locations,
        "mean_mutual_per_pair": s.mean_mutual,
        "mean_kept_per_pair": s.mean_kept,
        "kept_per_pair": list(s.kept_per_pair),
        "histogram": {"edges": list(s.histogram_edges), "counts": list(s.histogram_counts)},
    }


# --------------------------------------------------------------------------- arguments


def _check_args(args: argparse.Namespace) -> Path:
    if args.image2 and not args.image:
        raise InputError("--image2 needs --image: the two images to match")
    if args.pairs is not None and not args.data:
        raise InputError("--pairs goes with --data; --image gives one pair")
    if args.pairs is not None and args.pairs < 1:
        raise InputError(f"--pairs must be >= 1, got {args.pairs}")
    if args.label is not None and len(args.label) != len(args.weights):
        raise InputError(
            f"{len(args.label)} --label for {len(args.weights)} --weights; give one label per weights, or none"
        )
    if args.crop < 32:
        raise InputError(f"--crop must be >= 32 (one C5 cell is 32 px), got {args.crop}")
    if not 0 < args.min_scale <= 1:
        raise InputError(f"--min-scale must be in (0, 1], got {args.min_scale}")
    if not -1 <= args.threshold <= 1:
        raise InputError(f"--threshold is a cosine similarity, in [-1, 1]; got {args.threshold}")
    out = Path(args.out)
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise InputError(f"--out {out} should end in {', '.join(PICTURE_SUFFIXES)}; the JSON report goes next to it")
    return out


# --------------------------------------------------------------------------- weights


def _load_backbones(sources: list[str], labels: list[str] | None, arch: str | None, seed: int) -> list[Loaded]:
    """One backbone per weights, all of one architecture, checked before any is built."""
    import torch

    from densecl.evaluation.backbone import RANDOM, agreed_arch, load_source, read_sources

    read = read_sources(sources, arch)
    arch = agreed_arch(read, arch, random=RANDOM in sources)
    labels = labels or _default_labels(sources, arch)
    loaded = []
    for n, (source, label) in enumerate(zip(sources, labels)):
        if source == RANDOM:
            torch.manual_seed(seed + n)  # reproducible, and two random rows differ
        backbone, info = load_source(source, read, arch)
        if not backbone.input_spec.plain_rgb:  # this picture draws 8-bit photos
            raise InputError(
                f"'{source}' takes {backbone.input_spec.describe()}; densecl correspond draws 8-bit RGB photos: "
                "score such weights with densecl eval correspondence --data DIR"
            )
        loaded.append(Loaded(label, backbone, info))
    if len({w.label for w in loaded}) < len(loaded):
        raise InputError(f"--label names must differ, got {', '.join(w.label for w in loaded)}")
    return loaded


def _default_labels(sources: list[str], arch: str) -> list[str]:
    """File stems (the run directory's name for a training run's checkpoint); the paths
    as given where those repeat; a position where even those do."""
    from densecl.checkpoint import CHECKPOINT_NAME

    def name(source: str) -> str:
        path = Path(source)
        if source == RANDOM_WEIGHTS:
            return f"{RANDOM_WEIGHTS} {arch}"
        return path.absolute().parent.name if path.name == CHECKPOINT_NAME else path.stem

    names = [name(s) for s in sources]
    names = [n if names.count(n) == 1 else s for n, s in zip(names, sources)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


# --------------------------------------------------------------------------- view pairs


def _one_input(loaded: list[Loaded]):
    """The photos' normalisation all the weights take (one set of views serves every row)."""
    specs = {w.backbone.input_spec.statistics(photo=True): w.label for w in loaded}
    if len(specs) > 1:
        each = "; ".join(f"{label}: mean {mean}, std {std}" for (mean, std), label in specs.items())
        raise InputError(f"the weights normalise photos differently ({each}): draw them in separate pictures")
    return loaded[0].backbone.input_spec


def _pairs(args: argparse.Namespace, inputs):
    """``(mode, source description, iterator of ViewPair)``, the views normalised as ``inputs`` says."""
    from densecl.data.transforms import GeometricTwoViews
    from densecl.inputs.sources import image_source
    from densecl.matches import augmented_pairs, given_pair

    view = GeometricTwoViews(args.crop, args.min_scale, photometric=args.augment == "moco-v2", inputs=inputs)
    if args.data:
        n = args.pairs or 16
        source = image_source(args.data, scenes_length=max(n, 16), scenes_size=args.crop, seed=args.seed)
        return "data", source.origin, augmented_pairs(source, n, view, args.seed)
    images = [_read_image(p) for p in filter(None, (args.image, args.image2))]
    if not args.image2:
        return "views", args.image, augmented_pairs(images[0], 1, view, args.seed)
    image1, image2 = (source.load(0) for source in images)
    return "images", f"{args.image} | {args.image2}", iter([given_pair(image1, image2, args.crop, args.image, inputs)])


def _read_image(path: str):
    """A one-image source, checked readable."""
    from densecl.inputs.files.photo import open_rgb
    from densecl.inputs.sources import ImageFiles

    if not Path(path).is_file():
        raise InputError(f"image {path} does not exist; check the path")
    open_rgb(path, fix="pass a JPEG, PNG or another file PIL reads")
    return ImageFiles([Path(path)], f"image {path}")


def _describe(mode: str, args: argparse.Namespace) -> str:
    if mode == "images":
        return f"two images at {args.crop} px"
    views = f"{args.augment} views at {args.crop} px"
    return f"{views}, pair 1 of {args.pairs or 16}" if mode == "data" else views
