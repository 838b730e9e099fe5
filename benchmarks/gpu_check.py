"""CUDA checks for one GPU: precisions, channels_last, agreement with the CPU, step throughput.

    PYTHONPATH=src python3 benchmarks/gpu_check.py

Run by scripts/gpu_check.sh on a GPU machine (together with a torchrun NCCL
run of the CLI); prints one line per check.
"""

from __future__ import annotations

import copy
import time

import torch

from densecl import DenseCL


def steps(model, precision: str, channels_last: bool, n: int = 3, batch: int = 8, size: int = 96) -> list[float]:
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.cuda().to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.encoder.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(n):
        x = torch.randn(batch, 3, size, size, generator=g).cuda().contiguous(memory_format=fmt)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model(x, x.flip(3))
        assert out.loss.dtype == torch.float32, out.loss.dtype
        opt.zero_grad()
        if scaler:
            scaler.scale(out.loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            out.loss.backward()
            opt.step()
        losses.append(out.loss.item())
    return losses


def main() -> None:
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__, "bf16:", torch.cuda.is_bf16_supported())
    torch.manual_seed(0)
    base = DenseCL("resnet18", hidden_dim=512, out_dim=128, queue_len=256)
    # 1. the CUDA fp32 step agrees with the CPU float64 step
    x = torch.randn(8, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    cpu = copy.deepcopy(base).double().train()(x.double(), x.flip(3).double())
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    gpu = copy.deepcopy(base).cuda().train()(x.cuda(), x.flip(3).cuda())
    diff = max(abs(cpu.loss.item() - gpu.loss.item()), abs(cpu.loss_dense.item() - gpu.loss_dense.item()))
    print(
        f"cpu fp64 vs cuda fp32 loss: {cpu.loss.item():.6f} vs {gpu.loss.item():.6f}, max diff {diff:.2e}",
        "OK" if diff < 1e-3 else "FAIL",
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    # 2. every precision and memory format trains with finite fp32 losses
    for precision in ("fp32", "bf16", "fp16"):
        for cl in (False, True):
            losses = steps(copy.deepcopy(base), precision, cl)
            ok = all(torch.isfinite(torch.tensor(losses)))
            print(
                f"{precision:5s} channels_last={cl!s:5s} losses {[round(v, 3) for v in losses]}", "OK" if ok else "FAIL"
            )
    # 3. ResNet-50 DenseCL step throughput at 224 px
    for batch in (64, 128):
        model = DenseCL("resnet50", queue_len=65536)
        for precision, cl in (("fp32", False), ("fp32", True), ("bf16", True), ("fp16", True)):
            m = copy.deepcopy(model)
            steps(m, precision, cl, n=3, batch=batch, size=224)  # warm-up (cudnn autotune)
            torch.cuda.synchronize()
            t = time.perf_counter()
            steps(m, precision, cl, n=10, batch=batch, size=224)
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / 10
            print(
                f"resnet50 batch {batch} 224px {precision} cl={cl}: {batch / dt:.0f} pairs/s ({dt * 1000:.0f} ms/step)"
            )
        print("max memory GiB:", round(torch.cuda.max_memory_allocated() / 2**30, 1))


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    main()
