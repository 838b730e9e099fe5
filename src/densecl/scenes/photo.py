"""Cut-and-paste scenes from real photos: RGBA cut-outs pasted on background photos.

Inputs (:func:`load_assets`)::

    OBJECTS/<category>/**/<cut-out>   images with an alpha channel (PNG, ...), one folder per class
    BACKGROUNDS/**/<photo>            photos; or BACKGROUNDS/{train,val,test}/ to fix their split

Splits. Every cut-out file and every background photo belongs to exactly one
of :data:`PHOTO_SPLITS`, so no object or background seen in training appears in val
or test. Each category's cut-outs are split on their own (stratified):
:data:`HELD_OUT_FRACTION` of them for val, as many for test (at least one
each), the rest for train; a flat backgrounds folder is split the same way.
The order that is cut is the SHA-1 of each file's path relative to its folder,
so the split depends on the file names only, not on the seed nor on the order
the file system lists them: scenes of several seeds can be pooled without leaks.

Composition (:class:`PhotoSceneComposer`; image ``index`` of split ``s`` draws
everything from ``np.random.default_rng([seed, s, index])``):

- background: a square crop of 50-100 % of the shorter side of one of the
  split's photos, flipped at random, resized to ``size``;
- objects: 1..``max_objects``, each of a uniformly drawn class and a uniformly
  drawn cut-out of that class in the split, its longer side 25-75 % of the
  image (log-uniform), flipped at random, its centre in the central 80 % of the
  image; each object after the first lands on an earlier one with probability
  :data:`OCCLUDE_PROBABILITY`, so occlusion is common. Later objects are on top;
- edges: the cut-out's own anti-aliased alpha, further blurred by a Gaussian of
  sigma 0.3-1.2 px (feathering, done on premultiplied colour so no dark fringe);
- harmonisation: each object's brightness is scaled by 0.85-1.15 and its mean
  colour moved 0-35 % of the way to the mean of the background under it; the
  finished image is blurred (sigma 0-0.8 px) and gets Gaussian noise (sigma 0-3
  grey levels), so objects and background share blur and noise and a paste edge
  is no sharper than the photo around it.

Labels follow :mod:`densecl.scenes.compose`, as for the procedural scenes: a
pixel belongs to the top-most object whose alpha there is >= 0.5; objects with
fewer than :data:`~densecl.scenes.compose.MIN_VISIBLE_PIXELS` such pixels are
not pasted at all; boxes are the bounding boxes of each instance's visible
pixels. The result is a :class:`~densecl.scenes.compose.Scene`, so the writers
of :mod:`densecl.formats` serve both generators.

Speed, a shared 2-core CPU (load ~4), 160 px, ``max_objects=4``, the assets of
``scripts/fetch-assets.sh`` (449 stamps, 27 photos): :func:`load_assets` 1 s;
composing 2000 images 20 s of CPU (10 ms each, first decoding of every photo and
cut-out included). ``densecl data scenes --n 2000`` with all three layouts and the
unlabeled JPEGs took 102 s wall, 69 s CPU: writing costs twice the composing, and
the CLI's start-up (torch) 9 s. Details in ``docs/photo-scenes.md``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from densecl.errors import InputError
from densecl.formats.labels import BACKGROUND_NAMES
from densecl.inputs.files import PHOTO_EXTENSIONS
from densecl.inputs.files.photo import open_rgb
from densecl.scenes.compose import Placed, Scene, check_arguments, draw_visible, labelled_scene

PHOTO_SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Every cut-out and background belongs to exactly one of these; the photo scenes are written in these splits."""

HELD_OUT_FRACTION = 0.2
"""Share of each category's cut-outs (and of a flat backgrounds folder, and of ``n`` images) in val, and in test."""

MIN_ALPHA_FRACTION = 0.01
"""A usable cut-out has at least this share of its pixels transparent (alpha < 128) and as much opaque."""

