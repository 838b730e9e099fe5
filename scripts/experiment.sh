#!/usr/bin/env bash
# make experiment: DenseCL against MoCo-v2 on the photo scenes, pre-trained and evaluated on this CPU.
#
#   bash scripts/experiment.sh                 (or: make experiment)
#   DRY_RUN=1 bash scripts/experiment.sh       print what would run, run nothing
#   EPOCHS=40 DET_ITERS=400 bash scripts/experiment.sh  longer (every setting below is an env override)
#
# Resumable: every step is skipped when its output exists, so after an interruption the same
# command carries on. An unfinished pre-training (checkpoint step < EPOCHS x iterations/epoch)
# continues with `densecl pretrain --resume`. Delete an output to redo its step.
#
# Steps and outputs (RUN = runs/experiment):
#   1. assets + photo scenes      .cache/assets/, DATA/README.md (written last by `densecl data scenes`)
#   2. pre-training               RUN/{densecl,mocov2}/checkpoint.pt: lambda 0.5 vs 0, all else identical
#   3. evaluation                 RUN/eval/{densecl,mocov2,random}_{seg-probe,seg-finetune,det-box,det-box-10pct,svm}.json
#                                 RUN/figures/correspondence.{png,json}, RUN/figures/curves.png
#   4. report                     docs/results.md and docs/figures/ (always rewritten, from what exists)
# Wall time of every step that ran is appended to RUN/timing.tsv (name, seconds, finished at).
#
# Time on the 2-core CPU, from the run in docs/results.md (126.7 minutes in all): resnet18 fp32 at
# 128 px takes a median 2.0 s per batch of 32 (DenseCL; MoCo-v2 1.9 s); 1200 train images / batch 32
# = 37 iterations an epoch, so EPOCHS=20 is 23-27 minutes per method. Evaluation per weights: det at
# 160 px with 50 proposals and 32 RoIs about 5.5 minutes per run (2.3 s an iteration; the 4conv1fc
# box head dominates), seg-probe with 3 seeds 4.5-5 minutes, seg-finetune 3.5, svm 1: about 20
# minutes per weights, an hour for the three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DRY_RUN=${DRY_RUN:-}

RUN=${RUN:-runs/experiment}
ASSETS=${ASSETS:-.cache/assets}
DATA=${DATA:-.cache/photo-scenes}
N_IMAGES=${N_IMAGES:-2000}      # 60 / 20 / 20 % train / val / test
SIZE=${SIZE:-160}
ARCH=${ARCH:-resnet18}
EPOCHS=${EPOCHS:-20}
CROP=${CROP:-128}               # a 4x4 C5 grid
BATCH=${BATCH:-32}
QUEUE=${QUEUE:-512}             # keys; kept below the 1200 train images, so a query rarely meets its own old key
SEG_ITERS=${SEG_ITERS:-120}
DET_ITERS=${DET_ITERS:-100}
DET_PROPOSALS=${DET_PROPOSALS:-50}   # RPN proposals per image
DET_ROIS=${DET_ROIS:-32}             # RoIs sampled per training image
PAIRS=${PAIRS:-64}
REPORT=${REPORT:-docs/results.md}
FIGURES=${FIGURES:-docs/figures}
VAL=test                        # val is left for choosing settings; results are on test

[ -n "$DRY_RUN" ] || mkdir -p "$RUN/eval" "$RUN/figures"
TIMING=$RUN/timing.tsv

say() { echo "experiment: $*"; }

# run_step NAME OUTPUT CMD...: run CMD unless OUTPUT exists ("": always); log its wall time.
run_step() {
  local name=$1 out=$2; shift 2
  if [ -n "$out" ] && [ -e "$out" ]; then say "skip $name ($out exists)"; return 0; fi
  say "$name: $(printf '%q ' "$@")"
  [ -n "$DRY_RUN" ] && return 0
  local t0=$SECONDS
  "$@"
  printf '%s\t%s\t%s\n' "$name" $((SECONDS - t0)) "$(date -u +%FT%TZ)" >> "$TIMING"
}

# pretrain_done CKPT: true when the checkpoint has run all EPOCHS (a stopped run saves early).
pretrain_done() {
  "$BIN/densecl" checkpoint finished "$1" --epochs "$EPOCHS" > /dev/null
}

# ---------------------------------------------------------------- 1. data
if [ ! -d "$ASSETS" ]; then
  say "assets: make assets"
  [ -n "$DRY_RUN" ] || make assets
fi
run_step scenes "$DATA/README.md" \
  "$BIN/densecl" data scenes --objects "$ASSETS/objects" --backgrounds "$ASSETS/backgrounds" \
    --out "$DATA" --n "$N_IMAGES" --size "$SIZE" --seed 0 --overwrite

