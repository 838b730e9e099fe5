"""Faster R-CNN / Mask R-CNN with a ResNet-FPN backbone, fine-tuned (COCO AP; supplementary Table 2).

Model (``torchvision.models.detection``): the pre-trained ResNet (any arch in
the registry) loaded strictly into torchvision's ResNet (only ``fc.*`` left
out), an FPN on C2..C5 (plus the max-pool P6), all stages trainable
(``trainable_layers=5``), standard anchors, RPN, RoI heads; ``task="mask"``
adds the mask head. Normalisation (``norm``):

- ``syncbn`` (default, supplementary A): BatchNorm trained in the backbone,
  the FPN and the heads (a 4-conv + 1-fc box head and a 4-conv mask head
  with BatchNorm, as in torchvision's v2 models and the MoCo/DenseCL
  detectron2 configs), converted to SyncBatchNorm under torchrun on CUDA.
  In one process it is ordinary BatchNorm over that process's images.
- ``bn``: the same, never synchronised.
- ``frozen``: FrozenBatchNorm in the backbone (statistics and affine fixed to
  the pre-trained values), no norm in FPN and heads (torchvision's v1 heads).

Training: SGD, momentum 0.9, weight decay 1e-4, ``lr`` for ``batch_size``
images over all processes (0.02 for 16), linear warm-up from 0.001x over
``warmup_iters``, x0.1 at the ``lr_steps`` fractions of ``iters`` (1x
schedule: 90k iterations, steps at 60k and 80k). Images are resized by
torchvision (shorter side a random choice of ``min_size`` in training, the
last value in evaluation; longer side at most ``max_size``) and flipped at
random. Training drops images without a usable annotation.
``train_fraction`` < 1 keeps a fixed-seed (``subset_seed``) random subset of
the training images, recorded in the result: 0.1 is the semi-supervised
setting of supplementary Table 2.

Evaluation: COCO box AP, AP50, AP75 (and mask AP with ``task="mask"``)
through pycocotools' COCOeval on the whole val split, rank 0 only.

Supplementary Table 2 (semi-supervised, 10% of train2017, 90k iterations)::

    torchrun --nproc_per_node 8 -m densecl eval det --weights ckpt.pt --data coco \
        --train-split train2017 --val-split val2017 --task mask --train-fraction 0.1 \
        --iters 90000 --batch-size 16 --lr 0.02 --min-size 640,672,704,736,768,800 --workers 8
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

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
from densecl.evaluation.datasets import CocoSplit, read_coco, subset
from densecl.evaluation.finetune import (
    BatchStream,
    FinetuneCheckpoints,
    check_finite,
    prepare_model,
    seed_everything,
    unwrap,
)
from densecl.evaluation.metrics import coco_average_precision
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation
from densecl.inputs import InputSpec, input_of
from densecl.models.backbones import ResNetBackbone, first_conv, torchvision_classifier
from densecl.schedules import warmup_step_lr

TASKS = ("box", "mask")
EVAL_BATCH = 4  # images per forward in evaluation
NORMS = ("syncbn", "bn", "frozen")


@dataclass(frozen=True)
class DetConfig:
    data: str = options.data()
    train_split: str = options.train_split()
    val_split: str = options.val_split()
    task: str = option("box", "box (Faster R-CNN) or mask (Mask R-CNN)", choices=TASKS)
    norm: str = option(
        "syncbn", "syncbn / bn: BatchNorm trained in backbone, FPN and heads; frozen: FrozenBN backbone", choices=NORMS
    )
    train_fraction: float = option(
        1.0, "fraction of training images to use (0.1: supplementary Table 2's semi-supervised setting)"
    )
    subset_seed: int = option(0, "seed of the --train-fraction subset (fixed across runs)")
    iters: int = options.iters(90000)
    batch_size: int = options.batch_size(16)
    lr: float = options.lr(0.02)
    weight_decay: float = options.weight_decay(1e-4)
    warmup_iters: int = option(1000, "linear warm-up iterations")
    lr_steps: tuple[float, ...] = option((0.6667, 0.8889), "fractions of --iters where the learning rate drops x0.1")
    min_size: tuple[int, ...] = option(
        (800,), "shorter image side; several values: a random choice per training image, the last for evaluation"
    )
    max_size: int = option(1333, "longer image side at most")
    proposals: int = option(1000, "RPN proposals kept per image after NMS, in training and evaluation")
    rois_per_image: int = option(512, "RoIs sampled per training image for the box head")
    detections_per_image: int = option(100, "detections kept per image in evaluation")  # COCO scores at most 100
    workers: int = options.workers()
    log_every: int = options.log_every(20)
    device: str = options.device()
    save_every: int = options.save_every()
    resume: bool = options.resume()
    checkpoint_dir: str = options.checkpoint_dir()
    dist_timeout: int = options.dist_timeout()


def load_data(config: DetConfig) -> tuple[CocoSplit, CocoSplit]:
    if config.task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
    if config.norm not in NORMS:
        raise InputError(f"--norm must be one of {', '.join(NORMS)}, got {config.norm!r}")
    train = read_coco(config.data, config.train_split, drop_empty=True)
    val = read_coco(config.data, config.val_split, drop_empty=False)
    if train.category_ids != val.category_ids:
        raise InputError(f"{train.annotation_file} and {val.annotation_file} define different categories")
    keep = subset(len(train), config.train_fraction, config.subset_seed)
    train.image_ids = [train.image_ids[i] for i in keep]
    return train, val


def build_detector(backbone: ResNetBackbone, arch: str, num_classes: int, config: DetConfig) -> nn.Module:
    """A torchvision Faster / Mask R-CNN whose ResNet trunk holds ``backbone``'s weights.

    Args:
        num_classes: object classes, background not counted.
        config: ``task``, ``norm``, ``min_size``, ``max_size``, ``proposals``,
            ``rois_per_image`` and ``detections_per_image`` are read.
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
        rpn_post_nms_top_n_train=config.proposals,
        rpn_post_nms_top_n_test=config.proposals,
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


