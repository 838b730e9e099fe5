"""``densecl pretrain`` on a folder of JPEGs against the training step alone: does the data path keep up?

    python benchmarks/end_to_end.py --device cpu --arch resnet18 --crop 64 --batch 8 --iters 6 --image-size 128 \\
        --workers 1
    python benchmarks/end_to_end.py --device cuda --data-backend gpu --arch resnet50 --crop 224 --batch 256 \\
        --workers 14 --iters 60 --image-size 500

Writes ``--images`` JPEGs of ``--image-size`` px (smooth random colours with
fine detail, quality 90, like photos in size and decoding cost) into a
temporary folder, runs ``densecl pretrain`` on them in this process
(``--max-iters``), and reads its per-iteration times from ``metrics.jsonl``;
then times the same step (model, precision, channels_last, batch, crop) on
tensors already on the device. Both skip their first quarter of iterations
(workers starting, cuDNN choosing kernels). Prints pairs/s of each and their
ratio; the target is end to end >= 0.9 of the step alone.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from densecl import DenseCL
from densecl.config import PretrainConfig
from densecl.precision import Precision
from densecl.train import pretrain


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` JPEGs of ``size x round(0.75 size)`` px: coarse random colour fields plus pixel noise."""
    rng = np.random.default_rng(seed)
    height = round(0.75 * size)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 16 + 2, size // 16 + 2, 3), dtype=np.uint8))
        image = np.asarray(coarse.resize((size, height), Image.Resampling.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=90)


def step_only(cfg: PretrainConfig, device: torch.device, precision: Precision, iters: int) -> float:
    """Pairs/s of the training step on random tensors already on the device (median-free: total time)."""
    torch.manual_seed(0)
    model = DenseCL(
        cfg.arch, cfg.hidden_dim, cfg.out_dim, cfg.queue_len, cfg.momentum, cfg.temperature, cfg.loss_lambda
    ).to(device)
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.encoder.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(2, cfg.batch_size, 3, cfg.crop_size, cfg.crop_size, device=device)
    im_q, im_k = (v.contiguous(memory_format=torch.channels_last) for v in x)
    warm = max(1, iters // 4)
    for i in range(warm + iters):
        if i == warm:
            _sync(device)
            t = time.perf_counter()
        with precision.autocast():
            out = model(im_q, im_k)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    _sync(device)
    return cfg.batch_size * iters / (time.perf_counter() - t)


def end_to_end(cfg: PretrainConfig, iters: int) -> tuple[float, float]:
    """``(pairs/s, mean data wait per iteration in s)`` of ``densecl pretrain`` after its first quarter of
    iterations.
    """
    warm = max(1, iters // 4)
    cfg.max_iters, cfg.log_every = warm + iters, 1
    pretrain(cfg)
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "iter_time" in r][warm:]
    return cfg.batch_size * len(rows) / sum(r["iter_time"] for r in rows), sum(r["data_time"] for r in rows) / len(rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-backend", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--iters", type=int, default=40, help="timed iterations (a quarter more run first, untimed)")
    p.add_argument("--image-size", type=int, default=500, help="width of the generated JPEGs (height 3/4 of it)")
    p.add_argument("--images", type=int, default=0, help="JPEGs to generate (default: enough for one epoch of the run)")
    p.add_argument("--precision", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on the CPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    precision_name = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    precision = Precision({"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision_name], device.type)
    iters = args.iters + max(1, args.iters // 4)
    n_images = args.images or args.batch * iters
    torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        t = time.perf_counter()
        write_jpegs(folder, n_images, args.image_size)
        print(
            f"wrote {n_images} JPEGs of {args.image_size} x {round(0.75 * args.image_size)} px in "
            f"{time.perf_counter() - t:.0f} s"
        )
        cfg = PretrainConfig(
            arch=args.arch,
            hidden_dim=2048,
            queue_len=args.batch * max(1, min(256, n_images // args.batch - 1)),  # below the image count: no warning
            data=str(folder),
            crop_size=args.crop,
            workers=args.workers,
            data_backend=args.data_backend,
            epochs=math.ceil(iters * args.batch / n_images),
            batch_size=args.batch,
            device=args.device,
            precision=precision_name,
            output_dir=str(Path(tmp) / "run"),
        )
        e2e, data_wait = end_to_end(cfg, args.iters)
        step = step_only(cfg, device, precision, args.iters)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.arch}, batch {args.batch}, crop {args.crop}, {precision_name} + channels_last on {name}; "
        f"{args.data_backend} data backend, {args.workers} workers, {args.image_size} px JPEGs"
    )
    print(f"  step only    {step:9.1f} pairs/s")
    print(f"  end to end   {e2e:9.1f} pairs/s   (waiting for data {data_wait * 1000:.1f} ms per iteration)")
    print(f"  ratio        {e2e / step:9.2f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
