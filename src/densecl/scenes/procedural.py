"""The embedded ``scenes`` data set: procedural images, seeded, no download.

Each scene is a background crop of one of the photos bundled with scikit-image
with 1..``max_objects`` shapes pasted on top. A shape is one of eight classes
(:data:`CLASSES`), textured with a crop of another bundled photo whose colours
are tinted at random (so texture alone does not reveal the class), placed at a
random position, scale, rotation and aspect, and pasted with a feathered (soft)
edge. Later objects occlude earlier ones. Every scene carries its labels: a
class mask, an instance mask, the box of each instance's visible pixels and its
class id, so the same data serve pre-training and the segmentation, detection
and classification probes.

Shapes are signed distance functions evaluated with numpy on a pixel grid
covering the object's bounding square; the alpha ramps linearly from 1 to 0
over ``feather`` pixels across the edge, which is the analytic form of blurring
a hard mask. Labels follow :mod:`densecl.scenes.compose`: a pixel belongs to
the top-most object whose alpha there is >= 0.5 (equivalently, whose signed
distance is <= 0); objects left with fewer than
:data:`~densecl.scenes.compose.MIN_VISIBLE_PIXELS` such pixels are not drawn.

Scene ``index`` draws everything from ``np.random.default_rng([seed, index])``,
so any scene is the same in any process and in any order of calls.

Speed, one core of a shared 2-core CPU, photo bank already loaded,
``max_objects=4``: 4.6 ms per scene at 128 px and 6.5 ms at 224 px (timeit's
best of 5; a plain loop over 200 scenes averaged 4.1 and 8.9 ms)::

    .venv/bin/python -m timeit -s "import itertools; \
from densecl.scenes import render_scene; render_scene(0); \
c = itertools.count()" "render_scene(next(c))"
    .venv/bin/python -m timeit -s "import itertools; \
from densecl.scenes import render_scene; render_scene(0); \
c = itertools.count()" "render_scene(next(c), size=224)"

The photo bank (18 photos, longer side <= 512) is loaded once per process on
first use, which takes about a second.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from densecl.errors import InputError
from densecl.scenes.compose import Placed, Scene, check_arguments, draw_visible, labelled_scene

CLASSES: tuple[str, ...] = (
    "background",
    "disc",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "hexagon",
    "crescent",
)
"""Class names; the index of a name is its id in :attr:`Scene.semantic` and :attr:`Scene.labels`."""

PHOTOS: tuple[str, ...] = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "coins",
    "moon",
    "page",
    "text",
    "retina",
    "cat",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "clock",
)
"""Names of the ``skimage.data`` photos used as textures and backgrounds."""

MAX_PHOTO_SIDE = 512
NEAR_INFRARED: tuple[float, ...] = (0.0, 0.85, 0.2, 0.6, 0.1, 0.95, 0.4, 0.7, 0.3)
"""The synthetic near-infrared reflectance of each class's material (index = class id; background unused): the
fourth band of ``bands=4`` scenes, where shapes that look alike in RGB differ, as vegetation and roofs do."""
_EXTENT = 1.15  # every shape lies inside the disc of this radius (unit coordinates)


# ---------------------------------------------------------------- shapes
# Each shape maps unit coordinates (u, v), arrays of equal shape, to a signed
# distance (negative inside) in the same units; shapes fit in radius _EXTENT.


def _half_planes(vertices: np.ndarray) -> list[tuple[float, float, float]]:
    """Convex polygon ``V x 2`` -> its edges as ``(n_x, n_y, c)``, outward unit normal n."""
    centre = vertices.mean(axis=0)
    planes = []
    for p, q in zip(vertices, np.roll(vertices, -1, axis=0)):
        n = np.array([q[1] - p[1], p[0] - q[0]])
        n /= np.linalg.norm(n)
        if n @ (centre - p) > 0:
            n = -n
        planes.append((float(n[0]), float(n[1]), float(n @ p)))
    return planes


def _regular(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _convex(u: np.ndarray, v: np.ndarray, planes: list[tuple[float, float, float]]) -> np.ndarray:
    """Max over edges of the distance to the edge's line: exact inside, a lower bound outside."""
    d = None
    for nx, ny, c in planes:
        e = nx * u + ny * v - c
        d = e if d is None else np.maximum(d, e)
    return d


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)


