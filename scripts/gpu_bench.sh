#!/usr/bin/env bash
# The GPU benchmark in one call: at most 8 minutes on one GPU, everything from this working tree.
#
#   bash scripts/gpu_bench.sh                    on the GPU machine, from the repository root
#   OUT_DIR=/some/dir bash scripts/gpu_bench.sh  the log under /some/dir instead of docs/
#   DRY_RUN=1 bash scripts/gpu_bench.sh          print the plan, run nothing
#   DEVICE=cpu ARCH=resnet18 CROP=64 BATCHES=2 ROUNDS=1 HIDDEN_DIM=64 QUEUE_LEN=128 EAGER_SETTINGS=fp32+cl,bf16+cl \
#     COMPILE_SETTINGS= E2E_BATCH=4 E2E_ARGS="--workers 1 --iters 2 --images 16" OUT_DIR=/tmp DET_ARCH=resnet18 \
#     DET_ARGS="--image-size 64,48 --min-size 64 --max-size 64 --proposals 50 --rois-per-image 32 --steps 1 \
#     --warmup 0 --eval-images 1 --precise-bn-passes 1" \
#     bash scripts/gpu_bench.sh                  the same logic on a CPU, tiny (end to end: the cpu backend; gpu refuses)
#
# Writes its log to docs/gpu-bench-<gpu>.log (or OUT_DIR/gpu-bench-<gpu>.log), the date first; commit it.
# 1. step only (benchmarks/step_speed.py): ResNet-50, 224 px, batch 128 and 256; TF32, bf16 and fp16 with
#    channels_last; DenseCL, MoCo-v2 and the bare backbone side by side, with the two ratios; bf16 with
#    BatchNorm in fp32 (+bn32: cuDNN's batch norm instead of PyTorch's own bf16 kernel); bf16 with batch norm
#    over groups of 32 (+g32: --bn-group-size 32, one GPU trained as the authors' 8 x 32) and its reshape
#    alternative (+split32).
# 2. the same with torch.compile at batch 256, DenseCL and the backbone: first bf16 with groups of 32, compiled
#    and eager side by side (+compile+g32: the recipes' setting under --compile true), then bf16, fp16 and TF32
#    without groups while time is left (compiling ResNet-50 takes about a minute per precision, so the later ones
#    may be cut; part 1 leaves COMPILE_S seconds (100) for the first).
# 3. end to end (benchmarks/end_to_end.py) with each data backend:
#    --device cuda --data-backend cpu|gpu --arch resnet50 --crop 224 --batch 128, plus E2E_ARGS (sizes).
# 4. the detection fine-tuning step (benchmarks/det_step.py): densecl eval det --detector c4, the VOC recipe's
#    Faster R-CNN R50-C4, at one GPU's share of the 8-GPU recipe (batch 2, VOC-sized images, shorter side
#    480..800): iterations per second, and the wall time of 24k iterations plus Precise BN and the VOC07 test.
# Every command runs under `timeout`, within a deadline of BUDGET_S seconds (480) for the whole script,
# keeping E2E_S seconds (200) for part 3 and DET_S (100) for part 4, and part 1 keeping COMPILE_S (100) for part 2.
# Nothing is installed: the GPU image's python3 has torch.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda} ARCH=${ARCH:-resnet50} CROP=${CROP:-224} BATCHES=${BATCHES:-128 256}
ROUNDS=${ROUNDS:-6} HIDDEN_DIM=${HIDDEN_DIM:-2048} QUEUE_LEN=${QUEUE_LEN:-65536}
EAGER_SETTINGS=${EAGER_SETTINGS-tf32+cl,bf16+cl,fp16+cl,bf16+cl+bn32,bf16+cl+g32,bf16+cl+split32}
# one process each, in order; empty: none
COMPILE_SETTINGS=${COMPILE_SETTINGS-bf16+cl+g32,bf16+cl+compile+g32 bf16+cl+compile fp16+cl+compile tf32+cl+compile}
COMPILE_S=${COMPILE_S:-100}  # kept by part 1 for part 2's first process
COMPILE_BATCH=${COMPILE_BATCH:-256} COMPILE_ROWS=${COMPILE_ROWS:-densecl,backbone} E2E_BATCH=${E2E_BATCH:-128}
# end_to_end.py writes batch x iterations JPEGs by default (over a minute at batch 128): fewer, and every core loading
E2E_ARGS=${E2E_ARGS---workers $(nproc) --iters 20 --images 1024}
E2E_S=${E2E_S:-200}  # kept for part 3
DET_ARCH=${DET_ARCH:-resnet50} DET_ARGS=${DET_ARGS---steps 20 --warmup 5} DET_S=${DET_S:-100}  # part 4
BUDGET_S=${BUDGET_S:-480} STEP_CAP_S=${STEP_CAP_S:-150}

