#!/usr/bin/env bash
# The study of scripts/experiment.sh at a budget a CPU cannot buy, in one call on one GPU (sized for
# about 10 minutes on an H200).
#
#   bash scripts/experiment_gpu.sh                       on the GPU machine, from the repository root
#   DRY_RUN=1 bash scripts/experiment_gpu.sh             print the plan
#   STUDY=small-budget bash scripts/experiment_gpu.sh    the small-budget study instead (below)
#
# On a GPU machine without network, bring .cache/assets/objects and .cache/assets/backgrounds (41 MB;
# `make assets` needs Debian's package servers) and choose where the runs go:
#   OUT_DIR=/some/dir bash scripts/experiment_gpu.sh
# Nothing is installed: the GPU image's python3 has torch, torchvision and the other dependencies, and
# `densecl` runs from src/ (pycocotools, which only `eval det` needs, is not used).
#
# Differences from the CPU study: 4000 scenes at 256 px, crop 224 (a 7 x 7 C5 grid), batch 256 (lr
# 0.3 for 256), 40 epochs (360 steps: 92,160 pairs against the CPU study's 33,600), queues of 2048,
# bf16, 14 data workers, 400 correspondence pairs. The report goes to docs/results-gpu.md, never over
# the CPU report.
#
# One call has BUDGET_S seconds (default 480): first the three seeds of both methods, with plain and
# with grouped batch norm (8 groups of 32: the authors' 8 GPUs x 32), and their evaluation, then, in
# what time is left, the ablations, the supervised backbones and theirs. A step that would start too late is skipped, one
# running at the deadline is stopped (a pre-training saves its checkpoint), and the report is written
# from whatever finished; it says which results are missing.
#
# STUDY=small-budget: scripts/small_budget.sh's learning curves of DenseCL, MoCo-v2 and the three rules for
# the dense positives at one GPU's budget, on the CPU study's 2400 train scenes: batch 256 (lr 0.3 for 256),
# crop 160, 200 epochs (1800 steps), a curve point every 180 steps, hybrid's switch at 600, queues of 2048,
# bf16. Each method advances a stretch in turn, so a call that ends at its deadline leaves every method
# measured at the same iterations. Report: docs/results-small-budget-gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT_DIR:-runs}
shim=$(mktemp -d)  # `densecl` and `python` for experiment.sh, from this working tree
printf '#!/bin/sh\nexec python3 -m densecl "$@"\n' > "$shim/densecl"
chmod +x "$shim/densecl"
ln -s "$(command -v python3)" "$shim/python"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BIN="$shim"
export DEVICE=${DEVICE:-cuda} PRECISION=${PRECISION:-bf16} WORKERS=${WORKERS:-14}
[ -n "${DRY_RUN:-}" ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$SECONDS
export DEADLINE=${DEADLINE:-$(( $(date +%s) + ${BUDGET_S:-480} ))} KEEP_GOING=${KEEP_GOING:-1}  # one call: a failed step must not cost the rest
if [ "${STUDY:-experiment}" = small-budget ]; then
  export RUN=${RUN:-$OUT_DIR/small-budget-gpu} DATA=${DATA:-$OUT_DIR/study-scenes}
  export N_IMAGES=${N_IMAGES:-4000} SIZE=${SIZE:-192} CROP=${CROP:-160} EVAL_CROP=${EVAL_CROP:-160} BATCH=${BATCH:-256}
  export EPOCHS=${EPOCHS:-200} STRETCH=${STRETCH:-180} SWITCH=${SWITCH:-600} QUEUE=${QUEUE:-2048}
  export REPORT=${REPORT:-docs/results-small-budget-gpu.md} FIGURES=${FIGURES:-docs/figures/gpu}
  bash scripts/small_budget.sh
else
  export RUN=${RUN:-$OUT_DIR/study-gpu} DATA=${DATA:-$OUT_DIR/study-gpu-scenes}
  export N_IMAGES=${N_IMAGES:-4000} SIZE=${SIZE:-256} CROP=${CROP:-224} BATCH=${BATCH:-256} EPOCHS=${EPOCHS:-40}
  export QUEUE=${QUEUE:-2048} DENSE_QUEUE=${DENSE_QUEUE:-512} PAIRS=${PAIRS:-400} REF_ITERS=${REF_ITERS:-2000}
  export BN_GROUP=${BN_GROUP:-32}
  export REPORT=${REPORT:-docs/results-gpu.md} FIGURES=${FIGURES:-docs/figures/gpu}
  STEPS="data pretrain grouped eval report" bash scripts/experiment.sh  # the comparison first
  STEPS="ablations reference oracle eval report" bash scripts/experiment.sh  # then the explanations, in the time left
fi
echo "experiment_gpu: $(( (SECONDS - start) / 60 )) min in all; report $REPORT"
