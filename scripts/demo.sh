#!/usr/bin/env bash
# make demo: pre-train DenseCL on the embedded scenes, then probe it against random init.
#   bash scripts/demo.sh [extra densecl pretrain flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN=${RUN:-runs/demo}
# --overwrite: an earlier demo (or your work in that folder) is moved to RUN.old-N, never deleted
$BIN/densecl pretrain --config demo_cpu --output-dir "$RUN" --overwrite "$@"

# evaluation scenes use seed 1, away from the pre-training scenes (seed 0)
D=$RUN/scenes-voc
$BIN/densecl data export-scenes --format voc --out $D --n-train 200 --n-val 100 --size 128 --seed 1 --overwrite
for W in "$RUN/checkpoint.pt" random; do
  N=$([ "$W" = random ] && echo random || echo densecl)
  $BIN/densecl eval seg-probe --weights "$W" --arch resnet18 --data $D --stages c4,c5 --seeds 3 \
      --out $RUN/eval/${N}_seg-probe.json
  $BIN/densecl eval svm --weights "$W" --arch resnet18 --data $D --image-size 128 --workers 0 \
      --out $RUN/eval/${N}_svm.json
done
echo
$BIN/densecl eval summary $RUN/eval/densecl_seg-probe.json $RUN/eval/densecl_svm.json \
    $RUN/eval/random_seg-probe.json $RUN/eval/random_svm.json
echo
echo "demo: checkpoint $RUN/checkpoint.pt, metrics $RUN/metrics.jsonl, results $RUN/eval/"
