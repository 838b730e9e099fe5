"""The pre-training configuration: one flat dataclass, flat YAML recipes, validation.

A recipe is a YAML file of ``key: value`` lines naming fields of
:class:`PretrainConfig`; the CLI turns every field into a flag that overrides
the recipe. The resolved config is printed at start and stored in every
checkpoint, so a run describes itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from densecl.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MATCHINGS = ("features", "geometry", "hybrid", "both")  # positives rules: densecl.schedules.dense_positives_at
PIXELS = ("auto", "photo", "values")
JITTERS = ("auto", "rgb", "channels", "image")
DATA_BACKENDS = ("cpu", "gpu")
ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
)  # the backbones (densecl.models.backbones builds them)
DEFAULT_TIMEOUT_S = 1800  # a collective waits this long for a rank that died or hangs, then fails (pretrain, eval)
RANDOM_WEIGHTS = "random"  # --weights / --init value for a randomly initialised backbone
AUTO = "auto"  # queue_len / dense_queue_len: sized from the data set (see PretrainConfig.with_queues_for)
PAPER_QUEUE_LEN = 65536  # the paper's queues; what "auto" never exceeds


def _field(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its one-sentence help (and its choices) for ``densecl pretrain --help``."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on. Defaults: DenseCL R50, ImageNet 200 ep."""

    # model: encoders, heads, queues, loss
    arch: str = _field("resnet50", "the backbone, a torchvision ResNet", ARCHS)
    hidden_dim: int = _field(2048, "hidden width of both heads (the paper: 2048; small backbones use their C5 width)")
    out_dim: int = _field(128, "embedding size of both heads, and of the keys in the queues")
    queue_len: int | str = _field(
        PAPER_QUEUE_LEN,
        "negatives in the global queue, a multiple of batch_size; auto: the largest multiple of batch_size below "
        "the number of images, at most 65536",
    )
    momentum: float = _field(0.999, "EMA momentum m of the key encoder: theta_k <- m theta_k + (1 - m) theta_q")
    temperature: float = _field(0.2, "tau of both InfoNCE losses")
    loss_lambda: float = _field(
        0.5, "lambda, the weight of the dense loss: (1 - lambda) global + lambda dense; 0 is MoCo-v2"
    )
    lambda_warmup_iters: int = _field(0, "train MoCo-v2 (lambda 0) for the first K iterations, then lambda")
    num_grid: int | None = _field(
        None, "pool the dense head's grid (and the matching) to G x G; none keeps the C5 grid"
    )
    dense_queue_len: int | str | None = _field(
        None, "negatives in the dense queue, or auto (as queue_len); none: queue_len, as the paper"
    )
    bn_group_size: int | None = _field(
        None,
        "images per batch-norm group in both encoders, the key batch shuffled across the groups (shuffle-BN in one "
        "process; 32 trains one GPU with batch 256 as the authors' 8 GPUs x 32); must divide each process's batch; "
        "none: each process's whole batch",
    )
    dense_matching: str = _field(
        "features",
        "how a query location finds its positive: features, the key location of most similar backbone feature (the "
        "paper); geometry, the one showing the same image point; hybrid, geometry for the first "
        "dense_matching_switch iterations, then features; both, the mean of the paper's loss and one with the "
        "geometric positives (docs/small-data.md)",
        MATCHINGS,
    )
    dense_matching_switch: int = _field(
        0, "hybrid only: iterations of geometric positives before the switch to the feature argmax"
    )
    # data and MoCo-v2 augmentation
    data: str = _field("scenes", "the images: a folder tree, a .txt list of paths, a COCO .json, or scenes (embedded)")
    scenes_length: int = _field(2000, "images in the embedded scenes data set")
    scenes_size: int = _field(128, "side of the embedded scenes, in pixels")
    crop_size: int = _field(224, "side of each view (RandomResizedCrop), in pixels; at least 33 for a 2 x 2 C5 grid")
    min_scale: float = _field(0.2, "smallest area of a view's crop, as a fraction of the image (RandomResizedCrop)")
    workers: int = _field(4, "data-loading processes per process (rank)")
    # what the images hold and how the network sees them (docs/your-images.md)
    in_channels: int | str = _field(
        AUTO,
        "input channels of both encoders; auto: the bands of the first image (3 for 8-bit photos), or as many as "
        "--bands names; every image is checked to agree",
    )
    bands: str | None = _field(None, "the files' bands to use, counted from 1, in this order (e.g. 4,3,2); none: all")
    pixels: str = _field(
        AUTO,
        "auto: 8-bit images are RGB photos scaled to [0, 1], any other image (16-bit, float, multi-band, DICOM, "
        ".npy) keeps its stored values; values: 8-bit images keep theirs too (an 8-bit grayscale folder is one "
        "channel); photo: only 8-bit photos",
        PIXELS,
    )
    mean: str = _field(
        AUTO,
        "per-channel mean, comma-separated, in the images' units; auto: ImageNet's for 8-bit photos, else measured "
        "on a sample of the data at start (densecl data stats DIR prints it); measure: measured for photos too; "
        "stored in the checkpoint",
    )
    std: str = _field(AUTO, "per-channel std, as --mean")
    nodata: float | None = _field(
        None,
        "a stored value that marks pixels without data (besides NaN and a GeoTIFF's own nodata value): left out of "
        "the statistics, set to the channel mean in the views",
    )
    jitter: str = _field(
        AUTO,
        "brightness and contrast jitter of non-photo images: image (one factor a view), channels (one a band), rgb "
        "(with saturation, hue and grayscale; 3 channels); auto: rgb for a file's own 3 channels, image for 1, "
        "channels otherwise",
        JITTERS,
    )
    data_backend: str = _field(
        "cpu",
        "cpu: the data workers decode and augment; gpu: they read JPEG files and draw the views, the GPU decodes "
        "(nvJPEG) and augments whole batches (CUDA only; other files are decoded on the CPU)",
        DATA_BACKENDS,
    )
    # optimisation
    epochs: int = _field(200, "epochs of the cosine schedule")
    batch_size: int = _field(256, "global batch, over all processes")
    lr: float = _field(0.03, "learning rate for a batch of 256, scaled linearly with batch_size")
    weight_decay: float = _field(1e-4, "SGD weight decay, on all parameters as the authors")
    sgd_momentum: float = _field(0.9, "momentum of SGD (the key encoder's EMA momentum is --momentum)")
    max_iters: int | None = _field(None, "stop after this many iterations (the schedule still spans all epochs)")
    # engine
    device: str = _field("auto", "where to train: auto is cuda when there is a GPU, else cpu", DEVICES)
    precision: str = _field(
        "auto",
        "autocast precision: auto is bf16 on GPUs that have it, fp16 on older ones, and on a CPU the faster of fp32 "
        "and bf16, timed once and remembered",
        PRECISIONS,
    )
    channels_last: bool = _field(True, "channels_last memory format for both encoders (faster on GPUs and most CPUs)")
    compile: bool = _field(False, "torch.compile both encoders (where it cannot: one line, then eager)")
    sync_bn: bool = _field(
        False,
        "refused in pre-training: SyncBN normalises the whole global batch and so undoes shuffle-BN; --bn-group-size "
        "sets the batch-norm statistics instead",
    )
    seed: int = _field(0, "fixes the initial weights, the queues, the data order and every augmentation")
    dist_timeout: int = _field(
        DEFAULT_TIMEOUT_S,
        "seconds a collective waits for the other ranks before failing (torchrun), so a dead rank stops the group "
        "and torchrun --max-restarts can restart it",
    )
    deterministic: bool = _field(False, "deterministic kernels (slower), for bit-identical resumes on a GPU")
    init: str | None = _field(None, "start both backbones from these weights (any layout densecl reads)")
    output_dir: str = _field("runs/densecl", "the run's folder: checkpoint.pt, metrics.jsonl, tensorboard/")
    log_every: int = _field(10, "iterations between metrics lines (and the host's look at the loss)")
    save_every: int = _field(
        0, "iterations between checkpoints (checkpoint.pt, replaced each time); 0: at the end of every epoch only"
    )
    keep_every: int = _field(
        0,
        "also keep checkpoint_<step>.pt every N iterations, to evaluate points of the run later (never deleted by a "
        "later save); 0: none",
    )
    comment: str = _field("", "free text stored with the run")

    @property
    def scaled_lr(self) -> float:
        """The learning rate actually used: ``lr * batch_size / 256``."""
        return self.lr * self.batch_size / 256

    def validate(self, world_size: int = 1) -> None:
        """Raises :class:`InputError` (one line) for a config that cannot train."""
        _require(0.0 <= self.loss_lambda <= 1.0, f"loss_lambda must be in [0, 1], got {self.loss_lambda}")
        _require(0.0 <= self.momentum <= 1.0, f"momentum must be in [0, 1], got {self.momentum}")
        _require(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        _require(self.batch_size > 0 and self.epochs > 0, "batch_size and epochs must be positive")
        _require(
            self.batch_size % world_size == 0,
            f"batch_size {self.batch_size} is not divisible by the {world_size} processes; it is the global batch",
        )
        if self.queue_len != AUTO:
            _require(
                self.queue_len > 0 and self.queue_len % self.batch_size == 0,
                f"queue_len {self.queue_len} is not a positive multiple of the global batch size {self.batch_size}; "
                f"choose one (e.g. {self.batch_size * max(1, self.queue_len // self.batch_size)}) or --queue-len auto",
            )
        _require(
            self.dense_queue_len in (None, AUTO)
            or (self.dense_queue_len > 0 and self.dense_queue_len % self.batch_size == 0),
            f"dense_queue_len {self.dense_queue_len} must be a positive multiple of the global batch size "
            f"{self.batch_size} or auto",
        )
        _require(
            not self.sync_bn,
            "sync_bn is refused in pre-training: SyncBN normalises the whole global batch, which undoes shuffle-BN "
            "(keys and queries would again share statistics); leave it off and set --bn-group-size to choose how "
            "many images each batch norm sees",
        )
        local_batch = self.batch_size // world_size
        _require(
            self.bn_group_size is None or (self.bn_group_size >= 2 and local_batch % self.bn_group_size == 0),
            f"bn_group_size {self.bn_group_size} must be >= 2 and divide the batch of each process, "
            f"{local_batch} (batch_size {self.batch_size} over {world_size} process{'es' if world_size > 1 else ''}): "
            f"choose a divisor of {local_batch}, a batch_size that it divides, or --bn-group-size none",
        )
        _require(
            self.data_backend in DATA_BACKENDS,
            f"data_backend must be one of {', '.join(DATA_BACKENDS)}, got {self.data_backend!r}",
        )
        _require(self.pixels in PIXELS, f"pixels must be one of {', '.join(PIXELS)}, got {self.pixels!r}")
        _require(self.jitter in JITTERS, f"jitter must be one of {', '.join(JITTERS)}, got {self.jitter!r}")
        _require(
            self.in_channels == AUTO or self.in_channels >= 1,
            f"in_channels must be auto or >= 1, got {self.in_channels}",
        )
        _require(
            self.dense_matching in MATCHINGS,
            f"dense_matching must be one of {', '.join(MATCHINGS)}, got {self.dense_matching!r}",
        )
        _require(
            (self.dense_matching == "hybrid") == (self.dense_matching_switch > 0),
            f"dense_matching_switch {self.dense_matching_switch} goes with dense_matching hybrid "
            f"(got {self.dense_matching}): give --dense-matching hybrid --dense-matching-switch N with N >= 1, or "
            "neither",
        )
        _require(
            self.loss_lambda > 0 or self.dense_matching == "features",
            f"dense_matching {self.dense_matching} needs a dense loss, but loss_lambda is 0 (MoCo-v2 has no dense "
            "head): set --loss-lambda above 0 or leave --dense-matching features",
        )
        grid = c5_side(self.crop_size)
        _require(
            grid >= 2,
            f"crop_size {self.crop_size} gives a {grid}x{grid} C5 grid; DenseCL needs at least 2x2: use crop_size "
            ">= 33",
        )
        _require(self.num_grid is None or self.num_grid >= 1, f"num_grid must be >= 1, got {self.num_grid}")
        _require(0 < self.min_scale <= 1, f"min_scale must be in (0, 1], got {self.min_scale}")
        _require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        _require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}")
        _require(self.dist_timeout > 0, f"dist_timeout must be positive (seconds), got {self.dist_timeout}")
        _require(
            self.workers >= 0 and self.log_every > 0 and self.save_every >= 0 and self.keep_every >= 0,
            "workers and save_every, keep_every must be >= 0, log_every > 0",
        )

    def check_schedule(self, iters_per_epoch: int) -> None:
        """Raises :class:`InputError` (one line) for a schedule point past the schedule's end, once the data is
        counted. ``max_iters`` does not move the end: a run it stops goes on when resumed, as the schedule does."""
        end = self.epochs * iters_per_epoch
        for name, at in (
            ("dense_matching_switch", self.dense_matching_switch),
            ("lambda_warmup_iters", self.lambda_warmup_iters),
        ):
            _require(
                at < end,
                f"{name} {at} is not before the run's end at iteration {end} ({self.epochs} epochs of "
                f"{iters_per_epoch} iterations): choose a point below {end}",
            )

    def with_queues_for(self, n_images: int) -> PretrainConfig:
        """This config with ``auto`` queue lengths resolved (:func:`auto_queue_len`) for ``n_images`` images."""
        auto = auto_queue_len(n_images, self.batch_size)
        return dataclasses.replace(
            self,
            queue_len=auto if self.queue_len == AUTO else self.queue_len,
            dense_queue_len=auto if self.dense_queue_len == AUTO else self.dense_queue_len,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def auto_queue_len(n_images: int, batch_size: int) -> int:
    """``auto``: the largest multiple of the global batch below ``n_images`` (so a query rarely meets an earlier key
    of its own image among its negatives), at most the paper's 65536, at least one batch."""
    return min(PAPER_QUEUE_LEN, max(batch_size, (n_images - 1) // batch_size * batch_size))


def c5_side(crop_size: int) -> int:
    """Side of the C5 map of a ResNet for a square input: five stride-2 steps, each ``ceil(x / 2)``."""
    return stage_side(crop_size, 3)


def stage_side(side: int, stage: int) -> int:
    """Side of a ResNet's feature map at ``stage`` (0 = C2 .. 3 = C5) for an input side: the stem's
    convolution and max-pool, then one more stride-2 step per stage after C2, each ``ceil(x / 2)``."""
    for _ in range(stage + 2):
        side = math.ceil(side / 2)
    return side


def recipe_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files("densecl.configs").iterdir() if p.name.endswith(".yaml")
    )


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """Reads a recipe by name (``densecl_r50_imagenet_200ep``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"config file {path} does not exist")
        text = path.read_text()
    else:
        bundled = resources.files("densecl.configs") / f"{name_or_path}.yaml"
        if not bundled.is_file():
            raise InputError(f"unknown recipe {name_or_path!r}: give a YAML path or one of {', '.join(recipe_names())}")
        text, path = bundled.read_text(), Path(str(bundled))
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InputError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise InputError(f"config file {path} must be a flat mapping of key: value lines")
    check_keys(values, str(path))
    return values


def check_keys(values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"unknown config key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(sorted(known))}"
        )


def from_dict(values: dict[str, Any], where: str = "config") -> PretrainConfig:
    """Builds a config from a flat mapping, rejecting unknown keys and values of the wrong type."""
    check_keys(values, where)
    types = {f.name: f.type for f in dataclasses.fields(PretrainConfig)}
    return PretrainConfig(**{k: coerce(k, types[k], v, where) for k, v in values.items()})


def coerce(key: str, type_name: str, value: Any, where: str = "config") -> Any:
    """Converts a YAML or command-line value to the field's type (``"1e-4"`` -> ``1e-4``)."""
    optional = type_name.endswith("| None")
    base = type_name.removesuffix("| None").strip()
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise InputError(f"{key} in {where} needs a value of type {base}")
    try:
        if base == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base == "float":
            return float(value)
        if base == "int | str":  # an int or the word auto
            if isinstance(value, str) and value.lower() == AUTO:
                return AUTO
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        kind = "int or auto" if base == "int | str" else base
        raise InputError(f"{key} in {where} must be of type {kind}, got {value!r}") from None


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)
