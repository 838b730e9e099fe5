"""Backbone weights out: one file per target library.

Every export starts from :func:`densecl.weights.load_backbone_weights`, so any
checkpoint that can be imported can be exported (the query encoder's backbone;
heads, queues and the momentum encoder are dropped)::

    densecl export runs/r50/checkpoint.pth --format detectron2 --out r50_densecl.pkl

    from densecl.export import export
    result = export("runs/r50/checkpoint.pth", "timm", "r50_densecl.pth")
    print(result.usage)

=============  ===============  ====================================================
format         file             reader
=============  ===============  ====================================================
torchvision    .pth             ``torchvision.models.<arch>()`` (only ``fc`` missing)
timm           .pth             ``timm.create_model(..., pretrained_cfg_overlay=...)``
detectron2     .pkl             ``MODEL.WEIGHTS`` (detectron2 names, numpy arrays)
mmlab          .pth             mmdet / mmseg / mmpretrain ``init_cfg=dict(type='Pretrained')``
safetensors    .safetensors     torchvision names; timm reads it by the same route
=============  ===============  ====================================================

A timm backbone (``--arch timm/<name>``) exports to ``timm`` and
``safetensors`` only, under timm's names: everything up to the last feature
map, without the head the backbone prunes (:mod:`densecl.export.timm`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from densecl.config import is_timm_arch
from densecl.errors import InputError
from densecl.export import detectron2, mmlab, safetensors, timm, torchvision
from densecl.weights import BackboneWeights, load_backbone_weights


class Target(NamedTuple):
    """One export format: how to write it and how to tell the user to read it."""

    summary: str  # one line for --help
    suffix: str | None  # the file suffix the reader dispatches on; None: any but .pkl/.safetensors
    write: Callable[[BackboneWeights, Path], None]
    usage: Callable[[Path, BackboneWeights], str]
    timm: bool = False  # also writes timm backbones (timm/<name>), under timm's names


#: format name -> target
FORMATS: dict[str, Target] = {
    "torchvision": Target(torchvision.SUMMARY, None, torchvision.write, torchvision.usage),
    "timm": Target(timm.SUMMARY, None, timm.write, timm.usage, timm=True),
    "detectron2": Target(detectron2.SUMMARY, ".pkl", detectron2.write, detectron2.usage),
    "mmlab": Target(mmlab.SUMMARY, None, mmlab.write, mmlab.usage),
    "safetensors": Target(safetensors.SUMMARY, ".safetensors", safetensors.write, safetensors.usage, timm=True),
}

#: suffixes that make readers switch to another format
_DISPATCHING_SUFFIXES = (".pkl", ".safetensors")


class Exported(NamedTuple):
    path: Path
    format: str
    weights: BackboneWeights  # what was written (torchvision names) and what was dropped
    usage: str  # how to load the file in the target library


def export(source: str | os.PathLike | Mapping, fmt: str, out: str | os.PathLike) -> Exported:
    """Converts the query backbone of ``source`` to ``fmt`` and writes it to ``out``.

    Raises:
        InputError: unknown format, a suffix the target library would misread,
            or a source :func:`load_backbone_weights` refuses.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target, out = FORMATS[fmt], Path(out)
    if target.suffix is not None and out.suffix != target.suffix:
        raise InputError(f"--format {fmt} needs a {target.suffix} file, got '{out}'; name the output *{target.suffix}")
    if target.suffix is None and out.suffix in _DISPATCHING_SUFFIXES:
        raise InputError(
            f"'{out}' ends in {out.suffix}, which readers take for another format; name it *.pth for --format {fmt}"
        )
    weights = load_backbone_weights(source)
    if is_timm_arch(weights.arch) and not target.timm:
        able = " or ".join(name for name, t in FORMATS.items() if t.timm)
        raise InputError(
            f"--format {fmt} writes torchvision ResNets, but {_where(source)} holds {weights.arch}: use --format {able}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    target.write(weights, out)
    return Exported(out, fmt, weights, target.usage(out, weights))


def _where(source: str | os.PathLike | Mapping) -> str:
    return "the given checkpoint dict" if isinstance(source, Mapping) else f"'{os.fspath(source)}'"
