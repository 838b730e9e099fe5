"""FCN semantic segmentation, all layers fine-tuned (mIoU; the paper's VOC / Cityscapes tables).

Model: the pre-trained backbone, dilated to ``output_stride`` 8 by default
(layer3 at rate 2, layer4 at rate 4: strides become dilations, the weights
are unchanged, as in mmsegmentation's FCN-D8 and torchvision's FCN), the
first 7x7 convolution kept (supplementary A), and a torchvision-style FCN
head on C5: 3x3 conv (C -> C/4), BatchNorm, ReLU, dropout 0.1, 1x1 conv
(C/4 -> K). Logits are bilinearly upsampled to the input size. No auxiliary
head. ``output_stride`` 16 or 32 dilates less or not at all. Dilation of
ResNet-18/34's basic blocks follows the same rule (torchvision itself only
dilates bottlenecks).

Training (mmsegmentation's schedule): SGD, momentum 0.9, weight decay 5e-4
on all parameters, poly learning rate (power 0.9, floor 1e-4), ``iters``
iterations of ``batch_size`` images in total over all processes; every image
randomly rescaled by [0.5, 2], padded (label 255) to at least the crop,
randomly cropped to ``crop`` x ``crop`` and flipped. Cross-entropy, 255
ignored. Under torchrun, BatchNorm becomes SyncBatchNorm (``--sync-bn``, on
by default; CUDA only) and the model is wrapped in DDP.

Evaluation: whole-image inference at the original size (mmseg slides a
window for Cityscapes; not done here), confusion matrix, mIoU over classes
present in the val labels. Rank 0 evaluates; the others wait.

Supplementary recipe (batch 16, SyncBN; crop 512 VOC / 769 Cityscapes)::

    torchrun --nproc_per_node 4 -m densecl eval seg-finetune --weights ckpt.pt \
        --data VOCdevkit/VOC2012 --train-split train_aug --crop 512 --batch-size 16 --iters 20000
    torchrun --nproc_per_node 8 -m densecl eval seg-finetune --weights ckpt.pt \
        --data cityscapes_voc --crop 769 --batch-size 16 --iters 40000 --num-classes 19
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from densecl import checkpoint, distributed
from densecl.errors import InputError
from densecl.evaluation import options
from densecl.evaluation.datasets import (
    IGNORE_INDEX,
    SegmentationSplit,
    describe_segmentation,
    read_segmentation_splits,
    segmentation_tensors,
)
from densecl.evaluation.finetune import (
    BatchStream,
    FinetuneCheckpoints,
    LossWatch,
    prepare_model,
    unwrap,
)
from densecl.evaluation.metrics import confusion_matrix, iou_from_confusion
from densecl.evaluation.options import option
from densecl.evaluation.registry import Protocol
from densecl.evaluation.results import Evaluation, warn_absent_classes
from densecl.inputs import InputSpec, input_of
from densecl.inputs.files import image_size
from densecl.models.backbones import STAGES, ResNetBackbone
from densecl.schedules import poly_lr
from densecl.seeding import seed_everything

OUTPUT_STRIDES = {32: (1, 1), 16: (1, 2), 8: (2, 4)}  # output stride -> dilation rates of layer3, layer4


@dataclass(frozen=True)
class SegFinetuneConfig(options.SegmentationData):
    output_stride: int = option(8, "backbone output stride: 8 (dilated layer3+4), 16 (dilated layer4) or 32 (none)")
    crop: int = option(512, "training crop side in pixels")
    scale_min: float = option(0.5, "smallest random rescale factor")
    scale_max: float = option(2.0, "largest random rescale factor")
    batch_size: int = options.batch_size(16)
    iters: int = options.iters(20000)
    lr: float = options.lr(0.01)
    weight_decay: float = options.weight_decay(5e-4)
    poly_power: float = option(0.9, "poly learning-rate power")
    min_lr: float = option(1e-4, "poly learning-rate floor")
    dropout: float = option(0.1, "dropout before the classifier")
    sync_bn: bool = option(True, "SyncBatchNorm under torchrun (CUDA)")
    workers: int = options.workers()
    log_every: int = options.log_every(50)
    device: str = options.device()
    save_every: int = options.save_every()
    resume: bool = options.resume()
    checkpoint_dir: str = options.checkpoint_dir()
    dist_timeout: int = options.dist_timeout()
    save_backbone: str = option(
        "",
        "also write the first seed's fine-tuned backbone here (torchvision names, no fc), e.g. as a supervised "
        "reference",
    )


def load_data(config: SegFinetuneConfig) -> tuple[SegmentationSplit, SegmentationSplit]:
    if config.output_stride not in OUTPUT_STRIDES:
        raise InputError(f"--output-stride must be 8, 16 or 32, got {config.output_stride}")
    if config.save_backbone and Path(config.save_backbone).exists() and not config.resume:
        raise InputError(
            f"--save-backbone {config.save_backbone} exists; this command never replaces a file: give a new path"
        )
    train, val = read_segmentation_splits(config, config.train_split, config.val_split, workers=max(1, config.workers))
    return train, val


def dilate(backbone: ResNetBackbone, output_stride: int) -> ResNetBackbone:
    """Replaces the strides of the last stages by dilation, in place; weights are unchanged.

    The first block of a dilated stage keeps the previous rate in its 3x3
    convolutions and the later blocks use the new one (torchvision's rule).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if output_stride != 32 and not isinstance(backbone, ResNetBackbone):
        raise InputError(
            f"--output-stride {output_stride} dilates a ResNet's layer3 and layer4; this backbone is a timm model: "
            "use --output-stride 32"
        )
    previous = 1
    for stage_name, rate in zip(STAGES[2:], OUTPUT_STRIDES[output_stride]):
        if rate == 1:
            continue
        for b, block in enumerate(getattr(backbone, stage_name)):
            block_rate = previous if b == 0 else rate
            for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
                if conv.stride == (2, 2):
                    conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (block_rate, block_rate), (block_rate, block_rate)
        previous = rate
    return backbone


class FCN(nn.Module):
    """Backbone + FCN head; ``B x 3 x H x W`` -> ``B x K x H x W`` logits."""

    def __init__(self, backbone: ResNetBackbone, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        c = backbone.out_channels
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(c, c // 4, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c // 4),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c // 4, num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))  # B x K x H/os x W/os
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class RandomCrops(torch.utils.data.Dataset):
    """Training samples: ``(index, sample_seed)`` -> (``3 x crop x crop`` image, ``crop x crop`` label)."""

    def __init__(
        self, split: SegmentationSplit, crop: int, scale: tuple[float, float], inputs: InputSpec | None = None
    ) -> None:
        self.split, self.crop, self.scale, self.inputs = split, crop, scale, inputs or InputSpec()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, sample_seed = item
        rng = np.random.default_rng(sample_seed)
        image, label = self.split.load(index, self.inputs)
        s = rng.uniform(*self.scale)
        width, height = image_size(image)
        size = (max(1, round(width * s)), max(1, round(height * s)))
        if isinstance(image, Image.Image):
            image = image.resize(size, Image.Resampling.BILINEAR)
        else:  # bands: no-data filled first, then resampled
            image = self.inputs.prepare(image, self.split.images[index])
            image = v2.functional.resize(image, [size[1], size[0]], antialias=True)
        label = np.asarray(Image.fromarray(label).resize(size, Image.Resampling.NEAREST))
        x, y = segmentation_tensors(image, label, 0, self.inputs, self.split.images[index])  # C x H x W, H x W
        pad_h, pad_w = max(self.crop - y.shape[0], 0), max(self.crop - y.shape[1], 0)
        x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)  # 0 = the mean colour after normalisation
        y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(rng.integers(0, y.shape[0] - self.crop + 1))
        left = int(rng.integers(0, y.shape[1] - self.crop + 1))
        x, y = x[:, top : top + self.crop, left : left + self.crop], y[top : top + self.crop, left : left + self.crop]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.long().contiguous()


def evaluate(
    backbone: ResNetBackbone,
    data: tuple[SegmentationSplit, SegmentationSplit],
    config: SegFinetuneConfig,
    seeds: list[int],
) -> Evaluation:
    train, val = data
    per_seed, details, resumed_from = [], [], {}
    for seed in seeds:
        seed_everything(seed)
        model = FCN(dilate(copy.deepcopy(backbone), config.output_stride), train.num_classes, config.dropout)
        model = prepare_model(model, config.device, config.sync_bn)
        resumed = _train(model, train, config, seed)
        if resumed is not None:
            resumed_from[seed] = resumed
        if (
            distributed.rank() == 0
            and config.save_backbone
            and seed == seeds[0]
            and not Path(config.save_backbone).exists()
        ):
            checkpoint.write_atomic(
                config.save_backbone, {k: v.detach().cpu() for k, v in unwrap(model).backbone.state_dict().items()}
            )
        if distributed.rank() == 0:
            iou = _validate(unwrap(model), val, config)
            if seed == seeds[0]:
                warn_absent_classes(val.classes, iou.present, config.val_split)
            per_seed.append({"mIoU": iou.mean, "pixel_acc": iou.pixel_accuracy})
            details.append({"seed": seed, "iou": dict(zip(val.classes, iou.per_class))})
        distributed.barrier()
    data_info = describe_segmentation(
        config,
        train,
        val,
        world_size=distributed.world_size(),
    )
    return Evaluation(headline=["mIoU"], per_seed=per_seed, details=details, data=data_info, resumed_from=resumed_from)


def _train(model: nn.Module, split: SegmentationSplit, config: SegFinetuneConfig, seed: int) -> int | None:
    """Fine-tunes ``model`` for ``config.iters`` iterations; returns the step it resumed at (None: from the start)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    checkpoints = FinetuneCheckpoints(
        config.checkpoint_dir, config.save_every, "seg-finetune", seed, config.iters, dataclasses.asdict(config)
    )
    first = checkpoints.restore(model, optimizer)
    loader = torch.utils.data.DataLoader(
        RandomCrops(
            split, config.crop, (config.scale_min, config.scale_max), input_of(getattr(unwrap(model), "backbone", None))
        ),
        batch_sampler=BatchStream(len(split), config.batch_size, config.iters, seed, start=first),
        num_workers=config.workers,
        pin_memory=config.device.startswith("cuda"),
    )
    batches = checkpoints.batches(loader)
    watch = LossWatch("seg-finetune", "lower --lr", config.device, config.log_every, checkpoints)
    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches, start=first):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(step, config.iters, config.lr, config.poly_power, config.min_lr)
        x, y = x.to(config.device, non_blocking=True), y.to(config.device, non_blocking=True)
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)  # B x K x H x W vs B x H x W
        watch.optimise(loss, optimizer, step, config.iters, start)
        checkpoints.maybe_save(step + 1, model, optimizer)
    return checkpoints.resumed_from


@torch.no_grad()
def _validate(model: nn.Module, split: SegmentationSplit, config: SegFinetuneConfig):
    model.eval()
    k = split.num_classes
    cm = torch.zeros(k, k, dtype=torch.int64)
    inputs = input_of(getattr(unwrap(model), "backbone", None))
    for i in range(len(split)):
        x, y = segmentation_tensors(*split.load(i, inputs), 0, inputs, split.images[i])
        pred = model(x[None].to(config.device)).argmax(dim=1)[0].cpu()  # H x W
        cm += confusion_matrix(pred, y, k, IGNORE_INDEX)
    return iou_from_confusion(cm)


PROTOCOL = Protocol("seg-finetune", SegFinetuneConfig, load_data, evaluate, description=__doc__, torchrun=True)
