"""Faster R-CNN (ResNet-FPN or ResNet-C4) and Mask R-CNN, fine-tuned: COCO AP, or VOC AP as detectron2 scores it.

Two detectors (``detector``), both from ``torchvision.models.detection``
parts, both holding the pre-trained ResNet (any arch in the registry) loaded
strictly into torchvision's ResNet (only ``fc.*`` left out), all stages
trained (detectron2's FREEZE_AT 0):

- ``fpn`` (default; the COCO tables and supplementary Table 2): an FPN on
  C2..C5 (plus the max-pool P6), standard anchors, RPN, RoI heads;
  ``task="mask"`` adds the mask head.
- ``c4`` (the paper's VOC table: MoCo's detectron2 recipe): stem to res4 as
  the trunk (stride 16), the RPN on res4, RoIAlign 14 x 14 (aligned), the
  pre-trained res5 as the box head, MoCo's extra BatchNorm after it, average
  pooling and the box predictor (:mod:`densecl.evaluation.c4`). Boxes only.

Normalisation (``norm``):

- ``syncbn`` (default, supplementary A): BatchNorm trained everywhere: in the
  backbone, the FPN and the heads (fpn: a 4-conv + 1-fc box head and a 4-conv
  mask head with BatchNorm, as in torchvision's v2 models and the MoCo/DenseCL
  detectron2 configs); in the trunk, res5 and the extra norm (c4). Converted
  to SyncBatchNorm under torchrun on CUDA; in one process it is ordinary
  BatchNorm over that process's images.
- ``bn``: the same, never synchronised.
- ``frozen``: FrozenBatchNorm in the backbone (statistics and affine fixed to
  the pre-trained values); fpn: no norm in FPN and heads (torchvision's v1
  heads); c4: FrozenBatchNorm in res5 too and no extra norm.

Data (``data``): a COCO root (``annotations/instances_<split>.json``, scored
by pycocotools' COCOeval: box AP, AP50, AP75, APs/m/l, and mask AP with
``task="mask"``), or VOC roots, comma-separated (``VOCdevkit/VOC2007,VOCdevkit/VOC2012``:
``ImageSets/Main/<split>.txt``, ``Annotations/*.xml``, ``JPEGImages/``;
:func:`densecl.formats.voc_boxes.read_voc_detection`). With VOC, training reads
``train_split`` of every root and evaluation ``val_split`` of the first, and
the score is detectron2's ``PascalVOCDetectionEvaluator``'s
(:mod:`densecl.evaluation.voc_ap`): AP (IoU 0.50:0.95), AP50, AP75 and each
class's AP50, difficult boxes counting neither way; ``voc_ap`` picks VOC07's
11-point metric or the area under the curve (``auto``: 11-point for VOC2007
data, the year the evaluated annotations' ``<folder>`` names, or, when they
name none, a root folder name containing 2007; the choice and its reason are
kept in the result).

Schedule: each detector brings its paper recipe (:mod:`densecl.evaluation.det_config`),
and a flag given always wins. ``c4``: MoCo's ``pascal_voc_R_50_C4_24k_moco``
(24000 iterations, batch 16, lr 0.02, warm-up 100, x0.1 at 18000 and 22000,
training sizes 480..800 step 32, test 800, longer side at most 1333, Precise BN
over 200 batches, weight decay 1e-4 and none on normalisation layers). ``fpn``:
the COCO 1x (90000 iterations, batch 16, lr 0.02, warm-up 1000, x0.1 at
iterations 60000 and 80000, size 800, max 1333, weight decay 1e-4 on every
parameter). The run prints the resolved recipe in one line at the start and
writes it to the result (``recipe``); with ``c4``, a backbone other than
ResNet-50 (the paper's VOC row) gets one warning line.

Training: SGD, momentum 0.9, weight decay ``weight_decay`` (and
``norm_weight_decay`` on normalisation weights and biases), ``lr`` for
``batch_size`` images over all processes, linear warm-up from 0.001x over
``warmup_iters``, x0.1 at the ``lr_steps`` fractions of ``iters``. Images are
resized by torchvision (shorter side a random choice of ``min_size`` in
training, the last value in evaluation; longer side at most ``max_size``),
normalised with the backbone's own mean and std (stored with the weights;
ImageNet's for RGB weights on photos), and flipped at random. Training drops
images without a box. Every rank builds the model with the seed, then draws
its training sizes and RPN / RoI samples with seed + rank (detectron2 seeds
ranks apart too); flips follow each sample's own seed.
``train_fraction`` < 1 keeps a fixed-seed (``subset_seed``) random subset of
the training images, recorded in the result: 0.1 is the semi-supervised
setting of supplementary Table 2. ``precise_bn_iters`` > 0 recomputes every
BatchNorm's statistics over that many further training batches before
evaluation (:mod:`densecl.evaluation.precise_bn`). Every process evaluates
its share of the val images; rank 0 scores them all. The first seed's
detector is kept as a file (``save_detector``, by default
``<out stem>.detector.pt``; :mod:`densecl.evaluation.det_file`): an ``fpn``
one loads strictly into torchvision's ``FasterRCNN`` / ``MaskRCNN``.

The parts: :mod:`~densecl.evaluation.det_config` (options and recipes),
:mod:`~densecl.evaluation.det_data` (data and samples),
:mod:`~densecl.evaluation.det_model` (the detectors),
:mod:`~densecl.evaluation.det_score` (prediction and scores),
:mod:`~densecl.evaluation.det_file` (the detector file); this module runs them.

COCO Mask R-CNN R50-FPN 1x (supplementary Table 2 adds ``--train-fraction 0.1``)::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --data coco \
        --train-split train2017 --val-split val2017 --task mask --min-size 640,672,704,736,768,800 --workers 8

VOC07+12 Faster R-CNN R50-C4 (MoCo's ``pascal_voc_R_50_C4_24k_moco``, the recipe of ``c4``; 5 trials)::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --detector c4 \
        --data VOCdevkit/VOC2007,VOCdevkit/VOC2012 --train-split trainval --val-split test --seeds 5 --workers 8
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from pathlib import Path

import torch
from torch import nn

from densecl import distributed
from densecl.errors import InputError
from densecl.evaluation.datasets import VocDetectionSplit
from densecl.evaluation.det_config import PAPER_ARCH, DetConfig, recipe_line, recipe_record
from densecl.evaluation.det_data import Split, load_data, sample_loader, to_device
from densecl.evaluation.det_file import save_detector
from densecl.evaluation.det_model import build_detector, param_groups
from densecl.evaluation.det_score import validate
from densecl.evaluation.finetune import BatchStream, FinetuneCheckpoints, LossWatch, prepare_model, unwrap
from densecl.evaluation.precise_bn import precise_bn
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn
from densecl.inputs import input_of
from densecl.models.backbones import ResNetBackbone
from densecl.schedules import warmup_step_lr
from densecl.seeding import rank_seed, seed_everything


def evaluate(backbone: ResNetBackbone, data: tuple[Split, Split], config: DetConfig, seeds: list[int]) -> Evaluation:
    train, val = data
    arch = _arch_of(backbone)
    if distributed.rank() == 0:
        print(recipe_line(config), flush=True)
        if config.detector == "c4" and arch != PAPER_ARCH:
            warn(
                f"the c4 recipe is the paper's ResNet-50 VOC row; this backbone is {arch}, so its numbers do not "
                "compare with the paper's"
            )
    per_seed, details, resumed_from = [], [], {}
    for seed in seeds:
        seed_everything(seed)
        model = build_detector(copy.deepcopy(backbone), arch, train.num_classes, config)
        model = prepare_model(model, config.device, config.norm == "syncbn")
        resumed = _train(model, train, config, seed)
        if resumed is not None:
            resumed_from[seed] = resumed
        if config.precise_bn_iters:
            _precise_bn(model, train, config, seed)
        # every rank evaluates a share with rank 0's model: without SyncBN the BatchNorm statistics are rank-local
        distributed.broadcast_state(unwrap(model))
        if seed == seeds[0]:
            _keep_detector(unwrap(model), train.classes, config, seed)
        scored = validate(unwrap(model), val, config)
        if scored is not None:  # rank 0
            per_seed.append(scored.metrics)
            if scored.details:
                details.append(scored.details)
        distributed.barrier()
    voc = isinstance(val, VocDetectionSplit)
    if voc:
        headline = ["bbox_AP", "bbox_AP50", "bbox_AP75"]  # the paper's VOC columns
    else:
        headline = ["bbox_AP", "segm_AP"] if config.task == "mask" else ["bbox_AP"]
    data_info = {
        "root": str(config.data),
        "layout": "voc" if voc else "coco",
        "train_split": config.train_split,
        "val_split": config.val_split,
        "n_train": len(train),
        "n_val": len(val),
        "classes": list(train.classes),
        "train_fraction": config.train_fraction,
        "subset_seed": config.subset_seed,
        "train_image_ids": train.image_ids if config.train_fraction < 1 else "all with annotations",
        "world_size": distributed.world_size(),
    }
    return Evaluation(
        headline=headline,
        per_seed=per_seed,
        details=details,
        data=data_info,
        resumed_from=resumed_from,
        recipe=recipe_record(config),
    )


def _arch_of(backbone: ResNetBackbone) -> str:
    from densecl.weights import guess_arch

    if not isinstance(backbone, ResNetBackbone):
        raise InputError(
            "det builds torchvision's R-FPN and R-C4 detectors, which take a torchvision ResNet; this backbone is a "
            "timm model: evaluate it with a frozen protocol (knn, linear, seg-probe, correspondence, ...)"
        )

    arch = guess_arch(backbone.state_dict())
    if arch is None:
        raise ValueError("the backbone matches no registered architecture")
    return arch


def seed_training(seed: int) -> None:
    """Seeds this rank's training-time draws (the random image size, RPN and RoI sampling) with seed + rank.

    The model was built with ``seed`` on every rank (the same initial weights);
    from here each rank draws its own sizes and samples, as detectron2's ranks do.
    """
    seed_everything(rank_seed(seed, distributed.rank()))


def _train(model: nn.Module, split: Split, config: DetConfig, seed: int) -> int | None:
    """Fine-tunes ``model`` for ``config.iters`` iterations; returns the step it resumed at (None: from the start)."""
    optimizer = torch.optim.SGD(
        param_groups(model, config.weight_decay, config.norm_weight_decay), lr=config.lr, momentum=0.9
    )
    checkpoints = FinetuneCheckpoints(
        config.checkpoint_dir, config.save_every, "det", seed, config.iters, dataclasses.asdict(config)
    )
    first = checkpoints.restore(model, optimizer)
    seed_training(seed)  # a resumed run then restores this rank's saved RNG state (checkpoints.batches)
    loader = sample_loader(
        split,
        config,
        BatchStream(len(split), config.batch_size, config.iters, seed, start=first),
        input_of(unwrap(model)),
    )
    batches = checkpoints.batches(loader)
    watch = LossWatch("det", "lower --lr or raise --warmup-iters", config.device, config.log_every, checkpoints)
    model.train()
    start = time.perf_counter()
    for step, batch in enumerate(batches, start=first):
        for group in optimizer.param_groups:
            group["lr"] = warmup_step_lr(step, config.iters, config.lr, config.warmup_iters, config.lr_steps)
        images, targets = to_device(batch, config.device)
        losses = model(images, targets)  # dict of scalar losses
        loss = sum(losses.values())
        watch.optimise(loss, optimizer, step, config.iters, start, functools.partial(_parts, losses))
        checkpoints.maybe_save(step + 1, model, optimizer)
    return checkpoints.resumed_from


def _parts(losses: dict[str, torch.Tensor]) -> str:
    """`` (loss_classifier 0.123 ...)``: the loss's parts, for a progress line (reads them from the device)."""
    return " (" + " ".join(f"{k} {v.item():.3f}" for k, v in losses.items()) + ")"


