"""Time one training step per setting: DenseCL, MoCo-v2 (lambda 0) and the bare backbone, side by side.

    python benchmarks/step_speed.py --arch resnet18 --batch 32 --crop 96
    python benchmarks/step_speed.py --arch resnet50 --batch 128 --crop 224 --device cuda \\
        --settings tf32+cl,bf16+cl,fp16+cl,bf16+cl+compile,bf16+cl+bn32 --queue-len 65536
    python benchmarks/step_speed.py --arch resnet18 --batch 32 --crop 96 --settings fp32+cl+g8,fp32+cl+compile+g8
    python benchmarks/step_speed.py --arch resnet18 --batch 2 --crop 64 --rounds 1 --hidden-dim 64   # does it run

A setting is a precision with options joined by ``+``:
  fp32     autocast off, torch's own TF32 defaults (what ``--precision fp32`` trains with)
  tf32     autocast off, TF32 for convolutions and matmuls (CUDA)
  bf16     bf16 autocast;  fp16  fp16 autocast with a grad scaler (CUDA), as training runs them
  +cl      channels_last
  +compile torch.compile of both encoders (DenseCL, MoCo-v2) and of the backbone; with +gN, the
           compiled grouped step (``--compile true`` with a recipe's ``--bn-group-size``)
  +bn32    every BatchNorm computed in fp32 (input cast up, output cast back): PyTorch does not
           use cuDNN's batch norm for bf16 input; this row measures the alternative
  +gN      batch norm over groups of N images in both encoders, keys shuffled across the groups
           (``--bn-group-size N``): against the same setting without it, what grouping costs
  +splitN  the same statistics by MoCo's one-process SplitBatchNorm: the batch reshaped into the
           channels (``x.view(-1, C * groups, H, W)``), a free view for NCHW memory, copies for
           channels_last; the design alternative to +gN
Rows, per setting: ``densecl`` (the training step: both encoders, losses, queues, SGD),
``mocov2`` (the same model at lambda 0) and ``backbone`` (the bare backbone's forward,
backward and SGD on one view: the floor). All rows of all settings alternate round by
round, so a machine busy with something else slows them alike; the median of the timed
rounds is printed. A DenseCL step does the query's forward and backward plus the key's
forward, about 4/3 of the backbone's work, so its pairs/s can reach about 0.75 of the
backbone's img/s. Targets: DenseCL pairs/s >= 0.72 x backbone img/s; DenseCL step time
<= 1.01 x MoCo-v2's; grouped batch norm (+gN) <= 1.02 x the same setting's plain step.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from densecl import DenseCL
from densecl.engine import make_sgd
from densecl.models.backbones import build_backbone
from densecl.models.batchnorm import group_batch_norms
from densecl.precision import DTYPES, failure_line

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
OPTIONS = ("cl", "compile", "bn32")  # and gN, splitN
ROWS = ("densecl", "mocov2", "backbone")
TARGET_BACKBONE_RATIO, TARGET_MOCO_RATIO = 0.72, 1.01


@dataclass(frozen=True)
class Setting:
    name: str
    precision: str
    channels_last: bool
    compile: bool
    bn32: bool
    bn_group: int | None = None  # +gN: GroupedBatchNorm2d over groups of N images
    split_group: int | None = None  # +splitN: the reshape alternative

    @classmethod
    def parse(cls, name: str, device: torch.device) -> Setting:
        precision, *options = name.split("+")
        groups = {m.group(1): int(m.group(2)) for o in options if (m := re.fullmatch(r"(g|split)(\d+)", o))}
        flags = [o for o in options if not re.fullmatch(r"(g|split)\d+", o)]
        if precision not in PRECISIONS or not set(flags) <= set(OPTIONS):
            raise SystemExit(
                f"step_speed: unknown setting {name!r}: a precision of {PRECISIONS} "
                f"and options of {OPTIONS}, gN, splitN"
            )
        if precision in ("tf32", "fp16") and device.type != "cuda":
            raise SystemExit(f"step_speed: {precision} needs a CUDA device")
        if len(groups) + ("bn32" in flags) > 1:
            raise SystemExit(f"step_speed: {name!r}: bn32, gN and splitN each replace the batch norms: give one")
        return cls(
            name, precision, "cl" in flags, "compile" in flags, "bn32" in flags, groups.get("g"), groups.get("split")
        )

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = DTYPES.get(self.precision)
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class SplitBatchNorm2d(nn.BatchNorm2d):
    """MoCo's one-process demo: ``groups`` interleaved groups as channels of a reshaped batch, one kernel call."""

    groups = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        mean, var = self.running_mean.repeat(g), self.running_var.repeat(g)
        y = nn.functional.batch_norm(
            x.reshape(-1, c * g, h, w), mean, var, self.weight.repeat(g), self.bias.repeat(g), True, 0.1, self.eps
        )  # reshape: a view for NCHW memory, a copy for channels_last
        with torch.no_grad():
            self.running_mean.copy_(mean.view(g, c).mean(0))
            self.running_var.copy_(var.view(g, c).mean(0))
        return y.view(n, c, h, w).contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class FP32BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm computed in fp32 under autocast: the input is cast up and the output back to its dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def build_step(row: str, s: Setting, args, device: torch.device) -> Callable[[], None]:
    """One training step of ``row`` at setting ``s``, on fixed inputs."""
    torch.manual_seed(0)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(1)
    im_q = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device).contiguous(memory_format=fmt)
    im_k = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device).contiguous(memory_format=fmt)
    if row == "backbone":
        model = build_backbone(args.arch)
        if s.bn_group:
            group_batch_norms(model, s.bn_group)
        params = model.parameters()
    else:
        model = DenseCL(
            args.arch,
            hidden_dim=args.hidden_dim,
            out_dim=128,
            queue_len=args.queue_len,
            loss_lambda=0.5 if row == "densecl" else 0.0,
            bn_group_size=s.bn_group or s.split_group,  # +splitN: shuffled across groups too, then re-normed below
        )
        params = model.encoder.parameters()
    for m in model.modules():
        if s.bn32 and type(m) is nn.BatchNorm2d:
            m.__class__ = FP32BatchNorm2d
        if s.split_group and isinstance(m, nn.BatchNorm2d):
            m.__class__ = SplitBatchNorm2d
            m.groups = args.batch // s.split_group
    model.to(device, memory_format=fmt).train()
    optimizer = make_sgd(params, 0.01, 0.9, 1e-4, device.type)
    scaler = torch.amp.GradScaler(device.type) if s.precision == "fp16" else None
    if s.compile:
        for module in (model,) if row == "backbone" else (model.encoder, model.momentum_encoder):
            module.compile()

    def step() -> None:
        with s.autocast(device):
            loss = model(im_q).float().mean() if row == "backbone" else model(im_q, im_k).loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    return step


