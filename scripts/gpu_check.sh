#!/usr/bin/env bash
# The CUDA checks, in one go, on a machine with one GPU and PyTorch installed:
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. precisions / channels_last / CPU agreement / ResNet-50 step throughput (benchmarks/gpu_check.py)
# 2. the CLI under torchrun with NCCL and SyncBN on one GPU, bf16 then fp16 with the grad scaler,
#    a resume, and a ResNet-50 run on scenes with 12 data workers (pairs/s and data time).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 benchmarks/gpu_check.py
TINY="--config demo_cpu --device cuda --workers 6 --epochs 1 --log-every 5 --sync-bn true"
python3 -m torch.distributed.run --nproc_per_node 1 -m densecl pretrain $TINY --precision bf16 --max-iters 20 --output-dir "$OUT/bf16" 2>&1 | tail -3
python3 -m torch.distributed.run --nproc_per_node 1 -m densecl pretrain $TINY --precision fp16 --max-iters 20 --output-dir "$OUT/fp16" 2>&1 | tail -3
python3 -m torch.distributed.run --nproc_per_node 1 -m densecl pretrain --resume "$OUT/fp16/checkpoint.pt" --max-iters 25 2>&1 | tail -2
tail -n 2 "$OUT"/bf16/metrics.jsonl "$OUT"/fp16/metrics.jsonl
python3 -m densecl pretrain --config densecl_r50_imagenet_200ep --data scenes --scenes-size 256 --scenes-length 8192 \
  --batch-size 128 --queue-len 65536 --workers 14 --max-iters 40 --log-every 10 --output-dir "$OUT/r50" 2>&1 | tail -2
cat "$OUT"/r50/metrics.jsonl
