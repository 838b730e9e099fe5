#!/usr/bin/env bash
# The small-budget study: how long must a ResNet-18 pre-train on a few thousand images, on 2 CPU cores, before
# it is clearly better than random init, and which rule for DenseCL's dense positives is best there?
#
#   bash scripts/small_budget.sh                           resumable: run it again after a stop
#   DRY_RUN=1 bash scripts/small_budget.sh                 print what would run, run nothing
#   RECORD=results/small-budget bash scripts/small_budget.sh   keep the small outputs in the repository
#   STEPS=curves ...                                       only some phases: data, curves, seeds, supervised,
#                                                          eval, report
#   DATASET=bands4 bash scripts/small_budget.sh            the same on 4-band 16-bit scenes (below)
#
# Phase curves, the budget search: one run of each method on seed SEED, with the schedule of EPOCHS epochs,
#   advanced STRETCH iterations at a time (--max-iters), each stretch's checkpoint read by the curve instruments
#   (correspondence C4 and C5 against the views' true geometry, seg-probe). One run goes to its end before the
#   next starts: the record keeps results, not checkpoints, so a run whose directory is lost (a new machine)
#   starts again at iteration 0, and finishing runs one at a time loses at most one. A point is the run's
#   state at that iteration of the long cosine schedule (a higher learning rate than a run that ends there), so
#   it tells how fast each method learns and where quality saturates; the chosen budget is then read over seeds.
#   The methods (the pre-training flags that differ; everything else is the same):
#     densecl   lambda 0.5, positives by the backbone-feature argmax (the paper)
#     mocov2    lambda 0: no dense head, no dense queue
#     geometry  positives from the views' known geometry (--dense-matching geometry)
#     hybrid    geometry for the first SWITCH iterations, then the argmax (--dense-matching hybrid)
#     both      the mean of the paper's loss and the geometric one (--dense-matching both)
# Random init is read by the same instruments once: the floor.
#
# Phase seeds: STUDY_METHODS (DenseCL, MoCo-v2 and the rules the one-seed curves put first) on the pre-training
#   seeds STUDY_SEEDS, advanced and read the same way up to BUDGET, so that every curve up to the budget has
#   a band over 1 + len(STUDY_SEEDS) seeds (the curves' seed SEED is the first seed of every method). With
#   phase eval, a run that reaches BUDGET is read by every instrument at once, before the next run starts.
# Phase supervised: two supervised backbones, seg-finetune from random init: the reference learns the train
#   split's labels, the oracle the train and the evaluated split's (it has seen the objects it is scored on:
#   the top of the label instruments' range, not a competitor). With phase eval, each is read by every
#   instrument as soon as it is trained.
# Phase eval: every instrument (correspondence, dense-nn, over-clustering, seg-probe, SVM) on each study run's
#   checkpoint at BUDGET, on random init and on the two supervised backbones.
# Report (scripts/small_budget_report.py): the curves, the budget that learns, and the study at BUDGET with
#   paired 95 % intervals of each method against MoCo-v2 and the recipe decision.
#
# DATASET=bands4: the embedded procedural scenes as 4-band (RGB and near-infrared) 16-bit TIFFs
# (`densecl data export-scenes --bands 4 --bit-depth 16`), 2400 train and 800 val images at 128 px, in COCO and VOC
# layouts; pre-training reads the train images' stored values with the mean and std measured at start, and
# the instruments read the val split (this data set has no test split). Its own RUN, RECORD and report.
#
# Settings are environment overrides. CPU: 2-core AMD EPYC without AVX-512 (benchmarks/step_speed.py, idle):
# ResNet-18 batch 32 fp32 + channels_last, crop 96: 0.82 s a DenseCL step, 1.05 s MoCo-v2 (the same within
# this machine's noise); crop 160: 2.19 s; bf16 is 13x slower here, so PRECISION=fp32 (fixed for the study,
# whatever another machine would choose, so that every stretch of a run computes alike).
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=small-budget
BIN=${BIN:-.venv/bin}
DRY_RUN=${DRY_RUN:-}
REPORT=${REPORT:-docs/results.md}  # both data sets' sections, from the runs (or records) that exist
RUN_PHOTO=${RUN_PHOTO:-runs/small-budget} RUN_BANDS4=${RUN_BANDS4:-runs/small-budget-bands4}

