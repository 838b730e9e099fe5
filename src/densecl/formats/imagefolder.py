"""The ImageFolder layout: ``root/<split>/<class>/<image>``, one label per image; writer and reader.

The writer files each scene under the class with the largest visible area and
makes every class folder in every split, empty or not, so all splits read the
same class list. The reader takes the train split's folder names, sorted, as
the classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from densecl.errors import InputError
from densecl.formats.labels import ClassificationSplit
from densecl.inputs.files import EXTENSIONS, save_image

if TYPE_CHECKING:
    from densecl.scenes.compose import Scene


def dominant_class(scene: Scene) -> int:
    """The class id with the most visible pixels (ties: the smaller id)."""
    counts = np.bincount(scene.semantic.ravel())
    counts[0] = 0
    return int(counts.argmax())


class ImageFolderWriter:
    """Writes scenes as ``<split>/<dominant class>/<name>.png``."""

    def __init__(self, out: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> None:
        self.out, self.classes, self.splits = out, classes, splits
        for split in self.splits:  # every class folder in every split, so all read the same class list
            for name in self.classes[1:]:
                (out / split / name).mkdir(parents=True, exist_ok=True)

    def add(self, split: str, name: str, scene: Scene) -> None:
        folder = self.out / split / self.classes[dominant_class(scene)]
        folder.mkdir(parents=True, exist_ok=True)
        save_image(folder, name, scene.image, ".png")  # 16-bit or more bands: .tif

    def finish(self) -> None:
        pass


def read_image_folder(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    """Reads ``root/<split>/<class>/*``; ``classes`` fixes the order (a val split's, from the train split)."""
    folder = root / split
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = classes or tuple(found)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise InputError(f"{folder} has class folder(s) {', '.join(unknown)} that the train split lacks")
    paths, labels = [], []
    for k, c in enumerate(classes):
        if not (folder / c).is_dir():
            continue
        for image in sorted((folder / c).iterdir()):
            if image.suffix.lower() in EXTENSIONS:
                paths.append(image)
                labels.append(k)
    targets = np.zeros((len(paths), len(classes)), dtype=np.int8)
    targets[np.arange(len(paths)), labels] = 1
    return ClassificationSplit(paths, targets, tuple(classes), str(folder))
