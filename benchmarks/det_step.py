"""Time ``densecl eval det``'s model: one training step, a Precise-BN pass and evaluation; the recipe's hours.

    python benchmarks/det_step.py --device cuda                      # the VOC recipe's C4 R-50, one GPU's share
    python benchmarks/det_step.py --device cpu --steps 3 --warmup 1 --eval-images 2 --precise-bn-passes 1
    python benchmarks/det_step.py --arch resnet18 --image-size 64,48 --min-size 64 --max-size 64 --proposals 50 \\
        --rois-per-image 32 --steps 1 --warmup 0 --eval-images 1 --precise-bn-passes 1   # does it run

Builds the detector ``densecl eval det`` trains (``build_detector`` with the
same config; random weights, nothing is downloaded) and its SGD, and feeds it
synthetic images of VOC's usual size (500 x 375, ``--image-size``) with three
random boxes each, already on the device: the model's own resize (a random
``--min-size`` per image in training, the last one in evaluation, longer side
at most ``--max-size``) and everything after it is timed, data loading is not.
``--batch`` is the images of one process: the 8-GPU recipe (16 images) puts 2
on each GPU, so one GPU's step at batch 2 is the recipe's iteration time
(SyncBatchNorm and the gradient all-reduce add to it and are not measured).

Prints the median training step, iterations per second, a Precise-BN pass
(forward only, training mode), evaluation time per image (at the last
``--min-size``), and the wall time of ``--iters`` iterations plus Precise BN
and the evaluation of ``--val-images`` spread over ``--gpus`` processes: one
seed of the recipe.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from densecl.evaluation.det_config import DetConfig  # noqa: E402
from densecl.evaluation.det_model import build_detector, param_groups  # noqa: E402
from densecl.evaluation.det_score import EVAL_BATCH  # noqa: E402
from densecl.models.backbones import build_backbone  # noqa: E402

VOC_MIN_SIZES = "480,512,544,576,608,640,672,704,736,768,800"
VOC07_TEST_IMAGES = 4952


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def synthetic_batch(n: int, width: int, height: int, classes: int, generator: torch.Generator, device: torch.device):
    """``n`` random images ``3 x height x width`` in [0, 1], each with 3 boxes of random class."""
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, height, width, generator=generator).to(device))
        corners = torch.rand(3, 2, 2, generator=generator) * torch.tensor([width, height])  # 3 boxes x 2 corners
        low, high = corners.min(dim=1).values, corners.max(dim=1).values + 8  # at least 8 pixels a side
        boxes = torch.cat([low, torch.minimum(high, torch.tensor([width, height]))], dim=1)  # 3 x 4 xyxy
        labels = torch.randint(1, classes + 1, (3,), generator=generator)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", default="c4", choices=("c4", "fpn"))
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2, help="images per process (the recipe: 16 over 8 GPUs)")
    p.add_argument("--image-size", default="500,375", help="width,height of the synthetic images")
    p.add_argument("--min-size", default=VOC_MIN_SIZES, help="shorter side: a random choice per training image")
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--rois-per-image", type=int, default=512, help="as densecl eval det's (the recipe: 512)")
    p.add_argument("--proposals", type=int, default=0, help="as densecl eval det's (0: the detector's own)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (the median is printed)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--precise-bn-passes", type=int, default=3, help="timed Precise-BN passes")
    p.add_argument("--eval-images", type=int, default=8, help="images timed in evaluation")
    p.add_argument("--iters", type=int, default=24000, help="iterations of the run to estimate")
    p.add_argument("--precise-bn-iters", type=int, default=200)
    p.add_argument("--val-images", type=int, default=VOC07_TEST_IMAGES)
    p.add_argument("--gpus", type=int, default=8, help="processes of the run to estimate")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # as densecl eval det runs: image shapes change every step
    width, height = _ints(args.image_size)
    min_size = _ints(args.min_size)
    config = DetConfig(
        data="-",
        detector=args.detector,
        norm="bn",
        min_size=min_size,
        max_size=args.max_size,
        proposals=args.proposals,
        rois_per_image=args.rois_per_image,
        device=args.device,
    )
    torch.manual_seed(0)
    model = build_detector(build_backbone(args.arch), args.arch, args.classes, config).to(device)
    optimizer = torch.optim.SGD(param_groups(model, 1e-4, 0.0), lr=1e-4, momentum=0.9)  # small: a stable loss
    generator = torch.Generator().manual_seed(0)

    def train_step() -> None:
        images, targets = synthetic_batch(args.batch, width, height, args.classes, generator, device)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    steps = [timed(train_step, device) for _ in range(args.warmup + args.steps)][args.warmup :]

    def precise_bn_pass() -> None:
        with torch.no_grad():
            model(*synthetic_batch(args.batch, width, height, args.classes, generator, device))

    passes = [timed(precise_bn_pass, device) for _ in range(args.precise_bn_passes)]

    model.eval()
    evals = []
    for start in range(0, args.eval_images, EVAL_BATCH):
        n = min(EVAL_BATCH, args.eval_images - start)
        images, _ = synthetic_batch(n, width, height, args.classes, generator, device)
        with torch.no_grad():
            evals.append(timed(lambda images=images: model(images), device) / n)

    step, bn_pass, per_image = statistics.median(steps), statistics.median(passes), statistics.median(evals)
    train_h = args.iters * step / 3600
    bn_min = args.precise_bn_iters * bn_pass / 60
    eval_min = args.val_images / args.gpus * per_image / 60
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    sizes = f"{min_size[0]}..{min_size[-1]} ({len(min_size)} sizes)" if len(min_size) > 1 else str(min_size[0])
    print(
        f"det_step: {args.detector} {args.arch}, batch {args.batch} per process, {width}x{height} images, "
        f"shorter side {sizes}, longer at most {args.max_size}; {name}, torch {torch.__version__}"
    )
    print(
        f"  train step       {step:.3f} s median of {len(steps)} (min {min(steps):.3f}, max {max(steps):.3f})  "
        f"{1 / step:.2f} it/s"
    )
    print(f"  precise-BN pass  {bn_pass:.3f} s median of {len(passes)}")
    print(f"  evaluation       {per_image:.3f} s per image at {min_size[-1]} (batches of {EVAL_BATCH})")
    print(
        f"  {args.iters} iterations: {train_h:.2f} h; Precise BN ({args.precise_bn_iters} batches): {bn_min:.1f} min; "
        f"{args.val_images} val images over {args.gpus} processes: {eval_min:.1f} min"
    )
    print(
        f"  one seed on {args.gpus} such devices: about {train_h + (bn_min + eval_min) / 60:.2f} h "
        "(SyncBN and the gradient all-reduce not counted)"
    )
    if device.type == "cuda":
        print(f"  max memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    return {"step_s": step, "precise_bn_pass_s": bn_pass, "eval_s_per_image": per_image, "run_h": train_h}


if __name__ == "__main__":
    main()
