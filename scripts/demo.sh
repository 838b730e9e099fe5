#!/usr/bin/env bash
# make demo: pre-train DenseCL on the embedded scenes, then tell where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
rm -rf runs/demo
$BIN/densecl pretrain --config demo_cpu --output-dir runs/demo
echo
echo "demo: checkpoint runs/demo/checkpoint.pt, metrics runs/demo/metrics.jsonl"
