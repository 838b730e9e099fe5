"""The ``gpu`` data backend: workers read files and draw the views; the GPU decodes and augments whole batches.

    densecl pretrain --data-backend gpu --workers 8 ...

With the ``cpu`` backend each data worker decodes and augments its images
(PIL, torchvision); a fast GPU can outrun many cores doing that. Here a worker
only reads a JPEG's bytes and draws both views' MoCo-v2 parameters (crop box,
flip, colour jitter factors and order, grayscale, blur sigma) from the item's
seed, with the distribution of the CPU views; the main process decodes the
batch's JPEGs on the device (``torchvision.io.decode_jpeg``, nvJPEG on CUDA)
and applies each sample's augmentation there, batched
(:mod:`densecl.data.colour`). A file that is not a plain JPEG (PNG, CMYK,
the embedded scenes) is decoded by its worker instead and counted; a JPEG the
device cannot decode is made by the CPU path. Nothing here names a device: the
functions take it from their inputs and run on CPU tensors in the tests.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from densecl.data.colour import ColourParams, apply_colour, blur_kernel_size, sample_colour
from densecl.data.sources import TwoViewDataset, first_that_reads
from densecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, GeometricTwoViews
from densecl.inputs.sources import ImageFiles, SceneImages


class EncodedPair(NamedTuple):
    """One image as a worker hands it over, and both views' parameters (query first)."""

    data: torch.Tensor  # uint8: the JPEG file (L bytes), or the image decoded on the CPU (3 x H x W)
    encoded: bool  # data is a JPEG file
    boxes: torch.Tensor  # 2 x 4 long: (top, left, height, width) in the image's pixels
    flips: torch.Tensor  # 2 bool
    colour: ColourParams  # 2 rows
    match: torch.Tensor  # S long, or empty (as TwoViewDataset)
    skipped: int  # unreadable images replaced by this one
    item: torch.Tensor  # 2 long: the (index, seed) asked for, to remake it on the CPU


class EncodedBatch(NamedTuple):
    """``N`` :class:`EncodedPair` s, their parameters stacked (``N x 2 x ...``)."""

    data: list[torch.Tensor]
    encoded: torch.Tensor  # N bool
    boxes: torch.Tensor  # N x 2 x 4
    flips: torch.Tensor  # N x 2
    colour: ColourParams  # N x 2 x ...
    match: torch.Tensor  # N x S
    skipped: torch.Tensor  # N
    items: torch.Tensor  # N x 2


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a complete JPEG in RGB or grayscale (what nvJPEG decodes), else ``None``.

    Complete: it ends with the end-of-image marker (a truncated file goes to
    the CPU decoder, which skips it as the ``cpu`` backend does).
    """
    if not (data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size if image.format == "JPEG" and image.mode in ("RGB", "L") else None
    except Exception:  # PIL raises many types for bad headers
        return None


class EncodedTwoViewDataset(torch.utils.data.Dataset):
    """The worker side: ``(index, seed)`` -> :class:`EncodedPair`, reproducible from the seed.

    The views' geometry comes from ``two_views`` exactly as in
    :class:`~densecl.data.sources.TwoViewDataset` (so does the match); the
    colour parameters from :func:`~densecl.data.colour.sample_colour`. An
    unreadable image is replaced by the next readable one and counted.
    """

    def __init__(self, source: ImageFiles | SceneImages, two_views: GeometricTwoViews) -> None:
        self.source, self.two_views = source, two_views

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> EncodedPair:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            skipped, (pixels, encoded, geometry, colour) = first_that_reads(self.source, index, self._read)
        return EncodedPair(
            data=pixels,
            encoded=encoded,
            boxes=torch.tensor([[g.top, g.left, g.height, g.width] for g in geometry]),
            flips=torch.tensor([g.flip for g in geometry]),
            colour=colour,
            match=self.two_views.match(geometry),
            skipped=skipped,
            item=torch.tensor([index, seed]),
        )

    def _read(self, i: int):
        """The file's bytes (a plain JPEG) or pixels (anything else, decoded here at full size), both views' draws;
        None: unreadable.
        """
        data = self.source.read(i)
        size = plain_jpeg_size(data) if data is not None else None
        if size is not None:
            pixels, encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8), True
        else:
            image = self.source.load(i)
            if image is None:
                return None
            size = image.size
            pixels, encoded = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), False
        geometry = self.two_views.geometry(*size)
        colour = sample_colour(2, torch.Generator().manual_seed(int(torch.randint(2**62, (1,)))))
        return pixels, encoded, geometry, colour


def collate(pairs: list[EncodedPair]) -> EncodedBatch:
    """The DataLoader's ``collate_fn``: images stay a list (their sizes differ), the rest is stacked."""
    return EncodedBatch(
        data=[p.data for p in pairs],
        encoded=torch.tensor([p.encoded for p in pairs]),
        boxes=torch.stack([p.boxes for p in pairs]),
        flips=torch.stack([p.flips for p in pairs]),
        colour=ColourParams(*(torch.stack(field) for field in zip(*(p.colour for p in pairs)))),
        match=torch.stack([p.match for p in pairs]),
        skipped=torch.tensor([p.skipped for p in pairs]),
        items=torch.stack([p.item for p in pairs]),
    )