def set_tf32(s: Setting, defaults: tuple[bool, bool]) -> None:
    """tf32: TF32 for convolutions and matmuls; every other setting: torch's defaults, as training runs."""
    matmul, conv = (True, True) if s.precision == "tf32" else defaults
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is printed)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1, 3 with +compile)")
    p.add_argument("--settings", default="fp32,fp32+cl,bf16,bf16+cl")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--hidden-dim", type=int, default=2048)
    p.add_argument("--queue-len", type=int, default=None, help="default: 64 x batch (the recipes: 65536)")
    args = p.parse_args()
    args.queue_len = args.queue_len or 64 * args.batch
    device = torch.device(args.device)
    settings = [Setting.parse(name, device) for name in args.settings.split(",")]
    rows = [r for r in args.rows.split(",") if r]
    if not set(rows) <= set(ROWS):
        raise SystemExit(f"step_speed: rows are {', '.join(ROWS)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training does: pick the fastest convolution per shape
    tf32_defaults = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    warmup = args.warmup if args.warmup is not None else (3 if any(s.compile for s in settings) else 1)

    steps = {(s, r): build_step(r, s, args, device) for s in settings for r in rows}
    times: dict[tuple[Setting, str], list[float]] = {key: [] for key in steps}
    failed: dict[Setting, str] = {}
    for i in range(warmup + args.rounds):
        # the rows take turns going first: the first step after another setting's runs about 7 % slower on a
        # 2-core CPU (measured: DenseCL / MoCo-v2 read 1.07 with DenseCL always first, 0.98 with it always second)
        for s, r in ((s, rows[(j + i) % len(rows)]) for s in settings for j in range(len(rows))):
            step = steps[(s, r)]
            if s in failed:
                continue
            set_tf32(s, tf32_defaults)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            try:
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # a setting that cannot run (say, no compiler) is reported and left out
                failed[s] = f"{r}: {failure_line(e)}"
                continue
            if i >= warmup:
                times[(s, r)].append(time.perf_counter() - t)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"{args.arch} batch {args.batch} crop {args.crop} on {name}, torch {torch.__version__}, "
        f"median of {args.rounds} rounds after {warmup} warm-up"
    )
    header = f"  {'setting':22s}" + "".join(
        f"{r + (' img/s' if r == 'backbone' else ' pairs/s'):>18s}{'ms':>8s}" for r in rows
    )
    if {"densecl", "backbone"} <= set(rows):
        header += f"{'densecl/backbone':>18s}"
    if {"densecl", "mocov2"} <= set(rows):
        header += f"{'densecl/mocov2 time':>21s}"
    print(header)
    for s in settings:
        if s in failed:
            print(f"  {s.name:22s} failed ({failed[s]})")
            continue
        median = {r: statistics.median(times[(s, r)]) for r in rows}
        line = f"  {s.name:22s}" + "".join(f"{args.batch / median[r]:18.1f}{1000 * median[r]:8.1f}" for r in rows)
        if {"densecl", "backbone"} <= set(rows):
            line += f"{median['backbone'] / median['densecl']:18.3f}"
        if {"densecl", "mocov2"} <= set(rows):
            line += f"{median['densecl'] / median['mocov2']:21.3f}"
        print(line)
    print(
        f"  targets: densecl pairs/s / backbone img/s >= {TARGET_BACKBONE_RATIO}, "
        f"densecl / mocov2 step time <= {TARGET_MOCO_RATIO}"
    )
    if device.type == "cuda":
        print(f"  max memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