_TRIANGLE = _half_planes(_regular(3, 1.1, -np.pi / 2))
_HEXAGON = _half_planes(_regular(6, 1.0))
# A five-pointed star is the union of five convex kites (centre side, inner
# vertex, tip, inner vertex). Each kite's centre corner is pushed 0.3 past the
# centre so neighbouring kites overlap instead of sharing an edge, which would
# leave a seam of alpha 0.5 inside the star.
_STAR_TIPS = _regular(5, 1.1, -np.pi / 2)
_STAR_INNER = _regular(5, 0.45, -np.pi / 2 + np.pi / 5)
_STAR_KITES = [
    _half_planes(np.stack([-0.3 * tip / 1.1, _STAR_INNER[k - 1], tip, _STAR_INNER[k]]))
    for k, tip in enumerate(_STAR_TIPS)
]


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) - 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.8, 0.8)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _convex(u, v, _TRIANGLE)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return functools.reduce(np.minimum, (_convex(u, v, kite) for kite in _STAR_KITES))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(u, v) - 0.72) - 0.28


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 1.0, 0.32), _box(u, v, 0.32, 1.0))


def _hexagon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _convex(u, v, _HEXAGON)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.hypot(u, v) - 1.0, 0.8 - np.hypot(u - 0.5, v))


_SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _disc,
    _square,
    _triangle,
    _star,
    _ring,
    _cross,
    _hexagon,
    _crescent,
)
assert len(_SHAPES) == len(CLASSES) - 1


# ---------------------------------------------------------------- photos


@functools.cache
def _photo_bank() -> tuple[Image.Image, ...]:
    """The bundled photos as RGB PIL images, longer side <= MAX_PHOTO_SIDE (loaded once)."""
    import skimage.data

    bank = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        photo = Image.fromarray(np.ascontiguousarray(array[:, :, :3]))
        scale = MAX_PHOTO_SIDE / max(photo.size)
        if scale < 1:
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR)
        bank.append(photo)
    return tuple(bank)


