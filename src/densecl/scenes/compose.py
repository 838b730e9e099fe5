"""What both scene generators share: drawing visible objects and labelling them.

A generator places objects (:class:`Placed`: a class id, a window of the image
and an alpha over it); later objects lie on top. A pixel belongs to the
top-most object whose alpha there is >= 0.5. An object left with fewer than
:data:`MIN_VISIBLE_PIXELS` such pixels is dropped before anything is painted,
so every visible shape in the image is labelled and instance ids are
consecutive; a draw with no visible object is redrawn. The labels of the
finished image (:class:`Scene`) are then fixed by the placed objects alone:
the instance map, the class map, and the box of each instance's visible pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from densecl.errors import InputError

MIN_SIZE = 32
"""Smallest image side, in pixels, a generator accepts."""

MIN_VISIBLE_PIXELS = 10
"""An object with fewer visible pixels than this is dropped from the scene."""

MAX_TRIES = 100
"""Draws of a scene's objects before giving up on finding a visible one."""


@dataclass(frozen=True)
class Scene:
    """One rendered scene and its labels (``M`` = number of visible instances).

    Attributes:
        image: ``H x W x 3`` uint8 RGB; ``H x W x C`` uint16 or with a fourth band where asked
            (:func:`densecl.scenes.procedural.render_scene`).
        semantic: ``H x W`` uint8; 0 background, 1..K class id of the visible object.
        instances: ``H x W`` int32; 0 none, 1..M instance id, numbered bottom to top.
        boxes: ``M x 4`` float32 ``(x1, y1, x2, y2)`` of each instance's visible
            pixels; ``x2``/``y2`` are exclusive (max index + 1).
        labels: ``M`` int64 class id (1..K) of each instance.
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Placed:
    """One placed object: its class, its window ``rows x cols`` in the image, alpha over that window.

    Generators subclass it to carry what they paint with.
    """

    label: int  # class id 1..K
    rows: slice
    cols: slice
    alpha: np.ndarray  # h x w float32 in [0, 1]


P = TypeVar("P", bound=Placed)


def check_arguments(who: str, size: int, max_objects: int, seed: int) -> None:
    """Raises :class:`InputError` ``"<who>: <argument> must be ..."`` on a bad image side, object count or seed."""
    if size < MIN_SIZE:
        raise InputError(f"{who}: size must be >= {MIN_SIZE} pixels, got {size}")
    if max_objects < 1:
        raise InputError(f"{who}: max_objects must be >= 1, got {max_objects}")
    if seed < 0:
        raise InputError(f"{who}: seed must be >= 0, got {seed}")


def pixel_owners(objects: Sequence[Placed], size: int) -> np.ndarray:
    """``size x size`` int32: 1 + list index of the top-most object with alpha >= 0.5, else 0."""
    owner = np.zeros((size, size), dtype=np.int32)
    for k, obj in enumerate(objects):
        owner[obj.rows, obj.cols][obj.alpha >= 0.5] = k + 1
    return owner


def draw_visible(
    rng: np.random.Generator, max_objects: int, size: int, place: Callable[[list[P]], P], who: str, what: str
) -> list[P]:
    """Draws 1..``max_objects`` objects with ``place(earlier)`` and keeps the visible ones, bottom to top.

    The count comes from ``rng`` first, then each object's ``place`` call in
    order; a draw where no object stays visible is redrawn, up to
    :data:`MAX_TRIES` times (``who`` and ``what`` name the scene in the error).
    """
    for _ in range(MAX_TRIES):
        objects: list[P] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            objects.append(place(objects))
        visible = np.bincount(pixel_owners(objects, size).ravel(), minlength=len(objects) + 1)[1:]
        # Dropping an object only uncovers pixels of the others, so one pass suffices.
        objects = [obj for obj, n in zip(objects, visible) if n >= MIN_VISIBLE_PIXELS]
        if objects:
            return objects
    # would need 100 draws in a row with no visible object
    raise RuntimeError(f"{who}: no visible object in {what} after {MAX_TRIES} tries")  # pragma: no cover


def labelled_scene(pixels: np.ndarray, objects: Sequence[Placed]) -> Scene:
    """The finished ``S x S x 3`` uint8 image and its visible objects -> the :class:`Scene` with its labels."""
    size = pixels.shape[0]
    instances = pixel_owners(objects, size)  # S x S, ids 1..M bottom to top
    boxes = np.zeros((len(objects), 4), dtype=np.float32)  # M x 4
    for k, obj in enumerate(objects):
        mine = instances[obj.rows, obj.cols] == k + 1  # h x w; visible pixels lie in the window
        ys, xs = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        boxes[k] = (
            obj.cols.start + xs[0],
            obj.rows.start + ys[0],
            obj.cols.start + xs[-1] + 1,
            obj.rows.start + ys[-1] + 1,
        )
    labels = np.array([obj.label for obj in objects], dtype=np.int64)  # M
    semantic = np.concatenate([[0], labels]).astype(np.uint8)[instances]  # S x S
    return Scene(image=pixels, semantic=semantic, instances=instances, boxes=boxes, labels=labels)
