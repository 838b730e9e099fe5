"""Writes the embedded ``scenes`` in the layouts people keep real data in.

So tests, the demo and real data run the same evaluation code. The layouts
and their writers are those of :mod:`densecl.formats`:

- ``voc``: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
  PNG of class ids), ``Annotations/<id>.xml`` (the box of each visible
  instance), ``ImageSets/Segmentation/{train,val}.txt``,
  ``ImageSets/Main/{train,val}.txt``, ``ImageSets/Main/<class>_{train,val}.txt``
  and ``classes.txt``;
- ``coco``: ``{train,val}/<id>.png`` and ``annotations/instances_{train,val}.json``;
- ``imagefolder``: ``{train,val}/<class of the largest visible area>/<id>.png``.

Train scenes are indices ``0..n_train-1`` and val scenes
``n_train..n_train+n_val-1`` of the same seed, so the splits never share a scene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from densecl import run_dir
from densecl.errors import InputError
from densecl.formats import FORMATS, open_writer
from densecl.scenes.procedural import CLASSES, render_scene

PROCEDURAL_SPLITS = ("train", "val")
"""The splits of the exported procedural scenes: disjoint ranges of scene indices."""


# what each format writes; --overwrite removes exactly these
@dataclass(frozen=True)
class ExportSummary:
    out: Path
    format: str
    counts: dict[str, int]  # images per split


def prepare_output(out: Path, overwrite: bool) -> None:
    """Makes ``out``; a non-empty one only with ``overwrite``, which moves it aside (``OUT.old-N``), never deletes."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        print(f"densecl data: moved the earlier {out} to {run_dir.move_aside(out)}")
    out.mkdir(parents=True, exist_ok=True)


def export_scenes(
    out: Path,
    fmt: str,
    n_train: int = 64,
    n_val: int = 32,
    size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
    overwrite: bool = False,
    bands: int = 3,
    bit_depth: int = 8,
) -> ExportSummary:
    """Renders ``n_train + n_val`` scenes and writes them under ``out`` in format ``fmt``.

    ``bands=4`` adds a near-infrared band, ``bit_depth=16`` writes uint16; either makes the images TIFFs of
    their bands (:func:`densecl.inputs.files.save_image`) in the layout's image folder.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if n_train < 1 or n_val < 1:
        raise InputError(f"--n-train and --n-val must be >= 1, got {n_train} and {n_val}")
    prepare_output(out, overwrite)
    indices = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    writer = open_writer(fmt, out, CLASSES, PROCEDURAL_SPLITS)
    for split in PROCEDURAL_SPLITS:
        for index in indices[split]:
            scene = render_scene(index, seed=seed, size=size, max_objects=max_objects, bands=bands, bit_depth=bit_depth)
            writer.add(split, f"scene_{index:06d}", scene)
    writer.finish()
    manifest = {
        "format": fmt,
        "seed": seed,
        "size": size,
        "max_objects": max_objects,
        **({"bands": bands, "bit_depth": bit_depth} if (bands, bit_depth) != (3, 8) else {}),  # RGB: as it was
        "splits": {s: [indices[s].start, indices[s].stop] for s in PROCEDURAL_SPLITS},
        "classes": list(CLASSES),
    }
    (out / "scenes.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportSummary(out, fmt, {s: len(indices[s]) for s in PROCEDURAL_SPLITS})