def _keep_detector(model: nn.Module, classes: tuple[str, ...], config: DetConfig, seed: int) -> None:
    """Writes the detector file (rank 0), unless a resumed run's first seed already wrote it."""
    path = Path(config.save_detector) if config.save_detector else None
    if path is not None and distributed.rank() == 0 and not path.exists():
        save_detector(path, model, classes, seed, config.iters)
        print(f"det: the fine-tuned detector (seed {seed}) is in {path}", flush=True)


def _precise_bn(model: nn.Module, split: Split, config: DetConfig, seed: int) -> None:
    """BatchNorm statistics over the ``precise_bn_iters`` batches that follow the training stream.

    Every process runs them (SyncBatchNorm averages over all); a resumed run
    draws the same batches and the same random choices, so it ends as an
    uninterrupted one does.
    """
    total = config.iters + config.precise_bn_iters
    stream = BatchStream(len(split), config.batch_size, total, seed, start=config.iters)
    start = time.perf_counter()
    n = precise_bn(
        unwrap(model),
        sample_loader(split, config, stream, input_of(unwrap(model))),
        lambda m, batch: m(*to_device(batch, config.device)),
    )
    if distributed.rank() == 0 and not n:
        warn("--precise-bn-iters: the model has no trained BatchNorm (--norm frozen), nothing to recompute")
    elif distributed.rank() == 0 and config.log_every:
        print(
            f"det: BatchNorm statistics recomputed over {n} batches ({time.perf_counter() - start:.0f} s)", flush=True
        )


PROTOCOL = Protocol("det", DetConfig, load_data, evaluate, description=__doc__, torchrun=True)