# ---------------------------------------------------------------- 2. pre-training
pretrain() {  # pretrain NAME LAMBDA
  local name=$1 lambda=$2 ckpt=$RUN/$1/checkpoint.pt
  if [ -e "$ckpt" ] && pretrain_done "$ckpt"; then
    say "skip pretrain-$name ($ckpt has all $EPOCHS epochs)"
  elif [ -e "$ckpt" ]; then
    run_step "pretrain-$name" "" "$BIN/densecl" pretrain --resume "$ckpt" --epochs "$EPOCHS"
  else
    run_step "pretrain-$name" "$ckpt" "$BIN/densecl" pretrain --config demo_cpu \
      --arch "$ARCH" --hidden-dim 512 --queue-len "$QUEUE" --momentum 0.99 --lr 0.3 --batch-size "$BATCH" \
      --crop-size "$CROP" --num-grid $((CROP / 32)) --epochs "$EPOCHS" --workers 1 --save-every 50 \
      --data "$DATA/unlabeled/train" --loss-lambda "$lambda" --seed 0 --output-dir "$RUN/$name"
  fi
}
pretrain densecl 0.5
pretrain mocov2 0

# ---------------------------------------------------------------- 3. evaluation
for name in densecl mocov2 random; do
  if [ $name = random ]; then W=(--weights random --arch "$ARCH"); else W=(--weights "$RUN/$name/checkpoint.pt"); fi
  E=$RUN/eval/$name
  run_step "seg-probe-$name" "${E}_seg-probe.json" "$BIN/densecl" eval seg-probe "${W[@]}" \
    --data "$DATA/voc" --val-split $VAL --stages c4,c5 --seeds 3 --device cpu --out "${E}_seg-probe.json"
  run_step "seg-finetune-$name" "${E}_seg-finetune.json" "$BIN/densecl" eval seg-finetune "${W[@]}" \
    --data "$DATA/voc" --val-split $VAL --crop "$CROP" --batch-size 8 --iters "$SEG_ITERS" \
    --workers 0 --device cpu --out "${E}_seg-finetune.json"
  for fraction in 1.0 0.1; do
    suffix=$([ $fraction = 1.0 ] && echo "" || echo "-10pct")
    run_step "det-box$suffix-$name" "${E}_det-box$suffix.json" "$BIN/densecl" eval det "${W[@]}" \
      --data "$DATA/coco" --val-split $VAL --task box --train-fraction $fraction --subset-seed 0 \
      --iters "$DET_ITERS" --batch-size 4 --lr 0.01 --warmup-iters 20 --min-size "$SIZE" --max-size "$SIZE" \
      --proposals "$DET_PROPOSALS" --rois-per-image "$DET_ROIS" --detections-per-image 20 --workers 0 --device cpu \
      --out "${E}_det-box$suffix.json"
  done
  run_step "svm-$name" "${E}_svm.json" "$BIN/densecl" eval svm "${W[@]}" \
    --data "$DATA/voc" --val-split $VAL --image-size "$SIZE" --workers 0 --device cpu --out "${E}_svm.json"
done

# the picture is written before its report, so the report marks a finished step
run_step correspond "$RUN/figures/correspondence.json" "$BIN/densecl" correspond \
  --weights "$RUN/densecl/checkpoint.pt" --label DenseCL --weights "$RUN/mocov2/checkpoint.pt" --label MoCo-v2 \
  --data "$DATA/coco/$VAL" --pairs "$PAIRS" --crop "$SIZE" --seed 0 --device cpu \
  --out "$RUN/figures/correspondence.png" || say "warning: correspond failed; the report goes on without it"
run_step plot "$RUN/figures/curves.png" "$BIN/densecl" plot "$RUN/densecl" "$RUN/mocov2" --out "$RUN/figures/curves.png" \
  || say "warning: plot failed; the report goes on without it"

# ---------------------------------------------------------------- 4. report
say "report: $REPORT"
[ -n "$DRY_RUN" ] && exit 0
printf 'EPOCHS=%s CROP=%s BATCH=%s QUEUE=%s SEG_ITERS=%s DET_ITERS=%s DET_PROPOSALS=%s DET_ROIS=%s PAIRS=%s N_IMAGES=%s SIZE=%s ARCH=%s\n' \
  "$EPOCHS" "$CROP" "$BATCH" "$QUEUE" "$SEG_ITERS" "$DET_ITERS" "$DET_PROPOSALS" "$DET_ROIS" "$PAIRS" "$N_IMAGES" "$SIZE" "$ARCH" > "$RUN/settings.txt"
"$BIN/python" -c 'import sys; from densecl.experiment_report import write_report; write_report(*sys.argv[1:])' \
  "$RUN" "$REPORT" "$FIGURES"
say "done: $REPORT"