def decode(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor | None]:
    """Every image of the batch as ``3 x H x W`` uint8 on ``device``; ``None`` where a JPEG would not decode.

    The JPEGs go to ``decode_jpeg`` in one call (nvJPEG's batched decoder on
    CUDA); if that fails, one at a time, to find the bad ones.
    """
    images: list[torch.Tensor | None] = [None] * len(batch.data)
    jpegs = [i for i, encoded in enumerate(batch.encoded.tolist()) if encoded]
    for i, encoded in enumerate(batch.encoded.tolist()):
        if not encoded:
            images[i] = batch.data[i].to(device, non_blocking=True)
    if jpegs:
        try:
            decoded = decode_jpeg([batch.data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(batch.data[i], device) for i in jpegs]
        for i, image in zip(jpegs, decoded):
            images[i] = image
    return images


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def crop_resize(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box resized to ``size x size``, bilinear with antialiasing (torchvision's ``resized_crop``).

    Args:
        images: ``M`` uint8 ``3 x H x W`` images on one device.
        boxes: ``M x 4`` (top, left, height, width), on the CPU.

    Returns:
        ``M x 3 x size x size`` float in ``[0, 1]``.
    """
    out = torch.empty(len(images), 3, size, size, device=images[0].device)
    for m, (image, (top, left, h, w)) in enumerate(zip(images, boxes.tolist())):
        crop = image[None, :, top : top + h, left : left + w].float()
        out[m] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0, 255).div_(255)


def augment(
    images: list[torch.Tensor],
    batch: EncodedBatch,
    crop_size: int,
    statistics: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD),
) -> torch.Tensor:
    """Both views of every image: crop, colour, flip, normalisation with ``statistics`` (mean, std per channel).

    Returns ``2 x N x 3 x crop x crop``: the query views, then the key views.
    """
    n = len(images)

    def view_major(t):  # N x 2 x ... -> 2N x ..., queries first
        return t.transpose(0, 1).flatten(0, 1)

    views = crop_resize(images + images, view_major(batch.boxes), crop_size)
    views = apply_colour(views, ColourParams(*map(view_major, batch.colour)), blur_kernel_size(crop_size))
    flips = view_major(batch.flips).view(2 * n, 1, 1, 1).to(views.device, non_blocking=True)
    views = torch.where(flips, views.flip(-1), views)
    mean, std = (torch.tensor(values, device=views.device).view(1, 3, 1, 1) for values in statistics)
    return ((views - mean) / std).view(2, n, 3, crop_size, crop_size)


class DeviceBatches:
    """Iterates a DataLoader of :class:`EncodedBatch` es as ``(im_q, im_k, match, skipped)`` on ``device``.

    The same batches the ``cpu`` backend's loader yields, already on the device.
    Images the workers decoded (not plain JPEGs) are counted in
    :attr:`cpu_decoded`, the first one reported on stderr; a JPEG the device
    cannot decode is remade by ``fallback`` (the CPU path, which skips it if
    unreadable) and counted in :attr:`remade`.
    """

    def __init__(
        self, loader: torch.utils.data.DataLoader, device: torch.device, crop_size: int, fallback: TwoViewDataset
    ) -> None:
        self.loader, self.device, self.crop_size, self.fallback = loader, device, crop_size, fallback
        # the run's mean and std (given, measured or ImageNet's), as the CPU path normalises with
        self.statistics = fallback.two_views.inputs.statistics(photo=True)
        self.cpu_decoded = self.remade = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.render(batch)

    def render(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        not_jpeg = int((~batch.encoded).sum())
        if not_jpeg and not self.cpu_decoded:
            index = int(batch.items[int((~batch.encoded).nonzero()[0])][0])
            name = (
                self.fallback.source.paths[index]
                if hasattr(self.fallback.source, "paths")
                else self.fallback.source.origin
            )
            print(
                f"densecl: data backend gpu: {name} is not a plain JPEG (RGB or grayscale): images like it are "
                "decoded on the CPU by the data workers (slower), counted at the end of the run",
                file=sys.stderr,
            )
        self.cpu_decoded += not_jpeg
        images = decode(batch, self.device)
        failed = [i for i, image in enumerate(images) if image is None]
        if failed:  # stand-ins so the batch stays rectangular; their views are replaced below
            stand_in = next((image for image in images if image is not None), None)
            images = [image if image is not None else stand_in for image in images]
            boxes = batch.boxes.clone()
            for i in failed:
                boxes[i] = torch.tensor([0, 0, 1, 1])
            batch = batch._replace(boxes=boxes)
        views = augment(images, batch, self.crop_size, self.statistics) if len(failed) < len(images) else None
        match, skipped = batch.match, batch.skipped.clone()
        if failed:
            remade = [self.fallback[tuple(batch.items[i].tolist())] for i in failed]
            if views is None:
                views = torch.empty(2, len(images), 3, self.crop_size, self.crop_size, device=self.device)
            match = match.clone()
            for i, (im_q, im_k, m, s) in zip(failed, remade):
                views[0, i], views[1, i] = im_q.to(self.device), im_k.to(self.device)
                match[i], skipped[i] = m, s
            self.remade += len(failed)
        return views[0], views[1], match, skipped
