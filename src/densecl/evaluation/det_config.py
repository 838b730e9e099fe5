"""What a ``densecl eval det`` run computes: its options, and each detector's recipe that fills those not given.

A detector names a published recipe (:data:`RECIPES`): ``fpn`` the COCO
R50-FPN 1x schedule, ``c4`` MoCo's VOC schedule (detectron2's
``pascal_voc_R_50_C4_24k_moco``). The schedule options of :class:`DetConfig`
(:data:`RECIPE_FIELDS`) default to None, "the recipe's", and are filled from
the chosen detector's recipe when the config is made; a value given (a flag)
always wins. :func:`recipe_line` states the result in one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.options import option
from densecl.evaluation.voc_ap import METRICS as VOC_METRICS

TASKS = ("box", "mask")
DETECTORS = ("fpn", "c4")
NORMS = ("syncbn", "bn", "frozen")
PAPER_ARCH = "resnet50"  # the backbone of the paper's detection rows


@dataclass(frozen=True)
class Recipe:
    """A detector's published schedule: the values :class:`DetConfig` takes where none is given.

    ``norm_weight_decay`` None: the same as ``weight_decay`` (one decay for every parameter).
    """

    name: str
    iters: int
    batch_size: int
    lr: float
    warmup_iters: int
    lr_steps: tuple[float, ...]
    min_size: tuple[int, ...]
    max_size: int
    precise_bn_iters: int
    weight_decay: float
    norm_weight_decay: float | None


RECIPES: dict[str, Recipe] = {
    "fpn": Recipe(
        name="COCO R50-FPN 1x, detectron2's Base-RCNN-FPN schedule",
        iters=90000,
        batch_size=16,
        lr=0.02,
        warmup_iters=1000,
        lr_steps=(2 / 3, 8 / 9),  # 60000 and 80000 of 90000, exactly
        min_size=(800,),
        max_size=1333,
        precise_bn_iters=0,
        weight_decay=1e-4,
        norm_weight_decay=None,
    ),
    "c4": Recipe(
        name="MoCo's pascal_voc_R_50_C4_24k_moco",
        iters=24000,
        batch_size=16,
        lr=0.02,
        warmup_iters=100,
        lr_steps=(0.75, 0.916667),  # 18000 and 22000 of 24000
        min_size=tuple(range(480, 801, 32)),  # 480, 512, ..., 800; the test size is the last, 800
        max_size=1333,
        precise_bn_iters=200,
        weight_decay=1e-4,
        norm_weight_decay=0.0,  # detectron2's WEIGHT_DECAY_NORM
    ),
}
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "name")
"""The options a recipe fills, in the order they are filled (``norm_weight_decay`` may follow ``weight_decay``)."""


def _sizes(sizes: tuple[int, ...]) -> str:
    """``480..800 step 32`` for evenly spaced sizes, else the comma list."""
    steps = {b - a for a, b in zip(sizes, sizes[1:])}
    if len(sizes) > 2 and len(steps) == 1:
        return f"{sizes[0]}..{sizes[-1]} step {steps.pop()}"
    return ",".join(map(str, sizes))


def recipe_option(name: str, help: str) -> object:
    """A schedule option: None until the detector's recipe fills it; the help names each recipe's value."""
    values = ", ".join(f"{d} {_show(getattr(r, name), name)}" for d, r in RECIPES.items())
    return option(None, f"{help} (default: the --detector's recipe: {values})")


def _show(value: object, name: str = "") -> str:
    if value is None:
        return "as --weight-decay" if name == "norm_weight_decay" else "none"
    if name == "min_size":
        return _sizes(value)
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class DetConfig:
    """The options of ``densecl eval det``; the schedule ones (:data:`RECIPE_FIELDS`) hold the detector's recipe
    wherever None was given, once the config is made."""

    data: str = option(
        help="COCO root (annotations/instances_<split>.json), or VOC roots, comma-separated "
        "(VOCdevkit/VOC2007,VOCdevkit/VOC2012): --train-split of every root is trained on, --val-split of the "
        "first evaluated"
    )
    train_split: str = options.train_split()
    val_split: str = options.val_split()
    detector: str = option(
        "fpn",
        "fpn: ResNet-FPN (the COCO recipes); c4: ResNet-C4, res5 as the box head (the VOC recipe, MoCo's detectron2 "
        "R50-C4)",
        choices=DETECTORS,
    )
    task: str = option("box", "box (Faster R-CNN) or mask (Mask R-CNN; fpn and COCO only)", choices=TASKS)
    norm: str = option(
        "syncbn",
        "syncbn / bn: BatchNorm trained everywhere (fpn: backbone, FPN, heads; c4: trunk, res5, the extra norm), "
        "synchronised under torchrun with syncbn; frozen: FrozenBN backbone",
        choices=NORMS,
    )
    train_fraction: float = option(
        1.0, "fraction of training images to use (0.1: supplementary Table 2's semi-supervised setting)"
    )
    subset_seed: int = option(0, "seed of the --train-fraction subset (fixed across runs)")
    iters: int | None = recipe_option("iters", "training iterations")
    batch_size: int | None = recipe_option("batch_size", "images per batch over all processes")
    lr: float | None = recipe_option("lr", "base learning rate")
    weight_decay: float | None = recipe_option("weight_decay", "weight decay")
    norm_weight_decay: float | None = recipe_option(
        "norm_weight_decay", "weight decay of normalisation layers' weights and biases"
    )
    warmup_iters: int | None = recipe_option("warmup_iters", "linear warm-up iterations")
    lr_steps: tuple[float, ...] | None = recipe_option(
        "lr_steps", "fractions of --iters where the learning rate drops x0.1"
    )
    min_size: tuple[int, ...] | None = recipe_option(
        "min_size", "shorter image side; several values: a random choice per training image, the last for evaluation"
    )
    max_size: int | None = recipe_option("max_size", "longer image side at most")
    proposals: int = option(
        0,
        "RPN proposals kept per image after NMS, in training and evaluation; 0: the detector's own (fpn 1000; c4 "
        "2000 in training, 1000 in evaluation)",
    )
    rois_per_image: int = option(512, "RoIs sampled per training image for the box head")
    detections_per_image: int = option(100, "detections kept per image in evaluation")  # COCO scores at most 100
    precise_bn_iters: int | None = recipe_option(
        "precise_bn_iters",
        "before evaluation, set every BatchNorm's statistics to their mean over N further training batches "
        "(detectron2's TEST.PRECISE_BN); 0: keep the running ones",
    )
    voc_ap: str = option(
        "auto",
        "VOC data: 11point (VOC07's metric) or area (under the whole curve); auto: 11point when the evaluated "
        "annotations say VOC2007 (<folder>), area for another year; only when they name none, 11point when the "
        "root's folder name contains 2007",
        choices=("auto", *VOC_METRICS),
    )
    workers: int = options.workers()
    log_every: int = options.log_every(20)
    device: str = options.device()
    save_every: int = options.save_every()
    resume: bool = options.resume()
    checkpoint_dir: str = options.checkpoint_dir()
    dist_timeout: int = options.dist_timeout()
    save_detector: str = option(
        "",
        "write the first seed's fine-tuned detector here (state dict, classes, sizes, mean and std: "
        "densecl.evaluation.det_file; default: next to --out, <out stem>.detector.pt); an existing file is never "
        "replaced (--overwrite moves it aside)",
    )

    def __post_init__(self) -> None:
        """Fills every schedule option left None from the detector's recipe."""
        if self.detector not in RECIPES:
            raise InputError(f"--detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        recipe = RECIPES[self.detector]
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                value = getattr(recipe, name)
                if name == "norm_weight_decay" and value is None:
                    value = self.weight_decay
                object.__setattr__(self, name, value)  # frozen: set once, while the config is made
        object.__setattr__(self, "lr_steps", tuple(self.lr_steps))
        object.__setattr__(self, "min_size", tuple(self.min_size))
        if not self.min_size:
            raise InputError("--min-size is empty; give at least one image size")


def lr_drops(config: DetConfig) -> list[int]:
    """The iterations where the learning rate drops x0.1 (as :func:`densecl.schedules.warmup_step_lr` rounds)."""
    return [round(f * config.iters) for f in config.lr_steps]


def changed_from_recipe(config: DetConfig) -> dict[str, dict]:
    """``{option: {"given": value, "recipe": value}}`` for each schedule option that differs from the recipe's."""
    recipe = RECIPES[config.detector]
    out = {}
    for name in RECIPE_FIELDS:
        expected = getattr(recipe, name)
        if name == "norm_weight_decay" and expected is None:
            expected = config.weight_decay
        if getattr(config, name) != expected:
            out[name] = {"given": getattr(config, name), "recipe": expected}
    return out


def recipe_line(config: DetConfig) -> str:
    """The schedule a run follows, in one line: the recipe's name, every value, and what was given instead."""
    sizes = config.min_size
    drops = " and ".join(map(str, lr_drops(config))) or "never"
    line = (
        f"det recipe {config.detector} ({RECIPES[config.detector].name}): {config.iters} iterations, batch "
        f"{config.batch_size}, lr {config.lr:g}, warm-up {config.warmup_iters}, lr x0.1 at {drops}, training "
        f"sizes {_sizes(sizes)}, test size {sizes[-1]}, max size {config.max_size}, Precise BN "
        f"{config.precise_bn_iters}, weight decay {config.weight_decay:g} (norm layers {config.norm_weight_decay:g})"
    )
    changed = changed_from_recipe(config)
    if changed:
        given = ", ".join(f"{k} {_show(v['given'], k)} (recipe {_show(v['recipe'], k)})" for k, v in changed.items())
        line += f"; given instead: {given}"
    return line


def recipe_record(config: DetConfig) -> dict:
    """What a result file keeps of the recipe: its name, the drops in iterations, what was given instead."""
    return {
        "detector": config.detector,
        "name": RECIPES[config.detector].name,
        "lr_drops_at": lr_drops(config),
        "train_sizes": list(config.min_size),
        "test_size": config.min_size[-1],
        "changed": changed_from_recipe(config),
        "line": recipe_line(config),
    }