OCCLUDE_PROBABILITY = 0.35
"""Chance that an object after the first is centred on an earlier one."""


@dataclass(frozen=True)
class Cutout:
    """One cut-out file: ``name`` is its path relative to the objects folder (provenance)."""

    path: Path
    name: str
    label: int  # class id 1..K


@dataclass(frozen=True)
class Background:
    """One background photo: ``name`` is its path relative to the backgrounds folder."""

    path: Path
    name: str


@dataclass(frozen=True)
class PhotoAssets:
    """Cut-outs and backgrounds, each assigned to one split.

    Attributes:
        classes: ``K + 1`` names, ``"background"`` first; the category folders, sorted.
        cutouts: split -> its cut-outs, all categories.
        backgrounds: split -> its photos.
        skipped: one message per file left out (unreadable, no alpha channel).
        objects_root, backgrounds_root: the folders read.
    """

    classes: tuple[str, ...]
    cutouts: dict[str, tuple[Cutout, ...]]
    backgrounds: dict[str, tuple[Background, ...]]
    skipped: tuple[str, ...]
    objects_root: Path
    backgrounds_root: Path


@dataclass(frozen=True)
class ComposedScene:
    """A :class:`~densecl.scenes.compose.Scene` and where its pixels came from.

    Attributes:
        scene: the image and its labels (``M`` instances).
        background: name of the background photo.
        cutouts: ``M`` names of the cut-out of each instance, in instance order (1..M).
    """

    scene: Scene
    background: str
    cutouts: tuple[str, ...]


# ---------------------------------------------------------------- assets


def read_cutout(path: Path) -> Image.Image:
    """A cut-out as an RGBA image, checked to have a non-trivial alpha channel.

    Raises:
        InputError: the file cannot be read, has no alpha channel, or its alpha
            is (almost) all opaque or all transparent (see :data:`MIN_ALPHA_FRACTION`).
    """
    # Not densecl.inputs.files.photo.open_rgb: a cut-out keeps its alpha (open_rgb flattens it onto white).
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            rgba = image.convert("RGBA")
    except (OSError, ValueError) as e:
        raise InputError(f"cut-out {path} cannot be read ({type(e).__name__}: {e})") from None
    if not has_alpha:
        raise InputError(f"cut-out {path} has no alpha channel (mode {image.mode})")
    alpha = np.asarray(rgba.getchannel("A"))
    transparent = float((alpha < 128).mean())
    if transparent < MIN_ALPHA_FRACTION:
        raise InputError(f"cut-out {path} is opaque almost everywhere; its alpha does not cut an object out")
    if 1 - transparent < MIN_ALPHA_FRACTION:
        raise InputError(f"cut-out {path} is transparent almost everywhere")
    return rgba


def split_counts(n: int) -> dict[str, int]:
    """``n`` items -> how many per split: :data:`HELD_OUT_FRACTION` each to val and test (>= 1), the rest train."""
    if n < len(PHOTO_SPLITS):
        raise ValueError(f"{n} items cannot fill {len(PHOTO_SPLITS)} splits")
    held = max(1, round(HELD_OUT_FRACTION * n))
    return {"train": n - 2 * held, "val": held, "test": held}