def _photo_crop(rng: np.random.Generator, width: int, height: int, zoom: float) -> np.ndarray:
    """A random photo region of ``zoom * (width, height)`` source pixels -> ``height x width x 3`` float32."""
    photos = _photo_bank()
    photo = photos[rng.integers(len(photos))]
    crop_w = min(max(width * zoom, 1.0), photo.width)
    crop_h = min(max(height * zoom, 1.0), photo.height)
    x0 = rng.uniform(0, photo.width - crop_w)
    y0 = rng.uniform(0, photo.height - crop_h)
    crop = photo.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A large, smooth, partly desaturated photo region -> ``size x size x 3`` float32."""
    photos = _photo_bank()
    photo = photos[rng.integers(len(photos))]
    side = rng.uniform(0.6, 1.0) * min(photo.size)
    x0, y0 = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
    crop = photo.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    image = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    saturation, brightness = rng.uniform(0.3, 1.0), rng.uniform(0.7, 1.1)
    grey = image.mean(axis=2, keepdims=True)
    return brightness * (grey + saturation * (image - grey))


def _tint(rng: np.random.Generator, texture: np.ndarray) -> np.ndarray:
    """Random grey-out, channel shuffle, per-channel gain and offset of an ``h x w x 3`` texture."""
    if rng.random() < 0.25:
        texture = np.broadcast_to(texture.mean(axis=2, keepdims=True), texture.shape)
    else:
        texture = texture[:, :, rng.permutation(3)]
    gain = rng.uniform(0.5, 1.4, size=3).astype(np.float32)
    offset = rng.uniform(-60.0, 60.0, size=3).astype(np.float32)
    return texture * gain + offset


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class _Shape(Placed):
    """A placed shape and the seed of its texture, drawn only if the shape stays visible."""

    texture_seed: int


def _place(rng: np.random.Generator, size: int) -> _Shape:
    """Draws class, pose and feather of one object and evaluates its alpha over its window."""
    label = int(rng.integers(1, len(CLASSES)))
    radius = rng.uniform(0.12, 0.3) * size
    cx, cy = rng.uniform(0.15, 0.85, size=2) * size
    theta = rng.uniform(0, 2 * np.pi)
    stretch = math.sqrt(math.exp(rng.uniform(-0.35, 0.35)))  # aspect in [0.70, 1.42]
    feather = rng.uniform(0.8, 2.0)  # pixels over which alpha falls from 1 to 0
    texture_seed = int(rng.integers(2**63))

    reach = _EXTENT * radius * stretch + feather
    # The centre lies in the image, so the window is never empty.
    x0, x1 = max(0, math.floor(cx - reach)), min(size, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(size, math.ceil(cy + reach) + 1)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - np.float32(cx)  # 1 x w
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - np.float32(cy)  # h x 1
    cos, sin = math.cos(theta), math.sin(theta)
    u = (cos * dx + sin * dy) / (radius * stretch)  # h x w, unit coordinates
    v = (cos * dy - sin * dx) * (stretch / radius)
    distance = _SHAPES[label - 1](u, v) * radius  # h x w, ~pixels (stretch has unit geometric mean)
    alpha = np.clip(0.5 - distance / feather, 0.0, 1.0).astype(np.float32)
    return _Shape(label, slice(y0, y1), slice(x0, x1), alpha, texture_seed)


def render_scene(
    index: int, seed: int = 0, size: int = 128, max_objects: int = 4, bands: int = 3, bit_depth: int = 8
) -> Scene:
    """Renders scene ``index`` of the data set ``seed``.

    Args:
        index: scene number, >= 0.
        seed: data set seed, >= 0; scenes are a pure function of all the arguments.
        size: side of the square image in pixels, >= 32.
        max_objects: each scene has between 1 and this many visible objects.
        bands: 3 (RGB), or 4: RGB and a synthetic near-infrared band, each object's the
            reflectance of its class's material (:data:`NEAR_INFRARED`) modulated by its
            texture, the background's a dim copy of its luminance. The RGB bands and the
            labels are those of ``bands=3``.
        bit_depth: 8 (uint8), or 16: uint16, the same picture scaled by 257 and rounded
            only there, so it keeps the fractions of the rendering that 8 bits round away.

    Returns:
        The :class:`Scene` (``size x size`` image and masks, ``M`` boxes and labels).

    Raises:
        ValueError: on a bad argument.
    """
    check_arguments("scenes", size, max_objects, seed)
    if index < 0:
        raise InputError(f"scenes: index must be >= 0, got {index}")
    if bands not in (3, 4) or bit_depth not in (8, 16):
        raise InputError(f"scenes: bands must be 3 or 4 and bit_depth 8 or 16, got {bands} and {bit_depth}")
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)  # size x size x 3 float32
    nir = 0.35 * image.mean(axis=2) + 12.0 if bands == 4 else None  # size x size, no random draw: RGB unchanged
    objects = draw_visible(rng, max_objects, size, lambda earlier: _place(rng, size), "scenes", f"scene {index}")
    for obj in objects:  # bottom to top
        texture_rng = np.random.default_rng(obj.texture_seed)
        h, w = obj.alpha.shape
        texture = _tint(texture_rng, _photo_crop(texture_rng, w, h, math.exp(texture_rng.uniform(-0.5, 0.7))))
        window = image[obj.rows, obj.cols]  # h x w x 3, a view
        window += obj.alpha[:, :, None] * (texture - window)
        if nir is not None:
            material = 255.0 * NEAR_INFRARED[obj.label] * (0.75 + 0.25 * np.clip(texture.mean(axis=2), 0, 255) / 255)
            nir_window = nir[obj.rows, obj.cols]
            nir_window += obj.alpha * (material - nir_window)
    pixels = image if nir is None else np.concatenate([image, nir[:, :, None]], axis=2)  # size x size x bands
    if bit_depth == 8:
        return labelled_scene(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), objects)
    return labelled_scene(np.clip(np.rint(pixels * 257.0), 0, 65535).astype(np.uint16), objects)


class ScenesDataset:
    """``length`` scenes of :func:`render_scene`, as a plain Python sequence.

    Args:
        length: number of scenes, >= 0.
        seed: data set seed, >= 0.
        size: image side in pixels, >= 32.
        max_objects: most objects per scene, >= 1.

    Raises:
        ValueError: on a bad argument.
    """

    def __init__(self, length: int = 2000, seed: int = 0, size: int = 128, max_objects: int = 4) -> None:
        check_arguments("scenes", size, max_objects, seed)
        if length < 0:
            raise InputError(f"scenes: length must be >= 0, got {length}")
        self.length, self.seed, self.size, self.max_objects = length, seed, size, max_objects

    def __len__(self) -> int:
        return self.length

    def _resolve(self, index: int) -> int:
        index = operator.index(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"scenes: index out of range for {self.length} scenes")
        return index

    def __getitem__(self, index: int) -> Scene:
        """Scene ``index`` (negative counts from the end), with its labels."""
        return render_scene(self._resolve(index), self.seed, self.size, self.max_objects)

    def image(self, index: int) -> Image.Image:
        """The RGB image of scene ``index`` alone, ``size x size``."""
        return Image.fromarray(self[index].image)

    def __repr__(self) -> str:
        return (
            f"ScenesDataset(length={self.length}, seed={self.seed}, size={self.size}, max_objects={self.max_objects})"
        )
