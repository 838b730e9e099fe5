"""Digests that pin generated scenes and written files to values recorded before a refactor."""

import hashlib
from pathlib import Path

import numpy as np
import pytest


def _scene_digest(scene) -> str:
    """The first 16 hex digits of SHA-256 over the scene's five arrays (image, masks, boxes, labels)."""
    arrays = (scene.image, scene.semantic, scene.instances, scene.boxes, scene.labels)
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:16]


def _tree_digest(root: Path, leave_out: tuple[str, ...] = ()) -> str:
    """SHA-256 over the relative path and bytes of every file under ``root`` (sorted), 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in leave_out):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture
def scene_digest():
    return _scene_digest


@pytest.fixture
def tree_digest():
    return _tree_digest