def _split_by_name(names: Sequence[str]) -> dict[str, list[int]]:
    """Indices of ``names`` per split, cutting the order of SHA-1(name) by :func:`split_counts`."""
    order = sorted(range(len(names)), key=lambda i: (hashlib.sha1(names[i].encode()).hexdigest(), names[i]))
    counts = split_counts(len(names))
    val, test = counts["val"], counts["test"]
    return {"val": order[:val], "test": order[val : val + test], "train": order[val + test :]}


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries left out), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in PHOTO_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_assets(objects: Path, backgrounds: Path, on_skip: Callable[[str], None] | None = None) -> PhotoAssets:
    """Finds, checks and splits the cut-outs and backgrounds (see the module docstring).

    Unusable cut-outs and unreadable backgrounds are left out, one message each in
    :attr:`PhotoAssets.skipped`, each also passed to ``on_skip`` at once (so a caller
    can warn before an error that the skipping causes).

    Raises:
        InputError: a folder is missing or empty, the objects folder has no category
            subfolder, a category has fewer than ``len(PHOTO_SPLITS)`` usable cut-outs, or
            there are too few backgrounds to give each split its own.
    """
    objects, backgrounds = Path(objects).expanduser(), Path(backgrounds).expanduser()
    skipped: list[str] = []

    def skip(message: str) -> None:
        skipped.append(message)
        if on_skip is not None:
            on_skip(message)

    classes, cutouts = _load_cutouts(objects, skip)
    photos = _load_backgrounds(backgrounds, skip)
    return PhotoAssets(classes, cutouts, photos, tuple(skipped), objects, backgrounds)


def _load_cutouts(root: Path, skip: Callable[[str], None]) -> tuple[tuple[str, ...], dict[str, tuple[Cutout, ...]]]:
    if not root.is_dir():
        raise InputError(
            f"objects folder {root} does not exist; pass --objects DIR with one subfolder of cut-outs per category"
        )
    categories = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not categories:
        raise InputError(
            f"objects folder {root} has no category subfolder; put the cut-outs in {root}/<category>/ (one folder "
            "per class)"
        )
    for name in (c for c in categories if c in BACKGROUND_NAMES):  # classes.txt's background line (formats.labels)
        raise InputError(f"{root}/{name}: {name!r} names the background, class 0 (no object); rename that category")
    cutouts: dict[str, list[Cutout]] = {s: [] for s in PHOTO_SPLITS}
    for label, category in enumerate(categories, start=1):
        usable: list[Cutout] = []
        files = _image_files(root / category)
        for path in files:
            try:
                read_cutout(path)
            except InputError as e:
                skip(str(e))
                continue
            usable.append(Cutout(path, path.relative_to(root).as_posix(), label))
        if len(usable) < len(PHOTO_SPLITS):
            left_out = (
                f" ({len(files) - len(usable)} skipped: no usable alpha channel)" if len(files) > len(usable) else ""
            )
            raise InputError(
                f"category {category!r} ({root / category}) has {len(usable)} usable cut-out(s){left_out}; it needs at "
                f"least {len(PHOTO_SPLITS)}, one per split ({', '.join(PHOTO_SPLITS)}): add RGBA cut-outs or remove "
                "the folder"
            )
        for split, indices in _split_by_name([c.name for c in usable]).items():
            cutouts[split] += [usable[i] for i in sorted(indices)]
    return ("background", *categories), {s: tuple(cutouts[s]) for s in PHOTO_SPLITS}


def _readable_backgrounds(root: Path, folder: Path, skip: Callable[[str], None]) -> list[Background]:
    found = []
    for path in _image_files(folder):
        try:
            # Not densecl.inputs.files.photo.open_rgb: the header only, and a bad file is skipped, not an
            # error; the composer decodes the photo (open_rgb) on first use.
            with Image.open(path):
                pass
        except (OSError, ValueError) as e:
            skip(f"background {path} cannot be read ({type(e).__name__}: {e})")
            continue
        found.append(Background(path, path.relative_to(root).as_posix()))
    return found