DATASET=${DATASET:-photo}
case $DATASET in
  photo)
    RUN=${RUN:-$RUN_PHOTO} RUN_PHOTO=${RUN:-$RUN_PHOTO}
    STEPS=${STEPS:-data curves seeds supervised eval report}
    DATA=${DATA:-.cache/study-scenes}   # the photo scenes of scripts/experiment.sh: the same 2400 train images
    N_IMAGES=${N_IMAGES:-4000} SIZE=${SIZE:-192} SPLIT=test EVAL_CROP=${EVAL_CROP:-160}
    TRAIN_N=$((N_IMAGES * 6 / 10)) ;;
  bands4)  # the methods the photo curves chose, on three seeds: no curves of every rule first
    RUN=${RUN:-$RUN_BANDS4} RUN_BANDS4=${RUN:-$RUN_BANDS4}
    STEPS=${STEPS:-data seeds supervised eval report} STUDY_SEEDS=${STUDY_SEEDS:-0 1 2}
    DATA=${DATA:-.cache/study-bands4}
    TRAIN_N=${TRAIN_N:-2400} VAL_N=${VAL_N:-800} SIZE=${SIZE:-128} SPLIT=val EVAL_CROP=${EVAL_CROP:-112}
    TRAIN_IMAGES=$DATA/coco/train ;;
  *) echo "small-budget: DATASET must be photo or bands4, got $DATASET"; exit 2 ;;
esac
ASSETS=${ASSETS:-.cache/assets}
ARCH=${ARCH:-resnet18}
HIDDEN=${HIDDEN:-512}
CROP=${CROP:-96}                # a 3 x 3 C5 grid; 2.7x cheaper a step than 160
# correspondence reads views of EVAL_CROP px: 160 on the photo scenes, as the 1050-step study did; 112 on bands4
BATCH=${BATCH:-32}
QUEUE=${QUEUE:-1024}            # below the 2400 train images
LR=${LR:-0.3}
EMA=${EMA:-0.99}
PRECISION=${PRECISION:-fp32}
DEVICE=${DEVICE:-cpu}
WORKERS=${WORKERS:-1}
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-60}            # 4500 iterations of 75 (2400 images / 32)
STRETCH=${STRETCH:-750}         # 10 epochs between curve points
SWITCH=${SWITCH:-1500}          # hybrid: geometric positives for the first third of the schedule
METHODS=${METHODS:-densecl mocov2 hybrid geometry both}
STUDY_METHODS=${STUDY_METHODS:-densecl mocov2 hybrid both}
STUDY_SEEDS=${STUDY_SEEDS:-1 2}
BUDGET=${BUDGET:-$((EPOCHS * (TRAIN_N / BATCH)))}  # the iteration the study is read at (a curve point)
if [ $((BUDGET % STRETCH)) != 0 ]; then
  echo "small-budget: BUDGET ($BUDGET) must be a multiple of STRETCH ($STRETCH): only those iterations keep a checkpoint"
  exit 2
fi
REF_ITERS=${REF_ITERS:-4500}    # supervised backbones: seg-finetune iterations at batch 8, crop REF_CROP
REF_CROP=${REF_CROP:-96}
REF_OS=${REF_OS:-8}             # output stride 8, the protocol's FCN-D8 (32 is a 3 x 3 grid at crop 96)
REF_LR=${REF_LR:-0.02}
PAIRS=${PAIRS:-200}
PROBE_EPOCHS=${PROBE_EPOCHS:-5}
DENSE_STAGE=c4 MEMORY=1000
DEADLINE=${DEADLINE:-} MIN_STEP_S=${MIN_STEP_S:-20} KEEP_GOING=${KEEP_GOING:-}
RECORD=${RECORD:-}
FIGURES=${FIGURES:-docs/figures}

source "$(dirname "$0")/study_lib.sh"
[ -n "$DRY_RUN" ] || mkdir -p "$RUN/eval" "$RUN/figures"
TIMING=$RUN/timing.tsv
CURVE_INSTRUMENTS=(correspondence seg-probe)
INSTRUMENTS=(correspondence dense-nn overcluster seg-probe svm)  # the study's, at BUDGET
[ -z "$RECORD" ] || [ ! -d "$RECORD" ] || record "$RECORD" "$RUN"
note_machine

