"""Data set layouts on disk, one module each (VOC: three), the writer next to its readers.

- :mod:`~densecl.formats.voc`: ``JPEGImages``, ``SegmentationClass``, ``ImageSets``
  (image-level and segmentation labels); :mod:`~densecl.formats.voc_boxes`: ``Annotations``
  (boxes); :mod:`~densecl.formats.voc_writer`: the writer of the whole layout;
- :mod:`~densecl.formats.coco`: ``<split>/`` images and ``annotations/instances_<split>.json``
  (boxes and instance masks);
- :mod:`~densecl.formats.imagefolder`: ``<split>/<class>/<image>`` (one label per image);
- :mod:`~densecl.formats.labels`: image-level label splits, ``classes.txt`` and the
  label-list layout ``<split>.txt`` (read only).

A writer is opened on an output folder with the class names and splits, takes
``add(split, name, scene)`` per :class:`~densecl.scenes.compose.Scene`, then
``finish()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from densecl.errors import InputError
from densecl.formats.coco import CocoWriter
from densecl.formats.imagefolder import ImageFolderWriter
from densecl.formats.voc_writer import VocWriter

WRITERS = {"voc": VocWriter, "coco": CocoWriter, "imagefolder": ImageFolderWriter}
FORMATS = tuple(WRITERS)
"""The layouts scenes can be written in."""


def open_writer(
    fmt: str, out: Path, classes: Sequence[str], splits: Sequence[str]
) -> VocWriter | CocoWriter | ImageFolderWriter:
    """The writer of layout ``fmt`` under ``out``: ``add(split, name, scene)`` per scene, then ``finish()``.

    ``classes``: background first, index = class id. Names must be unique across
    splits (VOC keeps all images in one folder).
    """
    if fmt not in WRITERS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return WRITERS[fmt](Path(out), tuple(classes), tuple(splits))
