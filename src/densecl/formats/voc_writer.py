"""Writes scenes in the VOC layout (:mod:`densecl.formats.voc` lists the files)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from densecl.formats.labels import BACKGROUND_NAMES, ClassList, write_class_list
from densecl.formats.voc import palette
from densecl.formats.voc_boxes import write_annotation
from densecl.inputs.files import save_image

if TYPE_CHECKING:
    from densecl.scenes.compose import Scene


class VocWriter:
    """Writes scenes in the VOC layout: JPEG images, palette label PNGs, box XML, image sets, ``classes.txt``."""

    def __init__(self, out: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> None:
        """``classes``: the background first (``classes.txt``'s first line), then the object classes by id."""
        if classes[0] not in BACKGROUND_NAMES:
            raise ValueError(
                f"the first class must be the background ({' or '.join(BACKGROUND_NAMES)}), got {classes[0]!r}"
            )
        self.out, self.classes, self.splits = out, classes, splits
        for d in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "ImageSets/Main"):
            (out / d).mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, list[str]] = {s: [] for s in self.splits}
        self.present: dict[str, list[set[int]]] = {s: [] for s in self.splits}
        self.palette = palette()

    def add(self, split: str, name: str, scene: Scene) -> None:
        save_image(self.out / "JPEGImages", name, scene.image, ".jpg", quality=95)  # 16-bit or more bands: .tif
        h, w = scene.semantic.shape
        label = Image.frombytes("P", (w, h), np.ascontiguousarray(scene.semantic, dtype=np.uint8).tobytes())
        label.putpalette(self.palette)
        label.save(self.out / "SegmentationClass" / f"{name}.png")
        write_annotation(self.out / "Annotations" / f"{name}.xml", f"{name}.jpg", (w, h), scene, self.classes)
        self.ids[split].append(name)
        self.present[split].append(set(np.unique(scene.semantic).tolist()) - {0})

    def finish(self) -> None:
        write_class_list(self.out / "classes.txt", ClassList(self.classes[1:], self.classes[0], "classes.txt"))
        for split in self.splits:
            (self.out / "ImageSets/Segmentation" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in self.ids[split])
            )
            (self.out / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in self.ids[split]))
            for k, name in enumerate(self.classes[1:], start=1):
                lines = [f"{i} {1 if k in p else -1:>2}\n" for i, p in zip(self.ids[split], self.present[split])]
                (self.out / "ImageSets/Main" / f"{name}_{split}.txt").write_text("".join(lines))