# flags METHOD: FLAGS=(the pre-training flags of a method)
flags() {
  case $1 in
    densecl) FLAGS=(--loss-lambda 0.5 --comment "DenseCL (the paper: feature argmax)") ;;
    mocov2) FLAGS=(--loss-lambda 0 --comment "MoCo-v2") ;;
    geometry) FLAGS=(--loss-lambda 0.5 --dense-matching geometry --comment "geometric positives") ;;
    hybrid) FLAGS=(--loss-lambda 0.5 --dense-matching hybrid --dense-matching-switch "$SWITCH"
                   --comment "geometric positives, then the argmax from iteration $SWITCH") ;;
    both) FLAGS=(--loss-lambda 0.5 --dense-matching both --comment "the argmax loss and the geometric loss") ;;
    *) say "unknown method $1"; exit 2 ;;
  esac
}

# ---------------------------------------------------------------- data
if wants data && [ "$DATASET" = photo ] && [ ! -e "$DATA/README.md" ]; then
  if [ ! -d "$ASSETS" ]; then say "assets: make assets"; [ -n "$DRY_RUN" ] || make assets; fi
  run_step scenes "" "$BIN/densecl" data scenes --objects "$ASSETS/objects" --backgrounds "$ASSETS/backgrounds" \
    --out "$DATA" --n "$N_IMAGES" --size "$SIZE" --seed 0
fi
if wants data && [ "$DATASET" = bands4 ]; then
  for layout in coco voc; do
    run_step "scenes-$layout" "$DATA/$layout" "$BIN/densecl" data export-scenes --format "$layout" --out "$DATA/$layout" \
      --n-train "$TRAIN_N" --n-val "$VAL_N" --size "$SIZE" --bands 4 --bit-depth 16 --seed 0
  done
fi

# advance TOTAL SEEDS METHODS...: every (seed, method) run in turn, each a STRETCH of iterations at a time up to
# TOTAL, each stretch's checkpoint read by the curve instruments, and at BUDGET by every instrument (phase eval)
advance() {
  local total=$1 seeds=$2 seed method name; shift 2
  for seed in $seeds; do
    for method in "$@"; do
      name=$method-s$seed
      flags "$method"
      for ((UNTIL = STRETCH; UNTIL <= total; UNTIL += STRETCH)); do
        if all_read "$name" "$UNTIL" "$total"; then say "skip $name from $UNTIL (every point read)"; break; fi
        pretrain "$name" "$seed" --keep-every "$STRETCH" "${FLAGS[@]}"  # UNTIL: stop at this stretch's end
        point_protocols "$UNTIL"
        read_point "$name" "$UNTIL" "${PROTOCOLS[@]}"
      done
    done
  done
  unset UNTIL
}

# point_protocols ITERATION: PROTOCOLS=(what reads a run's checkpoint there): the curve instruments, and at BUDGET
# with phase eval every instrument (the curve instruments among them)
point_protocols() {
  PROTOCOLS=("${CURVE_INSTRUMENTS[@]}")
  if [ "$1" = "$BUDGET" ] && wants eval; then PROTOCOLS=("${INSTRUMENTS[@]}"); fi
}

# all_read NAME FROM TOTAL: every point of run NAME from iteration FROM to TOTAL has been read: nothing left to
# pre-train it for
all_read() {
  local name=$1 at protocol
  for ((at = $2; at <= $3; at += STRETCH)); do
    point_protocols "$at"
    for protocol in "${PROTOCOLS[@]}"; do [ -e "$RUN/eval/$name-at${at}_$protocol.json" ] || return 1; done
  done
}

# read_point NAME ITERATION PROTOCOLS...: the instruments on run NAME's checkpoint at ITERATION, if it exists
read_point() {
  local name=$1 at=$2 protocol point; shift 2
  point=$RUN/$name/$(printf "checkpoint_%07d.pt" "$at")  # checkpoint.NUMBERED_NAME
  if [ -n "$DRY_RUN" ] || [ -e "$point" ]; then
    for protocol in "$@"; do instrument "$protocol" "$name-at$at" --weights "$point" --arch "$ARCH"; done
  fi
}