if [ -n "${DRY_RUN:-}" ]; then
  gpu=dry-run
elif [ "$DEVICE" = cuda ]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' | sed 's/nvidia//; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
else
  gpu=cpu
fi
LOG=${LOG:-${OUT_DIR:-docs}/gpu-bench-$gpu.log}
start=$SECONDS

# run SECONDS_CAP CMD...: the command under timeout, never past the deadline (minus what later parts keep)
run() {
  local cap=$1 keep=$2
  shift 2
  local left=$((BUDGET_S - keep - (SECONDS - start)))
  ((left < cap)) && cap=$left
  if [ -n "${DRY_RUN:-}" ]; then
    echo "+ timeout $cap $*"
    return 0
  fi
  if ((cap < 20)); then
    echo "gpu_bench: skipped (time budget spent): $*"
    return 0
  fi
  echo "+ $*"
  timeout -k 10 "$cap" "$@"
  local rc=$?
  ((rc == 124)) && echo "gpu_bench: stopped after ${cap} s (time budget): $*"
  ((rc != 0 && rc != 124)) && echo "gpu_bench: exit status $rc: $*"
  return 0
}

main() {
  echo "gpu_bench: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ -z "${DRY_RUN:-}" ]; then
    [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
    nproc | sed 's/^/cpu cores: /'
  fi
  local common=(--arch "$ARCH" --crop "$CROP" --device "$DEVICE" --rounds "$ROUNDS" --hidden-dim "$HIDDEN_DIM" --queue-len "$QUEUE_LEN")

  echo "== 1. step only, eager"
  local keep_compile=0  # part 2's first process (the compiled grouped step) runs whatever part 1 takes
  [ -n "$COMPILE_SETTINGS" ] && keep_compile=$COMPILE_S
  for batch in $BATCHES; do
    [ -n "$EAGER_SETTINGS" ] || break
    run "$STEP_CAP_S" $((E2E_S + DET_S + keep_compile)) $PY benchmarks/step_speed.py "${common[@]}" --batch "$batch" \
      --settings "$EAGER_SETTINGS"
  done

  echo "== 2. step only, torch.compile (batch $COMPILE_BATCH)"
  for setting in $COMPILE_SETTINGS; do
    run "$STEP_CAP_S" $((E2E_S + DET_S)) $PY benchmarks/step_speed.py "${common[@]}" --batch "$COMPILE_BATCH" \
      --settings "$setting" \
      --rows "$COMPILE_ROWS"
  done

  echo "== 3. end to end, each data backend (batch $E2E_BATCH)"
  for backend in cpu gpu; do
    run $((E2E_S / 2)) "$DET_S" $PY benchmarks/end_to_end.py --device "$DEVICE" --data-backend "$backend" \
      --arch "$ARCH" --crop "$CROP" --batch "$E2E_BATCH" $E2E_ARGS
  done
  echo "== 4. detection fine-tuning: densecl eval det --detector c4 ($DET_ARCH, batch 2 per GPU, VOC-sized images)"
  run "$DET_S" 0 $PY benchmarks/det_step.py --device "$DEVICE" --detector c4 --arch "$DET_ARCH" --batch 2 $DET_ARGS
  echo "gpu_bench: done in $((SECONDS - start)) s; log $LOG"
}

if [ -n "${DRY_RUN:-}" ]; then
  main
else
  mkdir -p "$(dirname "$LOG")"
  main 2>&1 | tee "$LOG"
fi
