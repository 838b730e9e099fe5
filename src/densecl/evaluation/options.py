"""Config fields that carry their own command-line help, and the fields several protocols share.

A protocol's config dataclass is its command line: ``densecl eval`` turns
every field into ``--field-name`` with the field's default, and reads the
help, the choices and a CLI-only default from the field's metadata (see
:func:`option`). Fields that mean the same in several protocols are made here
once, so their help is written once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from densecl.config import DEFAULT_TIMEOUT_S


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple | None = None,
    default_factory: Callable[[], Any] | None = None,
    cli_default: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its ``--help`` text and, optionally, its ``choices``.

    Args:
        default: the library default (and the CLI's, unless ``cli_default``);
            none makes the field, and the flag, required.
        default_factory: instead of ``default``, computed when a config is built.
        cli_default: a different default for the command line only (``device``:
            ``auto`` there, ``cpu`` for library callers).
    """
    metadata = {"help": help, "choices": choices}
    if cli_default is not dataclasses.MISSING:
        metadata["cli_default"] = cli_default
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def default_workers() -> int:
    """Data-loading worker processes when ``--workers`` is not given: the cores there are, less one, at most 4.

    The main process (the forward and backward passes, or the probe) keeps one
    core; more workers than the remaining cores only take turns on them (four on
    a two-core machine made loading slower, not faster). Four was the old fixed
    default and feeds small images to one GPU; bigger runs pass ``--workers``.
    Cores are those this process may run on (``taskset`` and cgroup cpusets count).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


# --------------------------------------------------------------------------- fields every protocol has


def data() -> Any:
    return option(help="dataset root directory (see densecl.evaluation.datasets)")


def train_split(default: str = "train") -> Any:
    return option(default, "split to train on (file or folder name, e.g. trainval, train2017)")


def val_split(default: str = "val") -> Any:
    return option(default, "split to evaluate on (e.g. test, val2017)")


def device() -> Any:
    return option("cpu", "cpu, cuda, cuda:N or auto (cuda when available)", cli_default="auto")


# --------------------------------------------------------------------------- fields several protocols have


def workers() -> Any:
    return option(help="data-loading worker processes (0: load in the main process)", default_factory=default_workers)


def batch_size(default: int) -> Any:
    return option(default, "images per batch (fine-tuning: over all processes)")


def image_size(default: int) -> Any:
    return option(
        default, "resize the shorter side (and centre-crop for image-level protocols); 0 keeps images as they are"
    )


def stage() -> Any:
    return option("c5", "backbone stage to pool: c2, c3, c4 or c5")


def epochs(default: int) -> Any:
    return option(default, "passes over the stored features")


def lr(default: float) -> Any:
    return option(default, "base learning rate")


def weight_decay(default: float) -> Any:
    return option(default, "weight decay")


def iters(default: int) -> Any:
    return option(default, "training iterations")


def log_every(default: int) -> Any:
    return option(default, "print the loss every N iterations (0: never)")


def num_classes() -> Any:
    return option(
        None,
        "label values 0..N-1, the background included (default: the lines of classes.txt, its background line "
        "included, else VOC's 21)",
    )


def label_dir() -> Any:
    return option("SegmentationClass", "folder of label PNGs under --data (SegmentationClassAug for VOC train_aug)")


# --------------------------------------------------------------------------- fine-tuning runs that survive a crash


def save_every(default: int = 1000) -> Any:
    return option(
        default,
        "write a checkpoint (model, optimizer, step, RNG; atomic) every N iterations and at the end; 0: only at "
        "the end",
    )


def resume() -> Any:
    return option(
        False,
        "continue each seed from its checkpoint in --checkpoint-dir where there is one, start it where not: "
        "the same command serves the first start and every restart (torchrun --max-restarts, a requeue)",
    )


def checkpoint_dir() -> Any:
    return option(
        "", "folder of the fine-tuning checkpoints, one file per seed (default: next to --out, <out>-checkpoints)"
    )


def dist_timeout() -> Any:
    return option(
        DEFAULT_TIMEOUT_S,
        "seconds a collective waits for the other ranks before failing (torchrun), so a dead rank stops the group",
    )


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """The fields every frozen-feature classification protocol (knn, linear, svm) starts with."""

    data: str = data()
    train_split: str = train_split()
    val_split: str = val_split()
    stage: str = stage()
    image_size: int = image_size(224)


@dataclasses.dataclass(frozen=True)
class SegmentationData:
    """The fields every segmentation protocol (seg-probe, seg-finetune, dense-nn, overcluster) starts with."""

    data: str = data()
    train_split: str = train_split()
    val_split: str = val_split()
    num_classes: int | None = num_classes()
    label_dir: str = label_dir()