def _load_backgrounds(root: Path, skip: Callable[[str], None]) -> dict[str, tuple[Background, ...]]:
    if not root.is_dir():
        raise InputError(f"backgrounds folder {root} does not exist; pass --backgrounds DIR with photos")
    if any((root / split).is_dir() for split in PHOTO_SPLITS):  # the split is given
        photos = {split: _readable_backgrounds(root, root / split, skip) for split in PHOTO_SPLITS}
        empty = [split for split in PHOTO_SPLITS if not photos[split]]
        if empty:
            raise InputError(
                f"backgrounds folder {root} has split subfolders but no image in {', '.join(f'{s}/' for s in empty)}; "
                f"give each of {', '.join(f'{s}/' for s in PHOTO_SPLITS)} at least one photo, or use a flat folder"
            )
        return {split: tuple(photos[split]) for split in PHOTO_SPLITS}
    photos = _readable_backgrounds(root, root, skip)
    if not photos:
        raise InputError(f"backgrounds folder {root} has no readable image ({', '.join(PHOTO_EXTENSIONS)})")
    if len(photos) < len(PHOTO_SPLITS):
        raise InputError(
            f"backgrounds folder {root} has {len(photos)} image(s) but the {len(PHOTO_SPLITS)} splits "
            f"({', '.join(PHOTO_SPLITS)}) "
            f"need one each; add at least {len(PHOTO_SPLITS) - len(photos)} more"
        )
    return {
        split: tuple(photos[i] for i in sorted(indices))
        for split, indices in _split_by_name([p.name for p in photos]).items()
    }


# ---------------------------------------------------------------- composition


@dataclass(frozen=True)
class _Pasted(Placed):
    """A placed cut-out: its file and its colour over the window."""

    name: str
    premultiplied: np.ndarray  # h x w x 3 float32, colour * alpha, 0..255


