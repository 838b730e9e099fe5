"""What a backbone takes as input, and the step from an image to it: channels, bands, mean and std, no data.

Photos (8-bit images, read as RGB by :func:`densecl.inputs.files.read_image`) are
scaled to ``[0, 1]`` and normalised with ImageNet's mean and std unless told
otherwise: the numerics of every RGB run before other inputs existed. Any
other image (16-bit, float, more bands, DICOM, ``.npy``) keeps its stored
values; the network sees ``(value - mean) / std`` per channel, with mean and
std measured on the data when pre-training starts
(:func:`densecl.inputs.stats.measure`, ``densecl data stats DIR``) or given
with ``--mean`` and ``--std``. They are stored in the checkpoint's config, and
every evaluation and export of that checkpoint reads them from there.

No data: NaN pixels, pixels equal to a GeoTIFF's own nodata value, and
pixels equal to ``nodata`` (``--nodata``, in stored values) carry no data.
They are left out of the measured mean and std and set to their channel's
mean before any resampling (:meth:`InputSpec.prepare`), so they are 0 after
normalisation: no signal, and no NaN reaches the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from densecl.errors import InputError
from densecl.inputs.files import check_bands, read_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTO = "auto"
MEASURE = "measure"  # --mean measure: measure even on photos
PHOTO, VALUES = "photo", "values"  # --pixels: 8-bit images as RGB photos in [0, 1], or every image's stored values


@dataclass(frozen=True)
class InputSpec:
    """A backbone's input.

    Attributes:
        channels: input channels of the first convolution.
        photo: True for 8-bit photos read as RGB in ``[0, 1]``, False for stored values,
            None when not known (weights from elsewhere: the data decide).
        bands: 1-based band numbers of the files, in the order the channels take
            them (``(4, 3, 2)``); None: every band as stored.
        mean, std: per channel, in the units the images arrive in; None when not known
            (then photos take ImageNet's, and other images need them given).
        nodata: a stored value that marks pixels without data, besides NaN.
    """

    channels: int = 3
    photo: bool | None = True
    bands: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    nodata: float | None = None

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise InputError(f"in_channels must be >= 1, got {self.channels}")
        if self.bands is not None and len(self.bands) != self.channels:
            raise InputError(f"--bands names {len(self.bands)} bands but there are {self.channels} input channels")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise InputError(
                    f"--{name} has {len(values)} values but there are {self.channels} input channels; "
                    "give one a channel"
                )
        if self.std is not None and any(not s > 0 for s in self.std):
            raise InputError(f"--std values must be positive, got {format_floats(self.std)}")

    @property
    def plain_rgb(self) -> bool:
        """Photos as they are (no bands chosen): the PIL path of MoCo-v2's augmentation applies unchanged."""
        return self.photo is not False and self.bands is None and self.channels == 3

    def describe(self) -> str:
        """One phrase for the start-up line: ``4 channels (bands 4,3,2) of stored values, mean ... std ...``."""
        kind = {True: "8-bit photos in [0, 1]", False: "stored values", None: "images"}[self.photo]
        chosen = f" (bands {','.join(map(str, self.bands))})" if self.bands else ""
        stats = f", mean {format_floats(self.mean)}, std {format_floats(self.std)}" if self.mean else ""
        nodata = f", nodata {self.nodata:g}" if self.nodata is not None else ""
        return f"{self.channels} channel{'s' if self.channels > 1 else ''}{chosen} of {kind}{stats}{nodata}"

    def tensor(self, image: Image.Image | torch.Tensor, where: str | Path = "an image") -> torch.Tensor:
        """An image as ``C x H x W`` float32: a photo in ``[0, 1]`` with its bands chosen, bands as they came
        (:func:`densecl.inputs.files.read_image` chose them) with ``nodata`` pixels NaN.

        Raises:
            InputError: the image is of the other kind, or has another number of channels.
        """
        photo = isinstance(image, Image.Image)
        if self.photo is not None and photo != self.photo:
            want = "8-bit photos" if self.photo else "16-bit, float or multi-band images"
            raise InputError(
                f"{where} is {'an 8-bit photo' if photo else 'a 16-bit, float or multi-band image'} but these weights "
                f"take {want}; use images of the kind they were trained on (weights from elsewhere or random: "
                "pass --in-channels, --mean and --std)"
            )
        if photo:
            x = torch.from_numpy(_rgb_array(image)).permute(2, 0, 1).float().div_(255)  # 3 x H x W
            if self.bands is not None:
                check_bands(self.bands, 3, where)
                x = x[[b - 1 for b in self.bands]]
        else:
            x = image.float()
            if self.nodata is not None:
                x = x.masked_fill(x == self.nodata, math.nan)
        if x.shape[0] != self.channels:
            raise InputError(
                f"{where} has {x.shape[0]} channel{'s' if x.shape[0] != 1 else ''} but the model takes "
                f"{self.channels}; choose bands with --bands, or use weights trained on such images"
            )
        return x

    def statistics(self, photo: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``: the known ones, else ImageNet's for photos.

        Raises:
            InputError: stored values (not photos) and no mean and std known.
        """
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        if photo and len(self.bands or (1, 2, 3)) == self.channels:
            return imagenet_statistics(self.bands or (1, 2, 3))
        raise InputError(
            "these weights carry no mean and std for 16-bit, float or multi-band images; pass --mean and --std "
            "(densecl data stats DIR prints them for your images)"
        )

    def read(self, path: str | Path, fix: str = "fix or remove it") -> Image.Image | torch.Tensor:
        """Reads an image file as this input reads it: bands chosen, 8-bit images as values where it takes values."""
        return read_image(path, bands=self.bands, values=self.photo is False, fix=fix)

    def prepare(self, image: Image.Image | torch.Tensor, where: str | Path = "an image") -> torch.Tensor:
        """:meth:`tensor` with every no-data pixel set to its channel's mean (ready to resample): ``C x H x W``."""
        x = self.tensor(image, where)
        nan = torch.isnan(x)
        if bool(nan.any()):
            mean = torch.tensor(self.statistics(isinstance(image, Image.Image))[0], dtype=x.dtype)
            x = torch.where(nan, mean.view(-1, 1, 1).expand_as(x), x)
        return x

    def takes_as_photo(self, image: Image.Image | torch.Tensor) -> bool:
        """Whether ``image`` goes the photo path: an RGB PIL photo this input takes as it is, augmented as 8-bit
        pixels (MoCo-v2's PIL operations, the numerics of every RGB run) and finished by :meth:`finish_photo`.
        Anything else goes the values path: :meth:`prepare`, float operations, :meth:`normalise`."""
        return isinstance(image, Image.Image) and self.plain_rgb

    def finish_photo(self, pixels: Image.Image | torch.Tensor) -> torch.Tensor:
        """The photo path's last step: 8-bit pixels (a PIL image or ``3 x H x W`` uint8) -> ``[0, 1]`` ->
        normalised ``3 x H x W`` float32."""
        from torchvision.transforms import v2

        x = v2.functional.to_dtype(v2.functional.to_image(pixels), torch.float32, scale=True)
        return self.normalise(x, photo=True)

    def denormalise(self, x: torch.Tensor, photo: bool = True) -> torch.Tensor:
        """The inverse of :meth:`normalise`: ``x * std + mean`` per channel (to show a view to people)."""
        mean, std = self.statistics(photo)
        shape = (-1, 1, 1)
        return x * torch.tensor(std, dtype=x.dtype).view(shape) + torch.tensor(mean, dtype=x.dtype).view(shape)

    def normalise(self, x: torch.Tensor, photo: bool) -> torch.Tensor:
        """``(x - mean) / std`` per channel; ``x`` is ``C x H x W`` or ``N x C x H x W``."""
        mean, std = self.statistics(photo)
        shape = (-1, 1, 1)
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
        return (x - m) / s

    def to_config(self) -> dict[str, Any]:
        """The :class:`~densecl.config.PretrainConfig` fields that say the same."""
        return {
            "in_channels": self.channels,
            "bands": ",".join(map(str, self.bands)) if self.bands else None,
            "mean": format_floats(self.mean) if self.mean else AUTO,
            "std": format_floats(self.std) if self.std else AUTO,
            "nodata": self.nodata,
            "pixels": VALUES if self.photo is False else PHOTO,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], channels: int | None = None) -> InputSpec:
        """The input a pre-training config describes; a config from before multi-band input describes RGB photos.

        ``photo`` comes from ``pixels`` (``photo`` or ``values``; absent before other inputs existed: photos).
        """
        bands = parse_bands(config.get("bands"))
        n = config.get("in_channels", AUTO)
        n = channels if n in (None, AUTO) else int(n)
        n = n or (len(bands) if bands else 3)
        mean, std = config.get("mean", AUTO), config.get("std", AUTO)
        mean = None if mean in (None, AUTO, MEASURE) else parse_floats(mean, "mean")
        std = None if std in (None, AUTO, MEASURE) else parse_floats(std, "std")
        if mean is None and n == 3 and not bands:
            mean, std = IMAGENET_MEAN, IMAGENET_STD  # a config of a run before this existed: photos
        photo = config.get("pixels", PHOTO) != VALUES
        nodata = config.get("nodata")
        return cls(n, photo, bands, mean, std, None if nodata is None else float(nodata))


def input_of(module: Any) -> InputSpec:
    """What a backbone (or a model built on one) takes: its ``input_spec``, else RGB photos (as timm falls back to
    ImageNet's ``pretrained_cfg``), so modules that only keep the backbone contract work too."""
    return getattr(module, "input_spec", None) or InputSpec()


def _rgb_array(image: Image.Image):
    import numpy as np

    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def imagenet_statistics(bands: Sequence[int] = (1, 2, 3)) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std of the chosen RGB bands (1-based)."""
    return tuple(IMAGENET_MEAN[b - 1] for b in bands), tuple(IMAGENET_STD[b - 1] for b in bands)


def parse_bands(value: Any) -> tuple[int, ...] | None:
    """``"4,3,2"``, ``[4, 3, 2]`` or ``4`` -> ``(4, 3, 2)``; None or empty -> None.

    Raises:
        InputError: not positive whole numbers, or a band named twice.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "all")):
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]() ").split(",")
    try:
        bands = tuple(int(str(b).strip()) for b in items if str(b).strip())
    except ValueError:
        raise InputError(f"--bands must be band numbers counted from 1, like 4,3,2; got {value!r}") from None
    if not bands or min(bands) < 1:
        raise InputError(f"--bands must be band numbers counted from 1, like 4,3,2; got {value!r}")
    if len(set(bands)) != len(bands):
        raise InputError(f"--bands names a band twice: {value!r}")
    return bands


def parse_floats(value: Any, name: str) -> tuple[float, ...]:
    """``"0.5,0.25"`` or ``[0.5, 0.25]`` -> ``(0.5, 0.25)``."""
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]() ").split(",")
    try:
        out = tuple(float(str(v).strip()) for v in items if str(v).strip())
    except ValueError:
        out = ()
    if not out or not all(math.isfinite(v) for v in out):
        raise InputError(f"--{name} must be auto or comma-separated numbers, one a channel; got {value!r}")
    return out


def format_floats(values: Sequence[float] | None) -> str:
    """``(0.5, 0.25)`` -> ``"0.5,0.25"`` (7 significant digits: float32 holds no more)."""
    return ",".join(f"{v:.7g}" for v in values or ())
