"""``densecl eval <protocol>``: transfer evaluation of pre-trained backbone weights.

Every protocol takes ``--weights`` (a checkpoint in any layout
:mod:`densecl.weights` reads, or ``random``) and ``--arch``, writes one JSON
result (metrics, config, weights sha256, seeds, data split, wall time) to
``--out`` (default ``<run dir>/eval/<protocol>_<data dir name>.json``, the
run dir being the weights file's folder, or ``runs/random-<arch>``), and
prints a table. ``--seeds N`` repeats with seeds ``seed .. seed+N-1`` and
reports mean and standard deviation. ``densecl eval summary A.json B.json``
prints one row per weights.

Fine-tuning protocols (``seg-finetune``, ``det``) run under torchrun::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --data coco ...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from types import ModuleType

from densecl.errors import InputError

# protocol -> (module under densecl.evaluation, config class name, one-line help)
PROTOCOLS: dict[str, tuple[str, str, str]] = {
    "svm": ("svm", "SVMConfig", "VOC07 SVM on frozen pooled features (mAP; supplementary Table 1)"),
    "knn": ("knn", "KNNConfig", "weighted kNN on frozen pooled features (top-1)"),
    "linear": ("linear", "LinearConfig", "linear classifier on frozen pooled features (top-1)"),
    "seg-probe": ("seg_probe", "SegProbeConfig", "1x1-conv segmentation probe on frozen dense features (mIoU)"),
    "seg-finetune": ("seg_finetune", "SegFinetuneConfig", "FCN fine-tuning, all layers (mIoU; VOC / Cityscapes)"),
    "det": ("det", "DetConfig", "Faster / Mask R-CNN R-FPN fine-tuning (COCO AP; supplementary Table 2)"),
}
FINETUNE = ("seg-finetune", "det")

# help for the config fields (flags are the field names with dashes; defaults come from the dataclasses)
FIELD_HELP = {
    "train_split": "split to train on (file or folder name, e.g. trainval, train2017)",
    "val_split": "split to evaluate on (e.g. test, val2017)",
    "stage": "backbone stage to pool: c2, c3, c4 or c5",
    "stages": "stage(s) to read: c5, or c4,c5 (C5 upsampled to C4 and concatenated)",
    "image_size": "resize the shorter side (and centre-crop for image-level protocols); 0 keeps images as they are",
    "costs": "SVM costs C to cross-validate",
    "cv_folds": "cross-validation folds for choosing C",
    "positive_weight": "SVM class weight of positives",
    "ap": "AP variant: area (VOC 2010+, full interpolated PR curve) or 11point (VOC07)",
    "batch_size": "images per batch (fine-tuning: over all processes)",
    "extract_batch_size": "images per batch for feature extraction",
    "workers": "data-loading worker processes (0: load in the main process)",
    "k": "neighbours",
    "temperature": "vote weight exp(similarity / temperature)",
    "epochs": "passes over the stored features",
    "lr": "base learning rate",
    "weight_decay": "weight decay",
    "num_classes": "classes including background (default: classes.txt, else the 21 VOC classes)",
    "label_dir": "folder of label PNGs under --data (SegmentationClassAug for VOC train_aug)",
    "output_stride": "backbone output stride: 8 (dilated layer3+4), 16 (dilated layer4) or 32 (none)",
    "crop": "training crop side in pixels",
    "scale_min": "smallest random rescale factor",
    "scale_max": "largest random rescale factor",
    "iters": "training iterations",
    "poly_power": "poly learning-rate power",
    "min_lr": "poly learning-rate floor",
    "dropout": "dropout before the classifier",
    "sync_bn": "SyncBatchNorm under torchrun (CUDA)",
    "log_every": "print the loss every N iterations (0: never)",
    "task": "box (Faster R-CNN) or mask (Mask R-CNN)",
    "norm": "syncbn / bn: BatchNorm trained in backbone, FPN and heads; frozen: FrozenBN backbone",
    "train_fraction": "fraction of training images to use (0.1: supplementary Table 2's semi-supervised setting)",
    "subset_seed": "seed of the --train-fraction subset (fixed across runs)",
    "warmup_iters": "linear warm-up iterations",
    "lr_steps": "fractions of --iters where the learning rate drops x0.1",
    "min_size": "shorter image side; several values: a random choice per training image, the last for evaluation",
    "max_size": "longer image side at most",
    "proposals": "RPN proposals kept per image after NMS, in training and evaluation",
    "rois_per_image": "RoIs sampled per training image for the box head",
    "detections_per_image": "detections kept per image in evaluation",
}
FIELD_CHOICES = {"ap": ("area", "11point"), "task": ("box", "mask"), "norm": ("syncbn", "bn", "frozen")}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate backbone weights: svm, knn, linear, seg-probe, seg-finetune, det; summary",
        description=__doc__.split("\n\n")[1],
    )
    protocols = parser.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, (module_name, config_name, help_text) in PROTOCOLS.items():
        module = _module(module_name)
        p = protocols.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).split("\n\n")[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        _common_options(p)
        _config_options(p, getattr(module, config_name))
        p.set_defaults(func=run)
    s = protocols.add_parser("summary", help="print one row per weights from result JSON files")
    s.add_argument("results", nargs="+", type=Path, help="result files written by densecl eval")
    s.set_defaults(func=run_summary)


def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"densecl.evaluation.{name}")


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint file (any supported layout) or 'random'")
    p.add_argument("--arch", default=None, help="backbone name; required with --weights random, else read from the file")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: <run dir>/eval/<protocol>_<data>.json)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...); mean and std reported")


def _config_options(p: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per config field, ``--name-with-dashes``, default from the dataclass."""
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = FIELD_HELP.get(field.name, "")
        if field.name in FIELD_CHOICES:
            p.add_argument(flag, choices=FIELD_CHOICES[field.name], default=field.default, help=help_text)
        elif field.name == "data":
            p.add_argument(flag, required=True, help="dataset root directory (see densecl.evaluation.datasets)")
        elif field.name == "device":
            p.add_argument(flag, default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
        elif field.type in ("bool",):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
        elif field.type.startswith("tuple"):
            p.add_argument(flag, type=_number_tuple, default=field.default, help=help_text + " (comma-separated)")
        else:
            p.add_argument(flag, type=_scalar_type(field.type), default=field.default, help=help_text)


def _scalar_type(annotation: str):
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def _number_tuple(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) if any(c in v for c in ".e") else int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _device(requested: str, local_rank: int) -> str:
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        requested = f"cuda:{local_rank}"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {requested} asked for, but this machine has no CUDA GPU; pass --device cpu")
    return requested


def default_out(weights: str, arch: str | None, protocol: str, data: str) -> Path:
    run_dir = Path("runs") / f"random-{arch}" if weights == "random" else Path(weights).parent
    return run_dir / "eval" / f"{protocol}_{Path(data).resolve().name}.json"


def run(args: argparse.Namespace) -> int:
    import torch

    from densecl import distributed
    from densecl.evaluation import results
    from densecl.evaluation.backbone import load_weights

    module_name, config_name, _ = PROTOCOLS[args.protocol]
    module = _module(module_name)
    config_cls = getattr(module, config_name)
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(range(args.seed, args.seed + args.seeds))

    requested = args.device
    device_type = "cuda" if requested.startswith("cuda") or (requested == "auto" and _cuda()) else "cpu"
    if args.protocol in FINETUNE:
        dist = distributed.setup(device_type)
    elif _torchrun_world() > 1:
        raise InputError(f"{args.protocol} runs in one process; start it without torchrun")
    else:
        dist = distributed.DistInfo(0, 1, 0)
    try:
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
        values["device"] = _device(requested, dist.local_rank)
        config = config_cls(**values)
        start = time.perf_counter()
        data = module.load_data(config)  # bad data fails here, before any model is built
        torch.manual_seed(args.seed)  # --weights random: the same initialisation for a seed
        backbone, weights_info = load_weights(args.weights, args.arch)
        evaluation = module.evaluate(backbone, data, config, seeds)
        wall = time.perf_counter() - start
        if dist.is_main:
            record = results.build_record(
                args.protocol, evaluation, dataclasses.asdict(config), weights_info, seeds, wall
            )
            out = args.out or default_out(args.weights, weights_info["arch"], args.protocol, config.data)
            results.write_record(out, record)
            print(results.protocol_table(record))
            print(f"wrote {out} ({wall:.1f} s)")
    finally:
        if args.protocol in FINETUNE:
            distributed.teardown()
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from densecl.evaluation import results

    records = [results.read_record(path) for path in args.results]
    print(results.summary_table(records))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _torchrun_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))

