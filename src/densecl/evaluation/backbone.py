"""Which backbone an evaluation runs on: weights by source, and their provenance for the result file.

The one owner of the command-line rules for ``--weights`` (a checkpoint path
in any layout :mod:`densecl.weights` reads, or ``random``) and ``--arch``: a
file is read once; ``--arch``, when given, must agree with every file; files
compared side by side must be one architecture; ``random`` needs an
architecture from ``--arch`` or from the files. ``densecl eval`` loads one
source, ``densecl correspond`` several.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from densecl.config import RANDOM_WEIGHTS
from densecl.errors import InputError
from densecl.inputs import InputSpec, parse_bands, parse_floats
from densecl.models.backbones import BACKBONES, Backbone

if TYPE_CHECKING:
    from densecl.weights import BackboneWeights

RANDOM = RANDOM_WEIGHTS  # the --weights value for a randomly initialised backbone


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sources(sources: Sequence[str], arch: str | None = None) -> dict[str, BackboneWeights]:
    """Every weights file of ``sources`` read once (``random`` needs no reading), keyed by the source as given;
    ``arch`` (``--arch``) names the model of timm files that do not name their own.

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
        read[source] = weights.load_backbone_weights(source, arch)
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
        raise InputError(f"--weights {RANDOM} needs --arch (one of {', '.join(BACKBONES)}, or timm/<name>)")
    return arch


class InputOptions(NamedTuple):
    """``--in-channels``, ``--bands``, ``--mean``, ``--std``, ``--nodata``: what the weights take, where they do
    not say it (weights from elsewhere, ``random``) or to override it; None: as the weights say."""

    in_channels: int | None = None
    bands: str | None = None
    mean: str | None = None
    std: str | None = None
    nodata: float | None = None

    def channels(self) -> int:
        """Input channels of a ``random`` backbone: --in-channels, else as many as --bands or --mean name, else 3."""
        if self.in_channels:
            return self.in_channels
        if parse_bands(self.bands):
            return len(parse_bands(self.bands))
        return len(parse_floats(self.mean, "mean")) if self.mean else 3

    def apply(self, spec: InputSpec, where: str) -> InputSpec:
        """``spec`` with the options given; the channels must stay the weights'."""
        if self.in_channels and self.in_channels != spec.channels:
            raise InputError(
                f"--in-channels {self.in_channels}, but {where} takes {spec.channels} channels; drop --in-channels"
            )
        if (self.mean is None) != (self.std is None):
            raise InputError("give --mean and --std together")
        changes: dict[str, Any] = {}
        if self.bands is not None:
            changes["bands"] = parse_bands(self.bands)
        if self.mean is not None:  # statistics of the data given: whichever kind the data are
            changes["mean"], changes["std"] = parse_floats(self.mean, "mean"), parse_floats(self.std, "std")
            changes["photo"] = None
        if self.nodata is not None:
            changes["nodata"] = self.nodata
        return dataclasses.replace(spec, **changes) if changes else spec


def load_source(
    source: str, read: Mapping[str, BackboneWeights], arch: str | None, options: InputOptions | None = None
) -> tuple[Backbone, dict[str, Any]]:
    """Builds the backbone of one source strictly and describes where it came from.

    ``random`` draws from torch's global generator: seed it first for a reproducible backbone.
    The backbone's ``input_spec`` is what the weights say it takes, with ``options`` applied.

    Returns:
        The backbone and ``{"source", "sha256", "arch", "format", "input"}``.
    """
    from densecl import weights

    options = options or InputOptions()
    if source == RANDOM:
        backbone = weights.load_backbone(RANDOM, arch=arch, in_channels=options.channels())
        info = {"source": RANDOM, "sha256": None, "arch": arch, "format": RANDOM}
    else:
        path = Path(source)
        backbone = weights.load_backbone(read[source], arch=arch)
        info = {
            "source": str(path),
            "sha256": file_sha256(path),
            "arch": arch or read[source].arch,
            "format": read[source].source_format,
        }
    backbone.input_spec = options.apply(backbone.input_spec, f"'{source}'")
    return backbone, {**info, "input": backbone.input_spec.describe()}


def load_weights(source: str, arch: str | None, options: InputOptions | None = None) -> tuple[Backbone, dict[str, Any]]:
    """Loads one backbone strictly and describes where it came from.

    Args:
        source: a checkpoint path in any layout :mod:`densecl.weights` reads, or ``"random"``.
        arch: backbone name; required for ``random``, else taken from the checkpoint
            when it records one (and checked against it).

    Returns:
        The backbone and ``{"source", "sha256", "arch", "format"}``.
    """
    read = read_sources([source], arch)
    return load_source(source, read, agreed_arch(read, arch, random=source == RANDOM), options)
