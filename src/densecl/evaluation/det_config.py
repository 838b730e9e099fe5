"""What a ``densecl eval det`` run computes: its options, one ``--flag`` each (:mod:`densecl.evaluation.det`)."""

from __future__ import annotations

from dataclasses import dataclass

from densecl.evaluation import options
from densecl.evaluation.options import option
from densecl.evaluation.voc_ap import METRICS as VOC_METRICS

TASKS = ("box", "mask")
DETECTORS = ("fpn", "c4")
NORMS = ("syncbn", "bn", "frozen")


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