# what the weights without a stored input description read (random init, the supervised backbones): on the photo
# scenes RGB photos with ImageNet's statistics; on bands4 the 4 bands with the mean and std measured as the runs do
INPUT=() RANDOM_INPUT=()
if [ "$DATASET" = bands4 ] && { wants curves || wants supervised || wants eval; }; then
  INPUT=("--mean" "M" "--std" "S")
  [ -n "$DRY_RUN" ] || read -r -a INPUT <<< "$("$BIN/densecl" data stats "$TRAIN_IMAGES" | grep -o -- '--mean [^ ]* --std [^ ]*')"
  RANDOM_INPUT=(--in-channels 4 "${INPUT[@]}")
fi
FLOOR=(--weights random --arch "$ARCH" "${RANDOM_INPUT[@]}")

# ---------------------------------------------------------------- curves
if wants curves; then
  for protocol in "${CURVE_INSTRUMENTS[@]}"; do instrument "$protocol" random "${FLOOR[@]}"; done
  read -r -a methods <<< "$METHODS"
  advance "$((EPOCHS * (TRAIN_N / BATCH)))" "$SEED" "${methods[@]}"
fi

# ---------------------------------------------------------------- seeds
read -r -a study_methods <<< "$STUDY_METHODS"
wants seeds && advance "$BUDGET" "$STUDY_SEEDS" "${study_methods[@]}"

# ---------------------------------------------------------------- supervised
# read_supervised NAME PROTOCOLS...: the instruments on a supervised backbone, if it exists
read_supervised() {
  local name=$1 protocol; shift
  if [ -n "$DRY_RUN" ] || [ -e "$RUN/$name/backbone.pth" ]; then
    for protocol in "$@"; do
      instrument "$protocol" "$name" --weights "$RUN/$name/backbone.pth" --arch "$ARCH" "${INPUT[@]}"
    done
  fi
}

if wants supervised; then  # with phase eval, each backbone read by every instrument as soon as it is trained
  supervised reference train "${RANDOM_INPUT[@]}"
  if wants eval; then read_supervised reference "${INSTRUMENTS[@]}"; fi
  train_and "$SPLIT"
  supervised oracle "train+$SPLIT" "${RANDOM_INPUT[@]}"
  if wants eval; then read_supervised oracle "${INSTRUMENTS[@]}"; fi
fi

# ---------------------------------------------------------------- eval
if wants eval; then
  for protocol in "${INSTRUMENTS[@]}"; do
    for seed in $(printf '%s\n' $SEED $STUDY_SEEDS | awk '!seen[$0]++'); do
      for method in "${study_methods[@]}"; do
        point=$RUN/$method-s$seed/$(printf "checkpoint_%07d.pt" "$BUDGET")
        if [ -n "$DRY_RUN" ] || [ -e "$point" ] || [ -e "$RUN/eval/$method-s$seed-at${BUDGET}_$protocol.json" ]; then
          instrument "$protocol" "$method-s$seed-at$BUDGET" --weights "$point" --arch "$ARCH"
        else
          say "skip $protocol of $method-s$seed at $BUDGET (no checkpoint there yet)"
        fi
      done
    done
    instrument "$protocol" random "${FLOOR[@]}"
    for name in reference oracle; do read_supervised "$name" "$protocol"; done
  done
fi

# ---------------------------------------------------------------- report
if wants report; then
  sections=()
  [ -e "$RUN_PHOTO/eval" ] && sections+=(--run "photo scenes=$RUN_PHOTO")
  [ -e "$RUN_BANDS4/eval" ] && sections+=(--run "4-band 16-bit scenes=$RUN_BANDS4")
  [ -n "$DRY_RUN" ] && [ ${#sections[@]} = 0 ] && sections=(--run "photo scenes=$RUN")
  run_step report "" "$BIN/python" scripts/small_budget_report.py "${sections[@]}" --out "$REPORT" --figures "$FIGURES" \
    --budget "$BUDGET"
fi
