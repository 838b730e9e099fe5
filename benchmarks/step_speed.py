"""Time one DenseCL training step (forward, backward, SGD) per precision and memory format.

    python benchmarks/step_speed.py --arch resnet18 --batch 32 --crop 96
    python benchmarks/step_speed.py --arch resnet50 --batch 64 --crop 224 --device cuda

Settings are interleaved round by round, so a machine that is busy with
something else slows them all alike. Prints pairs/s per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from densecl import DenseCL


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settings", default="fp32,fp32+cl,bf16,bf16+cl")
    args = p.parse_args()
    device = torch.device(args.device)
    settings = args.settings.split(",")
    models, times = {}, {s: [] for s in settings}
    for s in settings:
        torch.manual_seed(0)
        m = DenseCL(args.arch, hidden_dim=2048, out_dim=128, queue_len=args.batch * 64).to(device)
        if "+cl" in s:
            m.to(memory_format=torch.channels_last)
        models[s] = (m, torch.optim.SGD(m.encoder.parameters(), lr=0.01, momentum=0.9))
    x = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    for r in range(args.rounds + 1):  # round 0 warms up
        for s in settings:
            m, opt = models[s]
            dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[s.split("+")[0]]
            fmt = torch.channels_last if "+cl" in s else torch.contiguous_format
            im = x.contiguous(memory_format=fmt)
            ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with ctx:
                out = m(im, im)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[s].append(time.perf_counter() - t)
    base = sorted(times[settings[0]])[len(times[settings[0]]) // 2]
    print(f"{args.arch} batch {args.batch} crop {args.crop} on {device.type} ({torch.get_num_threads()} threads)")
    for s in settings:
        med = sorted(times[s])[len(times[s]) // 2]
        print(f"  {s:10s} {args.batch / med:8.1f} pairs/s  {med * 1000:8.1f} ms/step  x{base / med:.2f}")


if __name__ == "__main__":
    main()
