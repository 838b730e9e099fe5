"""Labelled scenes made on the fly: procedural shapes on photos, and RGBA cut-outs pasted on photos.

- :mod:`~densecl.scenes.compose`: what both share (drawing visible objects, labelling them, :class:`Scene`);
- :mod:`~densecl.scenes.procedural`: the embedded ``scenes`` data set (no download);
- :mod:`~densecl.scenes.photo`: cut-and-paste scenes from real cut-outs and photos;
- :mod:`~densecl.scenes.export` and :mod:`~densecl.scenes.export_photo`: writing them as data sets
  (``densecl data export-scenes`` and ``densecl data scenes``).
"""

from densecl.scenes.compose import MIN_SIZE, MIN_VISIBLE_PIXELS, Scene, pixel_owners
from densecl.scenes.procedural import CLASSES, PHOTOS, ScenesDataset, render_scene

__all__ = [
    "CLASSES",
    "MIN_SIZE",
    "MIN_VISIBLE_PIXELS",
    "PHOTOS",
    "Scene",
    "ScenesDataset",
    "pixel_owners",
    "render_scene",
]