class DetectionSamples(torch.utils.data.Dataset):
    """``(index, sample_seed)`` -> (``C x H x W`` float image, target dict of tensors), flipped at random.

    A photo in [0, 1], other images' stored values with no data filled (``inputs``, the backbone's): the
    detector normalises them with the backbone's mean and std (:func:`build_detector`).
    """

    def __init__(self, split: CocoSplit, masks: bool, flip: bool, inputs: InputSpec | None = None) -> None:
        self.split, self.masks, self.flip, self.inputs = split, masks, flip, inputs or InputSpec()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, sample_seed = item
        image, target = self.split.load(index, with_masks=self.masks, inputs=self.inputs)
        if isinstance(image, Image.Image) and self.inputs.plain_rgb:
            x = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)  # 3 x H x W
        else:
            x = self.inputs.prepare(image, self.split.coco.imgs[self.split.image_ids[index]]["file_name"])
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


def evaluate(
    backbone: ResNetBackbone, data: tuple[CocoSplit, CocoSplit], config: DetConfig, seeds: list[int]
) -> Evaluation:
    train, val = data
    arch = _arch_of(backbone)
    per_seed, resumed_from = [], {}
    for seed in seeds:
        seed_everything(seed)
        model = build_detector(copy.deepcopy(backbone), arch, train.num_classes, config)
        model = prepare_model(model, config.device, config.norm == "syncbn")
        resumed = _train(model, train, config, seed)
        if resumed is not None:
            resumed_from[seed] = resumed
        if distributed.rank() == 0:
            per_seed.append(_validate(unwrap(model), val, config))
        distributed.barrier()
    headline = ["bbox_AP", "segm_AP"] if config.task == "mask" else ["bbox_AP"]
    data_info = {
        "root": str(config.data),
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
    return Evaluation(headline=headline, per_seed=per_seed, data=data_info, resumed_from=resumed_from)


def _arch_of(backbone: ResNetBackbone) -> str:
    from densecl.weights import guess_arch

    arch = guess_arch(backbone.state_dict())
    if arch is None:
        raise ValueError("the backbone matches no registered architecture")
    return arch


def _train(model: nn.Module, split: CocoSplit, config: DetConfig, seed: int) -> int | None:
    """Fine-tunes ``model`` for ``config.iters`` iterations; returns the step it resumed at (None: from the start)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    checkpoints = FinetuneCheckpoints(
        config.checkpoint_dir, config.save_every, "det", seed, config.iters, dataclasses.asdict(config)
    )
    first = checkpoints.restore(model, optimizer)
    loader = torch.utils.data.DataLoader(
        DetectionSamples(split, masks=config.task == "mask", flip=True, inputs=input_of(unwrap(model))),
        batch_sampler=BatchStream(len(split), config.batch_size, config.iters, seed, start=first),
        num_workers=config.workers,
        collate_fn=_as_lists,
    )
    batches = checkpoints.batches(loader)
    model.train()
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches, start=first):
        for group in optimizer.param_groups:
            group["lr"] = warmup_step_lr(step, config.iters, config.lr, config.warmup_iters, config.lr_steps)
        images = [x.to(config.device, non_blocking=True) for x in images]
        targets = [{k: v.to(config.device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)  # dict of scalar losses
        loss = sum(losses.values())
        check_finite(loss, "det", step, "lower --lr or raise --warmup-iters")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if distributed.rank() == 0 and config.log_every and (step + 1) % config.log_every == 0:
            parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            print(
                f"det iter {step + 1}/{config.iters} loss {loss.item():.3f} ({parts}) "
                f"lr {optimizer.param_groups[0]['lr']:.5f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        checkpoints.maybe_save(step + 1, model, optimizer)
    return checkpoints.resumed_from


@torch.no_grad()
def _validate(model: nn.Module, split: CocoSplit, config: DetConfig) -> dict[str, float | None]:
    """COCO AP of ``model`` on every image of ``split``."""
    from pycocotools import mask as mask_utils

    model.eval()
    dataset = DetectionSamples(split, masks=False, flip=False, inputs=input_of(unwrap(model)))
    boxes, segms = [], []
    outputs = (
        (split.image_ids[i], out)
        for chunk in np.array_split(np.arange(len(split)), max(1, len(split) // EVAL_BATCH))
        for i, out in zip(chunk.tolist(), model([dataset[(i, 0)][0].to(config.device) for i in chunk.tolist()]))
    )
    for image_id, out in outputs:  # out: boxes N x 4 xyxy in image pixels, labels N, scores N, masks N x 1 x H x W
        category = [split.category_ids[int(k) - 1] for k in out["labels"].tolist()]
        for b, c, s in zip(out["boxes"].tolist(), category, out["scores"].tolist()):
            boxes.append(
                {"image_id": image_id, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            )
        if config.task == "mask":
            binary = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)  # N x H x W
            for m, c, s in zip(binary, category, out["scores"].tolist()):
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                segms.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": s})
    metrics = {f"bbox_{k}": v for k, v in coco_average_precision(split.coco, boxes, "bbox").items()}
    if config.task == "mask":
        metrics.update({f"segm_{k}": v for k, v in coco_average_precision(split.coco, segms, "segm").items()})
    return metrics


PROTOCOL = Protocol("det", DetConfig, load_data, evaluate, description=__doc__, torchrun=True)
