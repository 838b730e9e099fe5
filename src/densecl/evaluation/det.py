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
11-point metric or the area under the curve (``auto``: 11-point when the
evaluated root's folder name contains 2007, as detectron2 decides).

Training: SGD, momentum 0.9, weight decay ``weight_decay`` (and
``norm_weight_decay`` on normalisation weights and biases: detectron2's
WEIGHT_DECAY_NORM is 0), ``lr`` for ``batch_size`` images over all processes
(0.02 for 16), linear warm-up from 0.001x over ``warmup_iters``, x0.1 at the
``lr_steps`` fractions of ``iters``. Images are resized by torchvision
(shorter side a random choice of ``min_size`` in training, the last value in
evaluation; longer side at most ``max_size``), normalised with ImageNet's RGB
mean and std, and flipped at random. Training drops images without a box.
``train_fraction`` < 1 keeps a fixed-seed (``subset_seed``) random subset of
the training images, recorded in the result: 0.1 is the semi-supervised
setting of supplementary Table 2. ``precise_bn_iters`` > 0 recomputes every
BatchNorm's statistics over that many further training batches before
evaluation (:mod:`densecl.evaluation.precise_bn`). Every process evaluates
its share of the val images; rank 0 scores them all.

COCO Mask R-CNN R50-FPN 1x (supplementary Table 2 adds ``--train-fraction 0.1``)::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --data coco \
        --train-split train2017 --val-split val2017 --task mask \
        --iters 90000 --batch-size 16 --lr 0.02 --min-size 640,672,704,736,768,800 --workers 8

VOC07+12 Faster R-CNN R50-C4 (MoCo's ``pascal_voc_R_50_C4_24k_moco``; 5 trials)::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --detector c4 \
        --data VOCdevkit/VOC2007,VOCdevkit/VOC2012 --train-split trainval --val-split test \
        --iters 24000 --batch-size 16 --lr 0.02 --lr-steps 0.75,0.916667 --warmup-iters 100 \
        --norm-weight-decay 0 --precise-bn-iters 200 --seeds 5 --workers 8 \
        --min-size 480,512,544,576,608,640,672,704,736,768,800 --max-size 1333
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms import v2

from densecl import distributed
from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.c4 import RPN_POST_NMS, build_c4_detector
from densecl.evaluation.datasets import CocoSplit, VocDetectionSplit, read_coco, read_voc_detection, subset
from densecl.evaluation.finetune import (
    BatchStream,
    FinetuneCheckpoints,
    LossWatch,
    prepare_model,
    unwrap,
)
from densecl.evaluation.metrics import coco_average_precision
from densecl.evaluation.options import option
from densecl.evaluation.precise_bn import precise_bn
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn
from densecl.evaluation.voc_ap import METRICS as VOC_METRICS
from densecl.evaluation.voc_ap import Detections, Truth, voc_detection_ap
from densecl.inputs import InputSpec, input_of
from densecl.models.backbones import ResNetBackbone, first_conv, torchvision_classifier
from densecl.schedules import warmup_step_lr
from densecl.seeding import seed_everything

TASKS = ("box", "mask")
DETECTORS = ("fpn", "c4")
EVAL_BATCH = 4  # images per forward in evaluation
NORMS = ("syncbn", "bn", "frozen")
FPN_PROPOSALS = 1000  # per image after NMS, training and evaluation (detectron2's FPN configs)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # what norm_weight_decay covers


@dataclass(frozen=True)
class DetConfig:
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
    iters: int = options.iters(90000)
    batch_size: int = options.batch_size(16)
    lr: float = options.lr(0.02)
    weight_decay: float = options.weight_decay(1e-4)
    norm_weight_decay: float | None = option(
        None, "weight decay of normalisation weights and biases (default: --weight-decay; detectron2's recipes: 0)"
    )
    warmup_iters: int = option(1000, "linear warm-up iterations")
    lr_steps: tuple[float, ...] = option((0.6667, 0.8889), "fractions of --iters where the learning rate drops x0.1")
    min_size: tuple[int, ...] = option(
        (800,), "shorter image side; several values: a random choice per training image, the last for evaluation"
    )
    max_size: int = option(1333, "longer image side at most")
    proposals: int = option(
        0,
        "RPN proposals kept per image after NMS, in training and evaluation; 0: the detector's own (fpn 1000; c4 "
        "2000 in training, 1000 in evaluation)",
    )
    rois_per_image: int = option(512, "RoIs sampled per training image for the box head")
    detections_per_image: int = option(100, "detections kept per image in evaluation")  # COCO scores at most 100
    precise_bn_iters: int = option(
        0,
        "before evaluation, set every BatchNorm's statistics to their mean over N further training batches "
        "(detectron2's TEST.PRECISE_BN; the VOC recipe: 200); 0: keep the running ones",
    )
    voc_ap: str = option(
        "auto",
        "VOC data: 11point (VOC07's metric) or area (under the whole curve); auto: 11point when the evaluated "
        "root's folder name contains 2007, as detectron2 decides",
        choices=("auto", *VOC_METRICS),
    )
    workers: int = options.workers()
    log_every: int = options.log_every(20)
    device: str = options.device()
    save_every: int = options.save_every()
    resume: bool = options.resume()
    checkpoint_dir: str = options.checkpoint_dir()
    dist_timeout: int = options.dist_timeout()


Split = CocoSplit | VocDetectionSplit


def load_data(config: DetConfig) -> tuple[Split, Split]:
    for name, value, allowed in (("task", config.task, TASKS), ("norm", config.norm, NORMS)):
        if value not in allowed:
            raise InputError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
    if config.detector not in DETECTORS:
        raise InputError(f"--detector must be one of {', '.join(DETECTORS)}, got {config.detector!r}")
    if config.detector == "c4" and config.task == "mask":
        raise InputError("--detector c4 has no mask head: use --task box, or --detector fpn for masks")
    if config.precise_bn_iters < 0:
        raise InputError(f"--precise-bn-iters must be >= 0, got {config.precise_bn_iters}")
    roots = [Path(p.strip()) for p in config.data.split(",") if p.strip()]
    if is_voc(roots):
        if config.task == "mask":
            raise InputError(f"VOC data ({roots[0]}) has boxes, no instance masks: use --task box, or COCO data")
        train = read_voc_detection(roots, config.train_split, drop_empty=True)
        val = read_voc_detection(roots[:1], config.val_split)
        return train.select(subset(len(train), config.train_fraction, config.subset_seed)), val
    if len(roots) != 1:
        raise InputError(
            f"--data {config.data}: several roots are read in the VOC layout only (ImageSets/Main/<split>.txt, "
            "Annotations/); give one COCO root"
        )
    train = read_coco(roots[0], config.train_split, drop_empty=True)
    val = read_coco(roots[0], config.val_split, drop_empty=False)
    if train.category_ids != val.category_ids:
        raise InputError(f"{train.annotation_file} and {val.annotation_file} define different categories")
    keep = subset(len(train), config.train_fraction, config.subset_seed)
    train.image_ids = [train.image_ids[i] for i in keep]
    return train, val


def is_voc(roots: list[Path]) -> bool:
    """The VOC layout (``ImageSets/Main``) rather than COCO's (``annotations/``), told by the first root."""
    return bool(roots) and (roots[0] / "ImageSets" / "Main").is_dir()


def rpn_proposals(config: DetConfig) -> tuple[int, int]:
    """Proposals kept after NMS per image, (training, evaluation): ``proposals`` or the detector's own."""
    if config.proposals:
        return config.proposals, config.proposals
    if config.detector == "c4":
        return RPN_POST_NMS["training"], RPN_POST_NMS["testing"]
    return FPN_PROPOSALS, FPN_PROPOSALS


def build_detector(backbone: ResNetBackbone, arch: str, num_classes: int, config: DetConfig) -> nn.Module:
    """A torchvision Faster / Mask R-CNN whose ResNet holds ``backbone``'s weights.

    Args:
        num_classes: object classes, background not counted.
        config: ``detector``, ``task``, ``norm``, ``min_size``, ``max_size``,
            ``proposals``, ``rois_per_image`` and ``detections_per_image`` are read.
    """
    task, norm = config.task, config.norm
    resnet = torchvision_classifier(arch)
    if backbone.in_channels != resnet.conv1.in_channels:
        resnet.conv1 = first_conv(resnet.conv1, backbone.in_channels)
    load_trunk(resnet, backbone.state_dict())
    inputs = input_of(backbone)
    mean, std = inputs.statistics(photo=inputs.photo is not False)  # photos: ImageNet's, torchvision's default
    if norm == "frozen":
        resnet = freeze_batchnorm(resnet)
    proposals = rpn_proposals(config)
    if config.detector == "c4":
        model = build_c4_detector(
            resnet,
            num_classes,
            trained_norm=norm != "frozen",
            min_size=config.min_size,
            max_size=config.max_size,
            proposals=proposals,
            rois_per_image=config.rois_per_image,
            detections_per_image=config.detections_per_image,
            image_mean=mean,
            image_std=std,
        )
        model.input_spec = inputs  # how DetectionSamples reads the images for it
        return model
    trained_norm = None if norm == "frozen" else nn.BatchNorm2d
    body = _resnet_fpn_extractor(resnet, trainable_layers=5, norm_layer=trained_norm)
    extra = {}
    if trained_norm is not None:
        anchors = 3  # one size and three aspect ratios per FPN level (torchvision's default anchors)
        extra["rpn_head"] = RPNHead(body.out_channels, anchors, conv_depth=2)
        extra["box_head"] = FastRCNNConvFCHead((body.out_channels, 7, 7), [256] * 4, [1024], norm_layer=trained_norm)
        if task == "mask":
            extra["mask_head"] = MaskRCNNHeads(body.out_channels, [256] * 4, 1, norm_layer=trained_norm)
    detector = MaskRCNN if task == "mask" else FasterRCNN
    model = detector(
        body,
        num_classes=num_classes + 1,
        min_size=config.min_size,
        max_size=config.max_size,
        rpn_post_nms_top_n_train=proposals[0],
        rpn_post_nms_top_n_test=proposals[1],
        box_batch_size_per_image=config.rois_per_image,
        box_detections_per_img=config.detections_per_image,
        image_mean=list(mean),
        image_std=list(std),
        **extra,
    )
    model.input_spec = inputs  # how DetectionSamples reads the images for it
    return model


def load_trunk(resnet: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict load except the classifier: anything else missing or unexpected is an error."""
    result = resnet.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"backbone weights do not fit torchvision's {type(resnet).__name__}: "
            f"missing {missing or 'none'}, unexpected {result.unexpected_keys or 'none'}"
        )


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> FrozenBatchNorm2d with the same statistics and affine values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, freeze_batchnorm(child))
    return module


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: float | None) -> list[dict]:
    """SGD parameter groups: one with ``weight_decay``, or, given ``norm_weight_decay``, normalisation layers apart."""
    if norm_weight_decay is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm if isinstance(module, NORM_LAYERS) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": norm_weight_decay}]


class DetectionSamples(torch.utils.data.Dataset):
    """``(index, sample_seed)`` -> (``C x H x W`` float image, target dict of tensors), flipped at random.

    A photo in [0, 1], other images' stored values with no data filled (``inputs``, the backbone's): the
    detector normalises them with the backbone's mean and std (:func:`build_detector`).
    """

    def __init__(self, split: Split, masks: bool, flip: bool, inputs: InputSpec | None = None) -> None:
        self.split, self.masks, self.flip, self.inputs = split, masks, flip, inputs or InputSpec()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, sample_seed = item
        image, target = self.split.load(index, with_masks=self.masks, inputs=self.inputs)
        if isinstance(image, Image.Image) and self.inputs.plain_rgb:
            x = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)  # 3 x H x W
        else:
            x = self.inputs.prepare(image, self.split.image_name(index))
        t = {k: torch.from_numpy(v) for k, v in target.items()}
        if self.flip and np.random.default_rng(sample_seed).random() < 0.5:
            x = x.flip(-1)
            width = x.shape[-1]
            t["boxes"] = torch.stack(
                [width - t["boxes"][:, 2], t["boxes"][:, 1], width - t["boxes"][:, 0], t["boxes"][:, 3]], 1
            )
            if "masks" in t:
                t["masks"] = t["masks"].flip(-1)
        return x, t


def _as_lists(batch):
    return [x for x, _ in batch], [t for _, t in batch]


def evaluate(backbone: ResNetBackbone, data: tuple[Split, Split], config: DetConfig, seeds: list[int]) -> Evaluation:
    train, val = data
    arch = _arch_of(backbone)
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
        scored = _validate(unwrap(model), val, config)
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
    return Evaluation(headline=headline, per_seed=per_seed, details=details, data=data_info, resumed_from=resumed_from)


def _arch_of(backbone: ResNetBackbone) -> str:
    from densecl.weights import guess_arch

    arch = guess_arch(backbone.state_dict())
    if arch is None:
        raise ValueError("the backbone matches no registered architecture")
    return arch


def _loader(split: Split, config: DetConfig, stream: BatchStream, inputs: InputSpec) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        DetectionSamples(split, masks=config.task == "mask", flip=True, inputs=inputs),
        batch_sampler=stream,
        num_workers=config.workers,
        collate_fn=_as_lists,
    )


def _to_device(batch, device: str):
    images, targets = batch
    images = [x.to(device, non_blocking=True) for x in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def _train(model: nn.Module, split: Split, config: DetConfig, seed: int) -> int | None:
    """Fine-tunes ``model`` for ``config.iters`` iterations; returns the step it resumed at (None: from the start)."""
    optimizer = torch.optim.SGD(
        param_groups(model, config.weight_decay, config.norm_weight_decay), lr=config.lr, momentum=0.9
    )
    checkpoints = FinetuneCheckpoints(
        config.checkpoint_dir, config.save_every, "det", seed, config.iters, dataclasses.asdict(config)
    )
    first = checkpoints.restore(model, optimizer)
    loader = _loader(
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
        images, targets = _to_device(batch, config.device)
        losses = model(images, targets)  # dict of scalar losses
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if watch.after(loss, step) and distributed.rank() == 0:
            parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            print(
                f"det iter {step + 1}/{config.iters} loss {loss.item():.3f} ({parts}) "
                f"lr {optimizer.param_groups[0]['lr']:.5f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        checkpoints.maybe_save(step + 1, model, optimizer)
    return checkpoints.resumed_from


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
        _loader(split, config, stream, input_of(unwrap(model))),
        lambda m, batch: m(*_to_device(batch, config.device)),
    )
    if distributed.rank() == 0 and not n:
        warn("--precise-bn-iters: the model has no trained BatchNorm (--norm frozen), nothing to recompute")
    elif distributed.rank() == 0 and config.log_every:
        print(
            f"det: BatchNorm statistics recomputed over {n} batches ({time.perf_counter() - start:.0f} s)", flush=True
        )


@torch.no_grad()
def _predict(model: nn.Module, split: Split, config: DetConfig) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """This process's share of ``split`` (every world_size-th image) -> ``(index, output on the CPU)``.

    An output holds ``boxes`` N x 4 xyxy in image pixels, ``labels`` N, ``scores``
    N and, for Mask R-CNN, ``masks`` N x 1 x H x W.
    """
    model.eval()
    dataset = DetectionSamples(split, masks=False, flip=False, inputs=input_of(unwrap(model)))
    mine = np.arange(distributed.rank(), len(split), distributed.world_size())
    out = []
    for chunk in np.array_split(mine, max(1, len(mine) // EVAL_BATCH)):
        images = [dataset[(i, 0)][0].to(config.device) for i in chunk.tolist()]
        if not images:
            continue
        for i, result in zip(chunk.tolist(), model(images)):
            out.append((i, {k: v.cpu() for k, v in result.items()}))
    return out


class Scored(NamedTuple):
    """One seed's evaluation: the metrics, and the extras a result keeps in ``details`` (VOC: per-class AP50)."""

    metrics: dict[str, float | None]
    details: dict


def _validate(model: nn.Module, split: Split, config: DetConfig) -> Scored | None:
    """Metrics and per-seed details of ``model`` on every image of ``split`` (rank 0; None on the others)."""
    if isinstance(split, VocDetectionSplit):
        mine = [
            (i, Detections(o["boxes"].numpy(), o["labels"].numpy(), o["scores"].numpy()))
            for i, o in _predict(model, split, config)
        ]
        gathered = distributed.gather_objects(mine)
        if distributed.rank() != 0:
            return None
        found = dict(pair for part in gathered for pair in part)
        return _voc_scores(split, [found[i] for i in range(len(split))], config)
    records = _coco_records(split, _predict(model, split, config), config.task == "mask")
    gathered = distributed.gather_objects(records)
    if distributed.rank() != 0:
        return None
    boxes = [r for part in gathered for r in part[0]]
    segms = [r for part in gathered for r in part[1]]
    metrics = {f"bbox_{k}": v for k, v in coco_average_precision(split.coco, boxes, "bbox").items()}
    if config.task == "mask":
        metrics.update({f"segm_{k}": v for k, v in coco_average_precision(split.coco, segms, "segm").items()})
    return Scored(metrics, {})


def _coco_records(split: CocoSplit, predicted, masks: bool) -> tuple[list[dict], list[dict]]:
    """COCO result dicts (boxes ``[x, y, w, h]``; masks as RLE) of ``(index, output)`` pairs."""
    from pycocotools import mask as mask_utils

    boxes, segms = [], []
    for index, out in predicted:
        image_id = split.image_ids[index]
        category = [split.category_ids[int(k) - 1] for k in out["labels"].tolist()]
        for b, c, s in zip(out["boxes"].tolist(), category, out["scores"].tolist()):
            boxes.append(
                {"image_id": image_id, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            )
        if masks:
            binary = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)  # N x H x W
            for m, c, s in zip(binary, category, out["scores"].tolist()):
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                segms.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": s})
    return boxes, segms


def voc_metric(config: DetConfig, split: VocDetectionSplit) -> str:
    """``voc_ap``, with ``auto`` resolved: ``11point`` for a root named like VOC2007, else ``area``."""
    if config.voc_ap != "auto":
        return config.voc_ap
    return "11point" if "2007" in split.roots[0].name else "area"


def _voc_scores(split: VocDetectionSplit, detections: list[Detections], config: DetConfig) -> Scored:
    metric = voc_metric(config, split)
    truth = [Truth(o.boxes, o.labels, o.difficult) for o in split.objects]
    try:
        scores = voc_detection_ap(truth, detections, split.num_classes, metric)
    except ValueError as e:
        raise InputError(f"{split.roots[0]} ({split.split}): {e}") from None
    per_class = dict(zip(split.classes, scores.per_class(0.5)))
    absent = [name for name, ap in per_class.items() if ap is None]
    if absent:
        warn(
            f"class(es) {', '.join(absent)} have no box in the {split.split} split (difficult ones do not count); "
            f"the APs average the other {len(per_class) - len(absent)}"
        )
    metrics = {"bbox_AP": scores.AP, "bbox_AP50": scores.AP50, "bbox_AP75": scores.AP75}
    return Scored(metrics, {"ap_metric": metric, "AP50_per_class": per_class, "absent_in_val": absent})


PROTOCOL = Protocol("det", DetConfig, load_data, evaluate, description=__doc__, torchrun=True)
