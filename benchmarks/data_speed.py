"""Throughput of the pre-training input pipeline in one process (what one data worker delivers).

    python benchmarks/data_speed.py --data scenes --scenes-size 128 --crop 96
    python benchmarks/data_speed.py --data /path/to/images --crop 224

Compare images/s with the training step's pairs/s (benchmarks/step_speed.py):
one worker keeps up when it is the larger number.
"""

from __future__ import annotations

import argparse
import time

import torch

from densecl.data.sources import TwoViewDataset, image_source
from densecl.data.transforms import GeometricTwoViews


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="scenes")
    p.add_argument("--scenes-size", type=int, default=128)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--n", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)  # a data worker
    source = image_source(args.data, scenes_length=10_000, scenes_size=args.scenes_size)
    dataset = TwoViewDataset(source, GeometricTwoViews(args.crop, 0.2))
    dataset[(0, 0)]  # load the photo bank once, as a worker does at start
    t = time.perf_counter()
    for i in range(args.n):
        dataset[(i, i)]
    dt = (time.perf_counter() - t) / args.n
    t = time.perf_counter()
    for i in range(args.n):
        source.load(i)
    load = (time.perf_counter() - t) / args.n
    print(
        f"{source.origin}, crop {args.crop}: {1 / dt:.0f} images/s per worker "
        f"({dt * 1000:.1f} ms: {load * 1000:.1f} ms making/reading the image, {(dt - load) * 1000:.1f} ms two views)"
    )


if __name__ == "__main__":
    main()
