"""Which backbone an evaluation runs on: weights by source, and their provenance for the result file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from densecl.errors import InputError
from densecl.models.backbones import BACKBONES, ResNetBackbone


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(source: str, arch: str | None) -> tuple[ResNetBackbone, dict[str, Any]]:
    """Loads a backbone strictly and describes where it came from.

    Args:
        source: a checkpoint path in any layout :mod:`densecl.weights` reads, or ``"random"``.
        arch: backbone name; required for ``random``, else taken from the checkpoint
            when it records one (and checked against it by the loader).

    Returns:
        The backbone and ``{"source", "sha256", "arch", "format"}``.
    """
    from densecl import weights

    if source == "random":
        if arch is None:
            raise InputError(f"--weights random needs --arch (one of {', '.join(BACKBONES)})")
        return weights.load_backbone("random", arch=arch), {
            "source": "random", "sha256": None, "arch": arch, "format": "random",
        }
    path = Path(source)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist; pass a checkpoint path or 'random'")
    info = weights.load_backbone_weights(str(path))  # read once, for the backbone and the provenance
    if arch is not None and info.arch is not None and arch != info.arch:
        raise InputError(f"{path} holds {info.arch} weights but --arch {arch} was given; drop --arch or set it to {info.arch}")
    arch = arch or info.arch
    backbone = weights.load_backbone(info, arch=arch)
    return backbone, {
        "source": str(path),
        "sha256": file_sha256(path),
        "arch": arch,
        "format": info.source_format,
    }