class PhotoSceneComposer:
    """Composes scene ``index`` of a split from :class:`PhotoAssets`; a pure function of (assets, arguments).

    Photos and cut-outs are decoded once, on first use, and kept (downscaled to
    what ``size`` needs).

    Args:
        assets: from :func:`load_assets`.
        size: side of the square images in pixels, >= 32.
        max_objects: each image has 1..this many visible objects.
        seed: >= 0.

    Raises:
        InputError: on a bad argument.
    """

    def __init__(self, assets: PhotoAssets, size: int = 160, max_objects: int = 4, seed: int = 0) -> None:
        check_arguments("photo scenes", size, max_objects, seed)
        self.assets, self.size, self.max_objects, self.seed = assets, size, max_objects, seed
        num_classes = len(assets.classes) - 1
        self._by_class = {  # split -> class id - 1 -> cut-outs
            split: [[c for c in assets.cutouts[split] if c.label == k] for k in range(1, num_classes + 1)]
            for split in PHOTO_SPLITS
        }
        self._photos: dict[Path, Image.Image] = {}
        self._cutouts: dict[Path, Image.Image] = {}

    def compose(self, split: str, index: int) -> ComposedScene:
        """Image ``index`` (>= 0) of ``split`` with its labels and provenance."""
        if split not in PHOTO_SPLITS:
            raise InputError(f"photo scenes: unknown split {split!r}; choose one of {', '.join(PHOTO_SPLITS)}")
        if index < 0:
            raise InputError(f"photo scenes: index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, PHOTO_SPLITS.index(split), index])
        backgrounds = self.assets.backgrounds[split]
        background = backgrounds[rng.integers(len(backgrounds))]
        image = self._background_crop(rng, background.path)  # S x S x 3 float32
        objects = draw_visible(
            rng,
            self.max_objects,
            self.size,
            lambda earlier: self._place(rng, split, earlier),
            "photo scenes",
            f"{split} image {index}",
        )
        for obj in objects:  # bottom to top
            window = image[obj.rows, obj.cols]  # h x w x 3, a view
            a = obj.alpha[:, :, None]  # h x w x 1
            object_mean = obj.premultiplied.sum(axis=(0, 1)) / max(float(obj.alpha.sum()), 1e-6)  # 3
            gain, pull = rng.uniform(0.85, 1.15), rng.uniform(0.0, 0.35)
            shift = pull * (window.mean(axis=(0, 1)) - gain * object_mean)  # 3, towards the background's mean
            window *= 1 - a
            window += gain * obj.premultiplied + a * shift

        # Shared blur and noise over the finished image: paste edges get the photo's own softness.
        blurred = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
        blurred = blurred.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))
        noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0.0, rng.uniform(0.0, 3.0), image.shape).astype(
            np.float32
        )
        scene = labelled_scene(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), objects)
        return ComposedScene(scene, background.name, tuple(obj.name for obj in objects))

    # ------------------------------------------------------------ pieces

    def _photo(self, path: Path) -> Image.Image:
        """The background photo as RGB, shorter side <= 2 x size (decoded once)."""
        if path not in self._photos:
            limit = 2 * self.size
            photo = open_rgb(path, what="background", draft_side=limit)
            scale = limit / min(photo.size)
            if scale < 1:
                photo = photo.resize(
                    (max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.LANCZOS
                )
            self._photos[path] = photo
        return self._photos[path]

    def _cutout(self, path: Path) -> Image.Image:
        """The cut-out cropped to its alpha's bounding box, premultiplied (``RGBa``), longer side <= size."""
        if path not in self._cutouts:
            rgba = read_cutout(path)
            rgba = rgba.crop(rgba.getchannel("A").getbbox())
            cutout = rgba.convert("RGBa")  # resampling premultiplied colour leaves no dark fringe
            scale = self.size / max(cutout.size)
            if scale < 1:
                cutout = cutout.resize(
                    (max(1, round(cutout.width * scale)), max(1, round(cutout.height * scale))),
                    Image.Resampling.LANCZOS,
                )
            self._cutouts[path] = cutout
        return self._cutouts[path]

    def _background_crop(self, rng: np.random.Generator, path: Path) -> np.ndarray:
        """A random square crop of the photo, ``size x size x 3`` float32."""
        photo = self._photo(path)
        side = rng.uniform(0.5, 1.0) * min(photo.size)
        x0, y0 = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
        crop = photo.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
        image = np.array(crop, dtype=np.float32)
        return np.ascontiguousarray(image[:, ::-1]) if rng.random() < 0.5 else image

    def _place(self, rng: np.random.Generator, split: str, earlier: list[_Pasted]) -> _Pasted:
        """Draws class, cut-out, scale, flip, feather and position of one object."""
        size = self.size
        label = int(rng.integers(1, len(self.assets.classes)))
        choices = self._by_class[split][label - 1]
        cutout = choices[rng.integers(len(choices))]
        source = self._cutout(cutout.path)

        longer = size * math.exp(rng.uniform(math.log(0.25), math.log(0.75)))
        scale = longer / max(source.size)
        w, h = max(1, round(source.width * scale)), max(1, round(source.height * scale))
        sigma = rng.uniform(0.3, 1.2)  # feathering, pixels
        pad = math.ceil(3 * sigma) + 1  # room for the blurred edge
        obj = source.resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        obj = ImageOps.expand(obj, pad, fill=(0, 0, 0, 0)).filter(ImageFilter.GaussianBlur(sigma))
        rgba = np.asarray(obj, dtype=np.float32)  # (h + 2 pad) x (w + 2 pad) x 4, colour premultiplied

        if earlier and rng.random() < OCCLUDE_PROBABILITY:  # on top of an earlier object
            under = earlier[rng.integers(len(earlier))]
            cx = (under.cols.start + under.cols.stop) / 2 + rng.uniform(-0.25, 0.25) * (
                under.cols.stop - under.cols.start
            )
            cy = (under.rows.start + under.rows.stop) / 2 + rng.uniform(-0.25, 0.25) * (
                under.rows.stop - under.rows.start
            )
        else:
            cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        x0, y0 = round(cx - rgba.shape[1] / 2), round(cy - rgba.shape[0] / 2)  # may lie outside the image
        cols = slice(max(0, x0), min(size, x0 + rgba.shape[1]))
        rows = slice(max(0, y0), min(size, y0 + rgba.shape[0]))
        # The centre lies in the image, so the window is never empty.
        rgba = rgba[rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0]
        return _Pasted(
            label,
            rows,
            cols,
            np.ascontiguousarray(rgba[:, :, 3] / 255.0),
            cutout.name,
            np.ascontiguousarray(rgba[:, :, :3]),
        )
