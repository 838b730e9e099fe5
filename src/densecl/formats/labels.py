"""Image-level labels: a split's images and targets, the class list file, the label-list layout.

Label list (read only): ``root/<split>.txt``, one image a line,
``<path> <label>[,<label>...]``, path relative to ``root`` (no whitespace in
paths), labels are class names. Class order from ``root/classes.txt`` (one
name a line) if present, else the sorted names seen in the list. Single- or
multi-label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densecl.errors import InputError


@dataclass(frozen=True)
class ClassificationSplit:
    """Images with image-level labels.

    Attributes:
        paths: ``N`` image files.
        targets: ``N x K`` int8: 1 positive, 0 negative, -1 ignored (VOC "difficult").
        classes: ``K`` class names, index = column of ``targets``.
        source: where the labels came from (for messages and the result file).
    """

    paths: list[Path]
    targets: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def single_label(self) -> bool:
        return bool(((self.targets == 1).sum(axis=1) == 1).all() and (self.targets >= 0).all())

    def labels(self) -> np.ndarray:
        """``N`` class indices; only for single-label data."""
        if not self.single_label:
            raise InputError(
                f"{self.source} is multi-label (or marks images difficult); this protocol needs one label "
                "per image: use ImageFolder or a label list with one label a line, or the svm protocol"
            )
        return self.targets.argmax(axis=1)


def write_class_names(path: Path, classes: tuple[str, ...]) -> None:
    """``classes.txt``: one class name a line, in index order."""
    path.write_text("\n".join(classes) + "\n")


def read_class_names(path: Path) -> tuple[str, ...]:
    """The names of ``classes.txt``, in index order; empty or repeated names are an :class:`InputError`."""
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise InputError(f"{path} lists no class; write one class name a line")
    if len(set(names)) != len(names):
        raise InputError(f"{path} lists a class twice; class names must be unique")
    return names


def read_label_list(root: Path, split: str, classes: tuple[str, ...] | None) -> ClassificationSplit:
    """Reads ``root/<split>.txt`` (see the module docstring); ``classes`` fixes the order (a val split's)."""
    path = root / f"{split}.txt"
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise InputError(f"{path} line {n}: expected '<path> <label>[,<label>...]' (no spaces in paths)")
        labels = parts[1].split(",") if len(parts) == 2 else []
        rows.append((root / parts[0], [lab for lab in labels if lab], n))
    if classes is None:
        classes = (
            read_class_names(root / "classes.txt")
            if (root / "classes.txt").is_file()
            else tuple(sorted({lab for _, labels, _ in rows for lab in labels}))
        )
    index = {c: k for k, c in enumerate(classes)}
    targets = np.zeros((len(rows), len(classes)), dtype=np.int8)
    for i, (image, labels, n) in enumerate(rows):
        unknown = [lab for lab in labels if lab not in index]
        if unknown:
            raise InputError(f"{path} line {n}: unknown class {unknown[0]!r}; known: {', '.join(classes)}")
        if not image.is_file():
            raise InputError(f"{path} line {n}: image {image} does not exist")
        targets[i, [index[lab] for lab in labels]] = 1
    return ClassificationSplit([r[0] for r in rows], targets, tuple(classes), str(path))
