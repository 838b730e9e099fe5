"""Digests that pin generated scenes and written files to values recorded before a refactor.

Each digest is a dict of parts (a scene's arrays, the entries of a written
folder), so a failing comparison names the part that changed.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _scene_digest(scene) -> dict[str, str]:
    """Per array of the scene (image, semantic and instance masks, boxes, labels): 12 hex digits of its SHA-256."""
    names = ("image", "semantic", "instances", "boxes", "labels")
    return {name: _short(np.ascontiguousarray(getattr(scene, name)).tobytes()) for name in names}


def _tree_digest(root: Path, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """Per entry of ``root`` (a file, or a folder and all below it): 12 hex digits of SHA-256 over the relative path
    and bytes of each of its files, sorted."""
    root = Path(root)
    parts: dict[str, hashlib._Hash] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in leave_out):
        relative = path.relative_to(root)
        h = parts.setdefault(relative.parts[0], hashlib.sha256())
        h.update(relative.as_posix().encode() + b"\0" + path.read_bytes())
    return {name: h.hexdigest()[:12] for name, h in parts.items()}


@pytest.fixture
def scene_digest():
    return _scene_digest


@pytest.fixture
def tree_digest():
    return _tree_digest
