"""A run's input, resolved from its config and its data when pre-training starts.

``auto`` settings become numbers here, printed and stored in the checkpoint
(as ``auto`` queue lengths do): the number of channels (the first image's
bands, or as many as ``--bands`` names; checked against ``--in-channels``),
the mean and std (given, ImageNet's for 8-bit photos, or measured on a
sample, :mod:`densecl.inputs.stats`), whether 8-bit images are photos or values,
and the jitter rule (:mod:`densecl.data.jitter`). The source is told what
every image must be, so each is checked as it loads.
"""

from __future__ import annotations

import dataclasses

from densecl.config import AUTO, PretrainConfig
from densecl.data.jitter import default_mode
from densecl.errors import InputError
from densecl.inputs import stats
from densecl.inputs.files import check_bands
from densecl.inputs.sources import ImageFiles, Reading, SceneImages
from densecl.inputs.spec import MEASURE, InputSpec, imagenet_statistics, parse_bands, parse_floats


def read_as(
    source: ImageFiles | SceneImages,
    pixels: str = AUTO,
    bands_text: str | None = None,
    nodata: float | None = None,
    in_channels: int | str = AUTO,
) -> tuple[Reading, InputSpec]:
    """What the images are and how they are read, before any statistics: photo or stored values, which bands,
    which no-data. Every image's header is checked to agree (:func:`densecl.inputs.stats.inspect`), and the source
    is told what every image must be.

    8-bit images are RGB photos in ``[0, 1]`` unless ``pixels`` is ``values``, or a ``nodata`` value is given:
    a photo has no stored value to mark, so a no-data value makes them stored values too (``pixels`` ``photo``
    with a no-data value is refused).

    Returns:
        The reading (what the headers say) and the input spec without mean and std.

    Raises:
        InputError: images that disagree (one line naming two), settings that contradict the images.
    """
    if pixels == "photo" and nodata is not None:
        raise InputError(
            f"--nodata {nodata:g} marks stored values, but --pixels photo reads 8-bit images as RGB in [0, 1]: "
            "drop --pixels photo (8-bit images are then read as their stored values) or drop --nodata"
        )
    bands = parse_bands(bands_text)
    reading = stats.inspect(source, values=pixels == "values" or nodata is not None)
    if pixels == "photo" and not reading.photo:
        raise InputError(
            f"--pixels photo, but {reading.reference} is not an 8-bit photo; use --pixels auto for these images"
        )
    if bands is not None:
        check_bands(bands, reading.file_bands, reading.reference)
    channels = len(bands) if bands else reading.file_bands
    if in_channels != AUTO and int(in_channels) != channels:
        chosen = f" and --bands {bands_text}" if bands else ""
        raise InputError(
            f"--in-channels {in_channels}, but the images{chosen} give {channels} channels ({reading.reference}); "
            "use --in-channels auto, or choose that many bands with --bands"
        )
    source.expect(reading._replace(bands=bands))
    return reading, InputSpec(channels, bool(reading.photo), bands, None, None, nodata)


def resolve_inputs(cfg: PretrainConfig, source: ImageFiles | SceneImages) -> tuple[PretrainConfig, InputSpec, str]:
    """The config with its input settings resolved, the :class:`~densecl.inputs.InputSpec`, and one line saying so.

    Raises:
        InputError: images that disagree (one line naming two), settings that contradict the images.
    """
    reading, spec = read_as(source, cfg.pixels, cfg.bands, cfg.nodata, cfg.in_channels)
    photo, bands, channels = spec.photo, spec.bands, spec.channels

    given = [v not in (AUTO, MEASURE) for v in (cfg.mean, cfg.std)]
    if any(given) and not all(given):
        raise InputError("give --mean and --std together (both numbers, or both auto)")
    if all(given):
        mean, std = parse_floats(cfg.mean, "mean"), parse_floats(cfg.std, "std")
        how = "given"
    elif photo and MEASURE not in (cfg.mean, cfg.std):
        mean, std = imagenet_statistics(bands or (1, 2, 3))
        how = "ImageNet's, for 8-bit photos"
    else:
        measured = stats.measure(source, spec)
        mean, std = measured.mean, measured.std
        how = f"measured on {measured.images} images, {measured.valid_fraction:.1%} of their pixels with data"
    spec = dataclasses.replace(spec, mean=tuple(mean), std=tuple(std))  # checks one value a channel
    spec = InputSpec.from_config(spec.to_config())  # exactly what the checkpoint will say (7 digits)

    jitter = default_mode(channels, photo or (bands is None and channels == 3)) if cfg.jitter == AUTO else cfg.jitter
    if jitter == "rgb" and channels != 3:
        raise InputError(f"--jitter rgb needs 3 channels, the input has {channels}; use image or channels")
    if cfg.data_backend == "gpu" and not spec.plain_rgb:
        raise InputError(
            "--data-backend gpu decodes 8-bit JPEG photos; these images are read on the CPU: use --data-backend cpu"
        )
    cfg = dataclasses.replace(cfg, **spec.to_config(), jitter=jitter)
    return cfg, spec, f"input: {spec.describe()} ({how}); jitter {jitter}"
