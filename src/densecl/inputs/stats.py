"""What the images of a data set are, and their per-channel mean and std, from a sample of them.

``densecl pretrain`` reads the header of every image when it starts, with a
progress bar on a large set (headers only: seconds for tens of thousands of
files): which kind each is and how many bands it has. Any two that differ stop
the run with one line naming both, before anything is built (:func:`inspect`).
Where the mean and std are to be measured (any images but 8-bit photos,
unless given) an evenly spread sample of them (:data:`SAMPLE`, 256, or all
of a smaller set) is read (:func:`measure`): per channel, the mean and the standard
deviation of every valid pixel of every sampled image together (no-data
pixels left out; a large image contributes a regular grid of at most
:data:`PIXELS_PER_IMAGE` pixels). ``densecl data stats DIR`` prints the same
numbers.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import torch
from tqdm import tqdm

from densecl.errors import InputError
from densecl.inputs.files import CannotDecode, probe
from densecl.inputs.sources import ImageFiles, Reading, SceneImages
from densecl.inputs.spec import InputSpec

SAMPLE = 256
PIXELS_PER_IMAGE = 65536
PROGRESS_FROM = 2000  # files: a smaller set is checked too fast for a bar


def sample_indices(n: int, k: int = SAMPLE) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)``, the first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def inspect(source: ImageFiles | SceneImages, values: bool = False) -> Reading:
    """The kind and the bands of the images, from every image's header, checked to agree.

    Returns:
        A :class:`~densecl.data.sources.Reading` naming the first readable image as the reference.

    Raises:
        ImagesDisagree: two images differ in kind or bands (one line naming one of each).
        CannotDecode: an image needs a missing optional package or decoder.
        InputError: no image is readable.
    """
    if isinstance(source, SceneImages):
        return Reading(values=values, photo=not values, file_bands=3, reference=source.origin)
    reading = None
    bar = tqdm(
        source.paths, desc="densecl: checking image headers", unit="file", file=sys.stderr, mininterval=1.0,
        disable=len(source) < PROGRESS_FROM, leave=False,
    )  # fmt: skip
    for path in bar:
        try:
            info = probe(path, values=values)
        except CannotDecode:
            raise
        except InputError:
            continue  # unreadable: skipped here as in training
        if reading is None:
            reading = Reading(values=values, photo=info.photo, file_bands=info.bands, reference=str(path))
        else:
            reading.check(info.photo, info.bands, path, source.origin)
    if reading is None:
        raise InputError(f"no readable image among the {len(source)} files of {source.origin}")
    return reading


class Statistics(NamedTuple):
    """Per-channel statistics of a sample of images (in the units the images arrive in)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    images: int  # images read
    valid_fraction: float  # of the pixels looked at, those with data


def measure(source: ImageFiles | SceneImages, spec: InputSpec, k: int = SAMPLE) -> Statistics:
    """Mean and std per channel of a sample of the images, as ``spec`` reads them (bands chosen, photos in [0, 1]).

    ``source`` must already read as ``spec`` says (:meth:`ImageFiles.expect`).

    Raises:
        InputError: no sampled image is readable, or a channel has no valid pixel.
    """
    total = torch.zeros(spec.channels, dtype=torch.float64)
    squares = torch.zeros(spec.channels, dtype=torch.float64)
    count = torch.zeros(spec.channels, dtype=torch.float64)
    seen, images = 0, 0
    for index in sample_indices(len(source), k):
        image = source.load(index)
        if image is None:
            continue
        name = source.paths[index] if isinstance(source, ImageFiles) else f"{source.origin}[{index}]"
        x = spec.tensor(image, name).double()  # C x H x W
        step = max(1, math.ceil(math.sqrt(x.shape[1] * x.shape[2] / PIXELS_PER_IMAGE)))
        x = x[:, ::step, ::step].flatten(1)  # C x P
        valid = ~torch.isnan(x)
        x = torch.where(valid, x, 0.0)
        total += x.sum(dim=1)
        squares += (x * x).sum(dim=1)
        count += valid.sum(dim=1)
        seen += x.shape[1]
        images += 1
    if images == 0:
        raise InputError(f"no readable image among {min(len(source), k)} sampled of {source.origin}")
    if bool((count == 0).any()):
        empty = ", ".join(str(c + 1) for c in (count == 0).nonzero().flatten().tolist())
        raise InputError(
            f"channel(s) {empty} of {source.origin} have no valid pixel in {images} sampled images (all no data); "
            "check --nodata and --bands"
        )
    mean = total / count
    var = (squares / count - mean * mean).clamp(min=0)
    std = torch.where(var > 0, var.sqrt(), torch.ones_like(var))  # a constant channel: 1, it normalises to 0
    return Statistics(
        tuple(float(m) for m in mean), tuple(float(s) for s in std), images, float(count.sum() / (seen * spec.channels))
    )
