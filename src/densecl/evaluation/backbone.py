"""Which backbone an evaluation runs on: weights by source, and their provenance for the result file.

The one owner of the command-line rules for ``--weights`` (a checkpoint path
in any layout :mod:`densecl.weights` reads, or ``random``) and ``--arch``: a
file is read once; ``--arch``, when given, must agree with every file; files
compared side by side must be one architecture; ``random`` needs an
architecture from ``--arch`` or from the files. ``densecl eval`` loads one
source, ``densecl correspond`` several.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densecl.config import RANDOM_WEIGHTS
from densecl.errors import InputError
from densecl.models.backbones import BACKBONES, ResNetBackbone

if TYPE_CHECKING:
    from densecl.weights import BackboneWeights

RANDOM = RANDOM_WEIGHTS  # the --weights value for a randomly initialised backbone


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sources(sources: Sequence[str]) -> dict[str, BackboneWeights]:
    """Every weights file of ``sources`` read once (``random`` needs no reading), keyed by the source as given.

    Raises:
        InputError: a file does not exist, or :mod:`densecl.weights` cannot read it.
    """
    from densecl import weights

    read: dict[str, BackboneWeights] = {}
    for source in sources:
        if source == RANDOM or source in read:
            continue
        if not Path(source).is_file():
            raise InputError(f"weights file {source} does not exist; pass a checkpoint path or '{RANDOM}'")
        read[source] = weights.load_backbone_weights(source)
    return read


def agreed_arch(read: Mapping[str, BackboneWeights], arch: str | None, random: bool) -> str | None:
    """The one architecture for all sources: ``arch`` (``--arch``) if given, else the files'.

    Args:
        read: the files, from :func:`read_sources`.
        arch: the ``--arch`` value, or None.
        random: whether a source is ``random`` (which needs an architecture).

    Raises:
        InputError: ``--arch`` disagrees with a file, the files disagree, or
            ``random`` has no architecture to take.
    """
    for source, w in read.items():
        if arch is not None and w.arch is not None and w.arch != arch:
            raise InputError(
                f"'{source}' holds {w.arch} weights but --arch is {arch}; drop --arch or set it to {w.arch}"
            )
    archs = {w.arch for w in read.values() if w.arch is not None}
    if len(archs) > 1:
        found = ", ".join(f"'{s}' is {w.arch}" for s, w in read.items())
        raise InputError(f"the weights are of different architectures ({found}); compare weights of one architecture")
    arch = arch or next(iter(archs), None)
    if arch is None and random:
        raise InputError(f"--weights {RANDOM} needs --arch (one of {', '.join(BACKBONES)})")
    return arch


def load_source(
    source: str, read: Mapping[str, BackboneWeights], arch: str | None
) -> tuple[ResNetBackbone, dict[str, Any]]:
    """Builds the backbone of one source strictly and describes where it came from.

    ``random`` draws from torch's global generator: seed it first for a reproducible backbone.

    Returns:
        The backbone and ``{"source", "sha256", "arch", "format"}``.
    """
    from densecl import weights

    if source == RANDOM:
        return weights.load_backbone(RANDOM, arch=arch), {
            "source": RANDOM,
            "sha256": None,
            "arch": arch,
            "format": RANDOM,
        }
    path = Path(source)
    backbone = weights.load_backbone(read[source], arch=arch)
    return backbone, {
        "source": str(path),
        "sha256": file_sha256(path),
        "arch": arch or read[source].arch,
        "format": read[source].source_format,
    }


def load_weights(source: str, arch: str | None) -> tuple[ResNetBackbone, dict[str, Any]]:
    """Loads one backbone strictly and describes where it came from.

    Args:
        source: a checkpoint path in any layout :mod:`densecl.weights` reads, or ``"random"``.
        arch: backbone name; required for ``random``, else taken from the checkpoint
            when it records one (and checked against it).

    Returns:
        The backbone and ``{"source", "sha256", "arch", "format"}``.
    """
    read = read_sources([source])
    return load_source(source, read, agreed_arch(read, arch, random=source == RANDOM))
