"""How a file becomes the network's input: the one owner of that path.

Read in this order, as an image travels:

- :mod:`~densecl.inputs.files`: a file's header (:func:`~densecl.inputs.files.probe`) and its values
  (:func:`~densecl.inputs.files.read_image`), one reader per format and the one list of extensions: an 8-bit
  image is an RGB photo, anything else (16-bit, float, multi-band, DICOM, ``.npy``, an 8-bit GeoTIFF with a
  nodata value) ``C x H x W`` float bands of its stored values, no-data pixels NaN;
- :mod:`~densecl.inputs.sources`: where a run's images come from (a folder, a list, a COCO file, the embedded
  scenes), each loaded as the run reads it and checked to be of one kind;
- :mod:`~densecl.inputs.stats`: every header checked at start, the mean and std measured on a sample;
- :mod:`~densecl.inputs.resolve`: a run's settings and its images -> photo or values, which bands, which
  no-data, which mean and std (:func:`~densecl.inputs.resolve.read_as`, ``resolve_inputs``);
- :mod:`~densecl.inputs.spec`: :class:`InputSpec`, what a backbone takes, stored in every checkpoint and read
  by every evaluation and export, and the to-tensor step: ``tensor`` (values, no-data NaN), ``prepare``
  (no-data set to the channel mean) and ``normalise`` (``(x - mean) / std``).

Pre-training (both data backends), every protocol, ``embed``, ``correspond`` and the exports ask these
modules; none decides on its own.
"""

from densecl.inputs.spec import (
    AUTO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MEASURE,
    PHOTO,
    VALUES,
    InputSpec,
    format_floats,
    imagenet_statistics,
    input_of,
    parse_bands,
    parse_floats,
)

__all__ = [
    "AUTO",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEASURE",
    "PHOTO",
    "VALUES",
    "InputSpec",
    "format_floats",
    "imagenet_statistics",
    "input_of",
    "parse_bands",
    "parse_floats",
]
