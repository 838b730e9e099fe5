"""Writes the embedded ``scenes`` in the layouts people keep real data in.

So tests, the demo and real data run the same evaluation code:

- ``voc``: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
  PNG of class ids), ``ImageSets/Segmentation/{train,val}.txt``,
  ``ImageSets/Main/<class>_{train,val}.txt`` (``1`` if the class is visible,
  ``-1`` if not: multi-label classification) and ``classes.txt``
  (background first).
- ``coco``: ``{train,val}/<id>.png`` and ``annotations/instances_{train,val}.json``
  (boxes of the visible pixels, masks as RLE from ``pycocotools.mask.encode``,
  category id = class id 1..K).
- ``imagefolder``: ``{train,val}/<class>/<id>.png``, the image's class being
  the one with the largest visible area; every class has a folder in both
  splits, empty or not.

Train scenes are indices ``0..n_train-1`` and val scenes
``n_train..n_train+n_val-1`` of the same seed, so the splits never share a scene.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from densecl.scenes.compose import Scene
from densecl.scenes.procedural import CLASSES, render_scene
from densecl.errors import InputError

FORMATS = ("voc", "coco", "imagefolder")
PROCEDURAL_SPLITS = ("train", "val")
"""The splits of the exported procedural scenes: disjoint ranges of scene indices."""

# what each format writes; --overwrite removes exactly these
_OWNED = {
    "voc": ("JPEGImages", "SegmentationClass", "ImageSets", "classes.txt", "scenes.json"),
    "coco": ("train", "val", "annotations", "scenes.json"),
    "imagefolder": ("train", "val", "scenes.json"),
}


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    format: str
    counts: dict[str, int]  # images per split


def prepare_output(out: Path, owned: Iterable[str], overwrite: bool) -> None:
    """Makes ``out``; a non-empty one only with ``overwrite``, removing just the entries in ``owned``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        for name in owned:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def export_scenes(
    out: Path, fmt: str, n_train: int = 64, n_val: int = 32, size: int = 128, seed: int = 0,
    max_objects: int = 4, overwrite: bool = False,
) -> ExportSummary:
    """Renders ``n_train + n_val`` scenes and writes them under ``out`` in format ``fmt``."""
    out = Path(out)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if n_train < 1 or n_val < 1:
        raise InputError(f"--n-train and --n-val must be >= 1, got {n_train} and {n_val}")
    prepare_output(out, _OWNED[fmt], overwrite)
    indices = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    writer = open_writer(fmt, out)
    for split in PROCEDURAL_SPLITS:
        for index in indices[split]:
            writer.add(split, f"scene_{index:06d}", render_scene(index, seed=seed, size=size, max_objects=max_objects))
    writer.finish()
    manifest = {"format": fmt, "seed": seed, "size": size, "max_objects": max_objects,
                "splits": {s: [indices[s].start, indices[s].stop] for s in PROCEDURAL_SPLITS}, "classes": list(CLASSES)}
    (out / "scenes.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportSummary(out, fmt, {s: len(indices[s]) for s in PROCEDURAL_SPLITS})


def open_writer(
    fmt: str, out: Path, classes: Sequence[str] = CLASSES, splits: Sequence[str] = PROCEDURAL_SPLITS
) -> _VOC | _COCO | _ImageFolder:
    """The writer of layout ``fmt`` under ``out``: ``add(split, name, scene)`` per scene, then ``finish()``.

    ``classes`` (background first, index = class id) and ``splits`` default to the
    embedded scenes'; other scene sources (:mod:`densecl.scenes.photo`) pass theirs.
    Names must be unique across splits (VOC keeps all images in one folder).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {"voc": _VOC, "coco": _COCO, "imagefolder": _ImageFolder}[fmt](Path(out), tuple(classes), tuple(splits))


def dominant_class(scene: Scene) -> int:
    """The class id with the most visible pixels (ties: the smaller id)."""
    counts = np.bincount(scene.semantic.ravel(), minlength=len(CLASSES))
    counts[0] = 0
    return int(counts.argmax())


def _palette() -> list[int]:
    """VOC's colour map (bit-interleaved class index); 255 = the ignore colour."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


class _VOC:
    def __init__(self, out: Path, classes: tuple[str, ...] = CLASSES, splits: tuple[str, ...] = PROCEDURAL_SPLITS) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "ImageSets/Main"):
            (out / d).mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, list[str]] = {s: [] for s in self.splits}
        self.present: dict[str, list[set[int]]] = {s: [] for s in self.splits}
        self.palette = _palette()

    def add(self, split: str, name: str, scene: Scene) -> None:
        Image.fromarray(scene.image).save(self.out / "JPEGImages" / f"{name}.jpg", quality=95)
        h, w = scene.semantic.shape
        label = Image.frombytes("P", (w, h), np.ascontiguousarray(scene.semantic, dtype=np.uint8).tobytes())
        label.putpalette(self.palette)
        label.save(self.out / "SegmentationClass" / f"{name}.png")
        self.ids[split].append(name)
        self.present[split].append(set(np.unique(scene.semantic).tolist()) - {0})

    def finish(self) -> None:
        (self.out / "classes.txt").write_text("\n".join(self.classes) + "\n")
        for split in self.splits:
            (self.out / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in self.ids[split]))
            (self.out / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in self.ids[split]))
            for k, name in enumerate(self.classes[1:], start=1):
                lines = [f"{i} {1 if k in p else -1:>2}\n" for i, p in zip(self.ids[split], self.present[split])]
                (self.out / "ImageSets/Main" / f"{name}_{split}.txt").write_text("".join(lines))


class _COCO:
    def __init__(self, out: Path, classes: tuple[str, ...] = CLASSES, splits: tuple[str, ...] = PROCEDURAL_SPLITS) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        self.data = {s: {"images": [], "annotations": []} for s in self.splits}
        self.next_ann = 1

    def add(self, split: str, name: str, scene: Scene) -> None:
        from pycocotools import mask as mask_utils

        (self.out / split).mkdir(exist_ok=True)
        Image.fromarray(scene.image).save(self.out / split / f"{name}.png")
        image_id = len(self.data[split]["images"]) + 1
        h, w = scene.semantic.shape
        self.data[split]["images"].append({"id": image_id, "file_name": f"{name}.png", "width": w, "height": h})
        for m, (box, label) in enumerate(zip(scene.boxes, scene.labels), start=1):
            mask = np.asfortranarray((scene.instances == m).astype(np.uint8))
            rle = mask_utils.encode(mask)
            x1, y1, x2, y2 = (float(v) for v in box)
            self.data[split]["annotations"].append({
                "id": self.next_ann, "image_id": image_id, "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()), "iscrowd": 0,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            })
            self.next_ann += 1

    def finish(self) -> None:
        categories = [{"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(self.classes) if k > 0]
        for split in self.splits:
            body = {"info": {"description": "densecl scenes"}, **self.data[split], "categories": categories}
            (self.out / "annotations" / f"instances_{split}.json").write_text(json.dumps(body))


class _ImageFolder:
    def __init__(self, out: Path, classes: tuple[str, ...] = CLASSES, splits: tuple[str, ...] = PROCEDURAL_SPLITS) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        for split in self.splits:  # every class folder in every split, so all read the same class list
            for name in self.classes[1:]:
                (out / split / name).mkdir(parents=True, exist_ok=True)

    def add(self, split: str, name: str, scene: Scene) -> None:
        folder = self.out / split / self.classes[dominant_class(scene)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(folder / f"{name}.png")

    def finish(self) -> None:
        pass
