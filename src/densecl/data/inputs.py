"""A run's input, resolved from its config and its data when pre-training starts.

``auto`` settings become numbers here, printed and stored in the checkpoint
(as ``auto`` queue lengths do): the number of channels (the first image's
bands, or as many as ``--bands`` names; checked against ``--in-channels``),
the mean and std (given, ImageNet's for 8-bit photos, or measured on a
sample, :mod:`densecl.data.stats`), whether 8-bit images are photos or values,
and the jitter rule (:mod:`densecl.data.jitter`). The source is told what
every image must be, so each is checked as it loads.
"""

from __future__ import annotations

import dataclasses

from densecl.config import AUTO, PretrainConfig
from densecl.data import stats
from densecl.data.jitter import default_mode
from densecl.data.sources import ImageFiles, SceneImages
from densecl.errors import InputError
from densecl.inputs import MEASURE, InputSpec, imagenet_statistics, parse_bands, parse_floats
from densecl.pixels import check_bands


def resolve_inputs(cfg: PretrainConfig, source: ImageFiles | SceneImages) -> tuple[PretrainConfig, InputSpec, str]:
    """The config with its input settings resolved, the :class:`~densecl.inputs.InputSpec`, and one line saying so.

    Raises:
        InputError: images that disagree (one line naming two), settings that contradict the images.
    """
    bands = parse_bands(cfg.bands)
    reading = stats.inspect(source, values=cfg.pixels == "values")
    if cfg.pixels == "photo" and not reading.photo:
        raise InputError(
            f"--pixels photo, but {reading.reference} is not an 8-bit photo; use --pixels auto for these images"
        )
    if bands is not None:
        check_bands(bands, reading.file_bands, reading.reference)
    channels = len(bands) if bands else reading.file_bands
    if cfg.in_channels != AUTO and int(cfg.in_channels) != channels:
        chosen = f" and --bands {cfg.bands}" if bands else ""
        raise InputError(
            f"--in-channels {cfg.in_channels}, but the images{chosen} give {channels} channels ({reading.reference}); "
            "use --in-channels auto, or choose that many bands with --bands"
        )
    source.expect(reading._replace(bands=bands))
    photo = bool(reading.photo)

    given = [v not in (AUTO, MEASURE) for v in (cfg.mean, cfg.std)]
    if any(given) and not all(given):
        raise InputError("give --mean and --std together (both numbers, or both auto)")
    spec = InputSpec(channels, photo, bands, None, None, cfg.nodata)
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
