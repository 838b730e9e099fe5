"""A backbone's features of your images in a ``.npy`` file, for your own analysis.

    densecl embed --weights ckpt.pt --data photos/ --out feats.npy                       # N x C: pooled C5
    densecl embed --weights ckpt.pt --data photos/ --out maps.npy --stage c4 --dense     # N x C x h x w

Rows follow the image order of ``--data`` (a folder tree sorted by path, a
list file's order, a COCO file's images); unreadable images are skipped with
one warning each. ``OUT.json`` beside the array names the image of every row,
the weights (path, sha256, layout), the stage and the input size. Features are
computed in batches and written to a memory-mapped file as they come, so the
array may be larger than memory; the file appears under its name only when it
is complete (written to a temporary name, then renamed).

Pooled features are the stage's global average, as the backbone gives it
(``--l2-normalize`` for unit rows); dense maps are the stage's feature map of
the centre crop, ``C x S/2^k x S/2^k`` at C2..C5 (k = 2..5). Images go in at
``--image-size`` (shorter side resized, centre crop), normalised as
every evaluation reads them; ``--image-size 0`` keeps each image's own size
(pooled features only: the maps would differ in shape). The images are read as
the weights take them (a checkpoint of 16-bit or multi-band data stores its
channels, bands, mean and std; see docs/your-images.md).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from densecl.errors import InputError
from densecl.evaluation.datasets import as_list, to_network
from densecl.evaluation.features import STAGE_NAMES, frozen
from densecl.inputs import InputSpec, input_of
from densecl.inputs.files import CannotDecode
from densecl.inputs.sources import ImageFiles, SceneImages
from densecl.models.backbones import ResNetBackbone


@dataclass(frozen=True)
class EmbedSettings:
    stage: int = 3  # 0..3: C2..C5
    dense: bool = False  # the feature map instead of its average
    image_size: int = 224  # shorter side and centre crop; 0: each image as it is (pooled only)
    l2_normalize: bool = False  # pooled rows scaled to unit length
    dtype: str = "float32"  # of the array: float32 or float16
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"


class _Images(torch.utils.data.Dataset):
    """``(index, normalised C x H x W tensor or None)`` for every image of a source, read as ``inputs`` takes it."""

    def __init__(self, source: ImageFiles | SceneImages, size: int, inputs: InputSpec) -> None:
        self.source, self.inputs = source, inputs
        self.resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)]) if size else v2.Identity()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        paths = getattr(self.source, "paths", None)
        where = paths[index] if paths is not None else f"{self.source.origin}[{index}]"
        try:
            image = self.inputs.read(paths[index], fix="skipping it") if paths is not None else self.source.load(index)
            return index, to_network(self.resize, image, self.inputs, where)
        except CannotDecode:  # a missing package or decoder: every file of its kind would fail, so it stops the run
            raise
        except InputError as e:  # one warning, the image left out; a wrong kind of image is the same
            print(f"densecl: warning: {e}", file=sys.stderr)
            return index, None


def names(source: ImageFiles | SceneImages) -> list[str]:
    """Each image's name: its path, or ``scenes(...)[i]`` for the embedded scenes."""
    paths = getattr(source, "paths", None)
    return [str(p) for p in paths] if paths is not None else [f"{source.origin}[{i}]" for i in range(len(source))]


def row_shape(backbone: ResNetBackbone, settings: EmbedSettings) -> tuple[int, ...]:
    """The shape of one row: ``(C,)`` pooled, ``(C, h, w)`` dense."""
    channels = backbone.stage_channels[settings.stage]
    if not settings.dense:
        return (channels,)
    if not settings.image_size:
        raise InputError("--dense maps need one input size for all images: give --image-size (e.g. 224), not 0")
    h, w = backbone.feature_sizes(settings.image_size, settings.image_size)[settings.stage]
    return channels, h, w


def embed(
    backbone: ResNetBackbone, source: ImageFiles | SceneImages, out: Path, settings: EmbedSettings, weights: dict
) -> dict[str, Any]:
    """Writes the features of every readable image of ``source`` to ``out`` (and ``OUT.json``); returns the JSON.

    Raises:
        InputError: no image could be read, or dense maps without a fixed size.
    """
    shape = row_shape(backbone, settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=settings.dtype, shape=(len(source), *shape))
    loader = torch.utils.data.DataLoader(
        _Images(source, settings.image_size, input_of(backbone)),
        batch_size=settings.batch_size,
        num_workers=settings.workers,
        collate_fn=as_list,
    )
    kept: list[int] = []
    try:
        backbone.to(settings.device)
        with frozen(backbone):
            for batch in loader:
                readable = [(i, x) for i, x in batch if x is not None]
                for group in _same_size(readable):
                    x = torch.stack([t for _, t in group]).to(settings.device)
                    rows = _features(backbone, x, settings)  # B x row_shape
                    array[len(kept) : len(kept) + len(group)] = rows.numpy().astype(settings.dtype, copy=False)
                    kept.extend(i for i, _ in group)
        if not kept:
            raise InputError(f"no image of {source.origin} could be read")
        array.flush()
        del array
        if len(kept) < len(source):  # unreadable images leave no row: the array shrinks to the rows written
            _truncate(tmp, len(kept))
        all_names = names(source)
        record = {
            "rows": len(kept),
            "shape": [len(kept), *shape],
            "dtype": settings.dtype,
            "stage": STAGE_NAMES[settings.stage],
            "dense": settings.dense,
            "image_size": settings.image_size,
            "l2_normalize": settings.l2_normalize,
            "weights": weights,
            "data": source.origin,
            "images": [all_names[i] for i in kept],
            "skipped": [all_names[i] for i in sorted(set(range(len(source))) - set(kept))],
        }
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = sidecar_path(out)
    tmp_json = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp_json.write_text(json.dumps(record, indent=1))
    os.replace(tmp_json, sidecar)
    return record


def sidecar_path(out: Path) -> Path:
    """``feats.npy`` -> ``feats.json``: the images of the rows and how they were computed."""
    return Path(out).with_suffix(".json")


@torch.no_grad()
def _features(backbone: ResNetBackbone, x: torch.Tensor, settings: EmbedSettings) -> torch.Tensor:
    fmap = backbone.forward_stages(x)[settings.stage].float()  # B x C x h x w
    if settings.dense:
        return fmap.cpu()
    pooled = fmap.mean(dim=(2, 3))
    return (torch.nn.functional.normalize(pooled, dim=1) if settings.l2_normalize else pooled).cpu()


def _same_size(items: list[tuple[int, torch.Tensor]]) -> list[list[tuple[int, torch.Tensor]]]:
    """Consecutive runs of equal-sized images (``--image-size 0``), order kept."""
    runs: list[list[tuple[int, torch.Tensor]]] = []
    for item in items:
        if runs and runs[-1][0][1].shape == item[1].shape:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _truncate(path: Path, rows: int) -> None:
    """Rewrites the ``.npy`` at ``path`` with its first ``rows`` rows, chunk by chunk."""
    full = np.load(path, mmap_mode="r")
    short_path = path.with_name(path.name + ".short")
    short = np.lib.format.open_memmap(short_path, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
    for start in range(0, rows, 1024):
        stop = min(start + 1024, rows)
        short[start:stop] = full[start:stop]
    short.flush()
    del short, full
    os.replace(short_path, path)
