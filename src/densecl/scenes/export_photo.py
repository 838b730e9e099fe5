"""Writes photo scenes (:mod:`densecl.scenes.photo`) as a ready-to-use data set.

Layout under ``out`` (one folder per ``--format``)::

    voc/          JPEGImages, SegmentationClass, Annotations, ImageSets/{Segmentation,Main}, classes.txt
    coco/         {train,val,test}/*.png, annotations/instances_{train,val,test}.json
    imagefolder/  {train,val,test}/<class of the largest visible object>/*.png
    unlabeled/train/*.jpg   the train images alone, for pre-training (--data out/unlabeled/train)
    manifest.json classes, counts, seed, sources, the split of every asset, per image its
                  background and cut-outs (provenance)
    README.md     the same in words

The layouts are those of :mod:`densecl.scenes.export` (same writers), with
the splits ``train``, ``val`` and ``test``. Image names are ``<split>_<index>``.

Example::

    densecl data scenes --objects .cache/assets/objects --backgrounds .cache/assets/backgrounds \\
        --out .cache/photo-scenes --n 2000 --size 160 --seed 0
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.formats import FORMATS, open_writer
from densecl.scenes.export import prepare_output
from densecl.scenes.photo import PHOTO_SPLITS, PhotoAssets, PhotoSceneComposer, load_assets, split_counts

UNLABELED = "unlabeled"


@dataclass(frozen=True)
class PhotoExportSummary:
    out: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # images per split
    instances: dict[str, dict[str, int]]  # split -> class -> instances
    skipped: tuple[str, ...]  # files left out, one message each
    seconds: float


def parse_formats(text: str) -> tuple[str, ...]:
    """``"voc,coco"`` -> ``("voc", "coco")``, checked against :data:`FORMATS`."""
    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {text!r}: choose a comma-separated list of {', '.join(FORMATS)}")
    return formats


def export_photo_scenes(
    out: Path,
    objects: Path,
    backgrounds: Path,
    n: int = 200,
    size: int = 160,
    seed: int = 0,
    max_objects: int = 4,
    formats: Sequence[str] = FORMATS,
    overwrite: bool = False,
    on_skip: Callable[[str], None] | None = None,
) -> PhotoExportSummary:
    """Composes ``n`` images (split by :func:`~densecl.scenes.photo.split_counts`) and writes them.

    Args:
        on_skip: called with one message per asset file left out, as it is found.

    Raises:
        InputError: bad assets (see :func:`~densecl.scenes.photo.load_assets`) or arguments,
            or ``out`` is not empty and ``overwrite`` is not set.
    """
    start = time.perf_counter()
    out = Path(out)
    formats = parse_formats(",".join(formats))
    if n < len(PHOTO_SPLITS):
        raise InputError(f"--n must be >= {len(PHOTO_SPLITS)} (one image per split), got {n}")
    assets = load_assets(objects, backgrounds, on_skip)
    composer = PhotoSceneComposer(assets, size=size, max_objects=max_objects, seed=seed)  # checks the arguments
    _prepare(out, overwrite)

    counts = split_counts(n)
    writers = [open_writer(fmt, out / fmt, assets.classes, PHOTO_SPLITS) for fmt in formats]
    (out / UNLABELED / "train").mkdir(parents=True)
    instances = {split: dict.fromkeys(assets.classes[1:], 0) for split in PHOTO_SPLITS}
    records = []
    for split in PHOTO_SPLITS:
        for index in range(counts[split]):
            composed = composer.compose(split, index)
            name = f"{split}_{index:06d}"
            for writer in writers:
                writer.add(split, name, composed.scene)
            if split == "train":
                Image.fromarray(composed.scene.image).save(out / UNLABELED / "train" / f"{name}.jpg", quality=95)
            for label in composed.scene.labels:
                instances[split][assets.classes[label]] += 1
            records.append(
                {
                    "name": name,
                    "split": split,
                    "background": composed.background,
                    "objects": [
                        {"cutout": c, "class": assets.classes[label], "box": [int(v) for v in box]}
                        for c, label, box in zip(composed.cutouts, composed.scene.labels, composed.scene.boxes)
                    ],
                }
            )
    for writer in writers:
        writer.finish()

    manifest = {
        "generator": "densecl data scenes",
        "seed": seed,
        "size": size,
        "max_objects": max_objects,
        "formats": list(formats),
        "classes": list(assets.classes),
        "counts": {"images": counts, "instances": instances, "assets": _asset_counts(assets)},
        "sources": {"objects": str(assets.objects_root), "backgrounds": str(assets.backgrounds_root)},
        "assets": {
            split: {
                "cutouts": [c.name for c in assets.cutouts[split]],
                "backgrounds": [b.name for b in assets.backgrounds[split]],
            }
            for split in PHOTO_SPLITS
        },
        "skipped": list(assets.skipped),
        "images": records,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "README.md").write_text(_readme(manifest))
    return PhotoExportSummary(out, assets.classes, counts, instances, assets.skipped, time.perf_counter() - start)


def _prepare(out: Path, overwrite: bool) -> None:
    prepare_output(out, overwrite)


def _asset_counts(assets: PhotoAssets) -> dict[str, dict]:
    """split -> cut-outs per class and number of backgrounds."""
    result = {}
    for split in PHOTO_SPLITS:
        labels = np.array([c.label for c in assets.cutouts[split]], dtype=np.int64)
        per_class = np.bincount(labels, minlength=len(assets.classes))
        result[split] = {
            "cutouts": {name: int(per_class[k]) for k, name in enumerate(assets.classes) if k > 0},
            "backgrounds": len(assets.backgrounds[split]),
        }
    return result


def _readme(manifest: dict) -> str:
    classes = manifest["classes"][1:]
    counts = manifest["counts"]
    rows = [
        f"| {name} | "
        + " | ".join(f"{counts['assets'][s]['cutouts'][name]} / {counts['instances'][s][name]}" for s in PHOTO_SPLITS)
        + " |"
        for name in classes
    ]
    return "\n".join(
        [
            "# Photo scenes",
            "",
            "Cut-and-paste scenes written by `densecl data scenes` (module `densecl.scenes.photo`).",
            f"Seed {manifest['seed']}, {manifest['size']} px, 1..{manifest['max_objects']} objects per image.",
            "",
            f"- objects: `{manifest['sources']['objects']}`",
            f"- backgrounds: `{manifest['sources']['backgrounds']}`",
            "- images: " + ", ".join(f"{counts['images'][s]} {s}" for s in PHOTO_SPLITS),
            "- layouts: "
            + ", ".join(f"`{f}/`" for f in manifest["formats"])
            + f", `{UNLABELED}/train/` (train images, no labels)",
            "",
            "Each cut-out file and each background photo is used by one split only; `manifest.json`",
            "lists the split of every asset and, per image, its background and cut-outs.",
            "",
            "| class | " + " | ".join(f"{s}: cut-outs / instances" for s in PHOTO_SPLITS) + " |",
            "|---|" + "---|" * len(PHOTO_SPLITS),
            *rows,
            "| (backgrounds) | " + " | ".join(str(counts["assets"][s]["backgrounds"]) for s in PHOTO_SPLITS) + " |",
            "",
            "The images are derived from the source files above; their licences apply to this data set.",
            "",
        ]
    )
