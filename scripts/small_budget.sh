#!/usr/bin/env bash
# The small-budget study: how long must a ResNet-18 pre-train on a few thousand images, on 2 CPU cores, before
# it is clearly better than random init, and which rule for DenseCL's dense positives is best there?
#
#   bash scripts/small_budget.sh                           resumable: run it again after a stop
#   DRY_RUN=1 bash scripts/small_budget.sh                 print what would run, run nothing
#   RECORD=results/small-budget bash scripts/small_budget.sh   keep the small outputs in the repository
#   STEPS=curves ...                                       only some phases: data, curves, report
#   DATASET=bands4 bash scripts/small_budget.sh            the same on 4-band 16-bit scenes (below)
#
# Phase curves, the budget search: one run of each method on seed SEED, with the schedule of EPOCHS epochs,
#   all advanced STRETCH iterations at a time in turn (round robin, --max-iters), and each stretch's checkpoint
#   read by the curve instruments (correspondence C4 and C5 against the views' true geometry, seg-probe). A stop
#   leaves every method measured at the same iterations. A point is the run's state at that iteration of the
#   long cosine schedule (a higher learning rate than a run that ends there), so it tells how fast each method
#   learns and where quality saturates; the chosen budget is then trained to its own end, over seeds.
#   The methods (the pre-training flags that differ; everything else is the same):
#     densecl   lambda 0.5, positives by the backbone-feature argmax (the paper)
#     mocov2    lambda 0: no dense head, no dense queue
#     geometry  positives from the views' known geometry (--dense-matching geometry)
#     hybrid    geometry for the first SWITCH iterations, then the argmax (--dense-matching hybrid)
#     both      the mean of the paper's loss and the geometric one (--dense-matching both)
# Random init is read by the same instruments once: the floor. Report: scripts/small_budget_report.py.
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
STEPS=${STEPS:-data curves report}

DATASET=${DATASET:-photo}
case $DATASET in
  photo)
    RUN=${RUN:-runs/small-budget}
    DATA=${DATA:-.cache/study-scenes}   # the photo scenes of scripts/experiment.sh: the same 2400 train images
    N_IMAGES=${N_IMAGES:-4000} SIZE=${SIZE:-192} SPLIT=test EVAL_CROP=${EVAL_CROP:-160}
    TRAIN_N=$((N_IMAGES * 6 / 10))
    REPORT=${REPORT:-docs/results-small-budget.md} ;;
  bands4)
    RUN=${RUN:-runs/small-budget-bands4}
    DATA=${DATA:-.cache/study-bands4}
    TRAIN_N=${TRAIN_N:-2400} VAL_N=${VAL_N:-800} SIZE=${SIZE:-128} SPLIT=val EVAL_CROP=${EVAL_CROP:-112}
    TRAIN_IMAGES=$DATA/coco/train
    REPORT=${REPORT:-docs/results-small-budget-bands4.md} ;;
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
PAIRS=${PAIRS:-200}
PROBE_EPOCHS=${PROBE_EPOCHS:-5}
DENSE_STAGE=c4 MEMORY=1000
DEADLINE=${DEADLINE:-} MIN_STEP_S=${MIN_STEP_S:-20} KEEP_GOING=${KEEP_GOING:-}
RECORD=${RECORD:-}
FIGURES=${FIGURES:-docs/figures}

source "$(dirname "$0")/study_lib.sh"
[ -n "$DRY_RUN" ] || mkdir -p "$RUN/eval" "$RUN/figures"
TIMING=$RUN/timing.tsv
if [ -z "$DRY_RUN" ] && [ ! -e "$RUN/MACHINE" ]; then  # where the study ran, for the report
  "$BIN/python" -c 'import os, torch; from densecl.precision import cpu_model
print(f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")' > "$RUN/MACHINE"
fi
CURVE_INSTRUMENTS=(correspondence seg-probe)
INSTRUMENTS=("${CURVE_INSTRUMENTS[@]}")
[ -z "$RECORD" ] || [ ! -d "$RECORD" ] || record "$RECORD" "$RUN"

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

# ---------------------------------------------------------------- curves
if wants curves; then
  floor=(--weights random --arch "$ARCH")
  if [ "$DATASET" = bands4 ]; then  # random weights read the bands as the runs do: 4 channels, the measured mean and std
    measured=("--mean" "M" "--std" "S")
    [ -n "$DRY_RUN" ] || read -r -a measured <<< "$("$BIN/densecl" data stats "$TRAIN_IMAGES" | grep -o -- '--mean [^ ]* --std [^ ]*')"
    floor+=(--in-channels 4 "${measured[@]}")
  fi
  for protocol in "${CURVE_INSTRUMENTS[@]}"; do instrument "$protocol" random "${floor[@]}"; done
  total=$((EPOCHS * (TRAIN_N / BATCH)))
  for ((UNTIL = STRETCH; UNTIL <= total; UNTIL += STRETCH)); do
    for method in $METHODS; do
      name=$method-s$SEED
      flags "$method"
      pretrain "$name" "$SEED" --keep-every "$STRETCH" "${FLAGS[@]}"  # UNTIL: stop at this stretch's end
      point=$RUN/$name/$(printf "checkpoint_%07d.pt" "$UNTIL")  # checkpoint.NUMBERED_NAME
      if [ -n "$DRY_RUN" ] || [ -e "$point" ]; then
        for protocol in "${CURVE_INSTRUMENTS[@]}"; do
          instrument "$protocol" "$name-at$UNTIL" --weights "$point" --arch "$ARCH"
        done
      fi
    done
  done
fi

# ---------------------------------------------------------------- report
if wants report; then
  run_step report "" "$BIN/python" scripts/small_budget_report.py --run "$RUN" --out "$REPORT" --figures "$FIGURES"
fi
