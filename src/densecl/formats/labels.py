"""Image-level labels: a split's images and targets, the class list file, the label-list layout.

``classes.txt`` (one rule for every protocol and layout that reads it): the
class names, one a line. A first line ``background`` (or ``__background__``)
names the background: never an object class, and label value 0 of a
segmentation mask. Every other line is an object class. So a mask's value
``k`` is line ``k`` counted from 0 (with a background line, object class ``i``
is value ``i``; without one, as in Cityscapes' train ids, value 0 is the first
object class); detection numbers the object classes 1..K (0 is the detector's
background, whatever the file says); image-level labels name object classes.
"background" on any later line is an error.

Label list (read only): ``root/<split>.txt``, one image a line,
``<path> <label>[,<label>...]``, path relative to ``root`` (no whitespace in
paths), labels are object class names. Class order from ``root/classes.txt``
if present (its background line, if any, left out), else the sorted names seen
in the list. Single- or multi-label.
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


BACKGROUND_NAMES = ("background", "__background__")
"""A first line of ``classes.txt`` that names the background rather than an object class."""


@dataclass(frozen=True)
class ClassList:
    """What ``classes.txt`` says (see the module docstring), or a layout's default where there is no file.

    Attributes:
        objects: ``K`` object class names, in file order.
        background: the name of the background line (the file's first), or None when it has none.
        source: the ``classes.txt`` path read, or looked for when ``default`` is given.
        default: where there is no file, what the classes are instead (for messages), e.g. "VOC's 20 ...".
    """

    objects: tuple[str, ...]
    background: str | None
    source: str
    default: str = ""

    @property
    def by_value(self) -> tuple[str, ...]:
        """The names by segmentation label value: the background first when there is one, then the objects."""
        return ((self.background,) if self.background else ()) + self.objects

    def rule(self) -> str:
        """One clause for messages: how many object classes, and whether a first line was taken as the background."""
        if self.default:
            return f"there is no {self.source}, so the classes are {self.default}"
        n = f"{len(self.objects)} object class{'es' if len(self.objects) != 1 else ''}"
        if self.background:
            return f"{self.source} lists {n} (its first line {self.background!r} is the background)"
        return f"{self.source} lists {n} and no background line (every line is an object class)"

    def values(self) -> str:
        """Which segmentation label value is which, e.g. ``0 = 'background', 1..8 = the object classes``."""
        k = len(self.objects)
        objects = f"{int(bool(self.background))}..{k - 1 + bool(self.background)} = the object classes"
        return f"0 = {self.background!r}, {objects}" if self.background else f"{objects}, no background"


def write_class_list(path: Path, classes: ClassList) -> None:
    """``classes.txt``: the background line (when there is one), then one object class a line."""
    path.write_text("".join(f"{name}\n" for name in classes.by_value))


def read_class_list(path: Path) -> ClassList:
    """Reads ``classes.txt`` by the rule of the module docstring; any other reading is an :class:`InputError`.

    Empty files, repeated names and a background name after the first line are refused.
    """
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise InputError(f"{path} lists no class; write one class name a line")
    if len(set(names)) != len(names):
        raise InputError(f"{path} lists a class twice; class names must be unique")
    background = names[0] if names[0] in BACKGROUND_NAMES else None
    objects = names[1:] if background else names
    late = [name for name in objects if name in BACKGROUND_NAMES]
    if late:
        raise InputError(
            f"{path} names {late[0]!r} after its first line; the background may only be the first line "
            "(the other lines are object classes)"
        )
    if not objects:
        raise InputError(f"{path} lists only the background; add the object classes, one a line")
    return ClassList(objects, background, str(path))


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
    listed = read_class_list(root / "classes.txt") if (root / "classes.txt").is_file() else None
    if classes is None:
        classes = listed.objects if listed else tuple(sorted({lab for _, labels, _ in rows for lab in labels}))
    index = {c: k for k, c in enumerate(classes)}
    targets = np.zeros((len(rows), len(classes)), dtype=np.int8)
    for i, (image, labels, n) in enumerate(rows):
        unknown = [lab for lab in labels if lab not in index]
        if unknown:
            known = listed.rule() if listed else f"the classes are those of the train list: {', '.join(classes)}"
            raise InputError(f"{path} line {n}: unknown class {unknown[0]!r}; {known}")
        if not image.is_file():
            raise InputError(f"{path} line {n}: image {image} does not exist")
        targets[i, [index[lab] for lab in labels]] = 1
    return ClassificationSplit([r[0] for r in rows], targets, tuple(classes), str(path))
