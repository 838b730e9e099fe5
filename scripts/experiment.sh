#!/usr/bin/env bash
# The 1050-step study: does DenseCL give better dense features than MoCo-v2? Measured over pre-training seeds.
# (make experiment runs the small-budget study, scripts/small_budget.sh, which took over from this one.)
#
#   bash scripts/experiment.sh             resumable: run it again after a stop
#   DRY_RUN=1 bash scripts/experiment.sh   print what would run, run nothing
#   STEPS=pretrain bash scripts/experiment.sh   only some phases: data, pretrain, grouped, ablations, reference, oracle, eval, report
#   RECORD=results/cpu-study bash scripts/experiment.sh   keep the small outputs in the repository (see RECORD below)
#   bash scripts/experiment_gpu.sh         the same study at GPU scale, in one call on one GPU
#
# The study (docs/results-1050-steps.md):
#   1. photo scenes from Debian's tuxpaint stamps and wallpapers (make assets): N_IMAGES at SIZE px,
#      60/20/20 % train/val/test with disjoint cut-outs and backgrounds (docs/photo-scenes.md).
#   2. pre-training on the train images: DenseCL (lambda 0.5) and MoCo-v2 (lambda 0), everything else
#      identical, SEEDS pre-training seeds each (a seed fixes the initial weights and the data order of both).
#   2b. grouped batch norm (phase grouped): both methods again on the same seeds with every batch norm over
#      BN_GROUP images and the key batch shuffled across the groups (--bn-group-size: shuffle-BN in one
#      process, as the authors' GPUs), against 2.'s single group of the whole batch, where a query and its
#      key share batch statistics. Run per seed right after 2.'s two runs, so a stop leaves whole seeds.
#   3. ablations of DenseCL on the first seed, each a flag whose default is the paper's behaviour:
#      a lambda warm-up over half the run, dense positives from the known view geometry instead of the
#      backbone-feature argmax, a shorter dense queue.
#   4. two supervised backbones (seg-finetune --save-backbone from random init, the same recipe): the
#      reference learns the train split's segmentation labels, the fair supervised baseline; the oracle
#      learns the train and the test labels. The oracle has seen the test objects and backgrounds, so it
#      is no competitor: it is the top of the label instruments' range, what they read when a backbone
#      knows the test split's classes (labels teach no location: not of correspondence's). Random init
#      is the bottom.
#   5. evaluation on the test split, the same for every backbone: correspondence against ground-truth
#      geometry (C4, C5), dense-nn (in-context nearest-neighbour segmentation), over-clustering,
#      seg-probe, VOC07-style SVM.
#   6. report: scripts/experiment_report.py writes docs/results-1050-steps.md (means ± std over seeds, paired
#      DenseCL - MoCo-v2 differences with 95 % intervals) and docs/figures/.
#
# Every step is skipped when its output exists; an unfinished pre-training or reference fine-tuning resumes from its checkpoint.
# A backbone with every instrument's output is not trained again: its checkpoint may be deleted.
# RECORD (a folder, e.g. results/cpu-study): the study's small outputs, kept where git keeps them so that a study
# goes on on another machine: each run's metrics.jsonl and checkpoint-info.json (its stored config), every
# instrument's JSON, the figures, timing.tsv and PRETRAIN_COMMIT. They are copied into RUN at start and back after
# every step; the report reads RECORD as a RUN. Unfinished checkpoints are not kept: a stop loses that run's steps.
# Settings are environment overrides; the pre-training ones are stored in each checkpoint, and the
# report reads them from there. Wall time of every step that ran: RUN/timing.tsv.
#
# CPU budget (2-core AMD EPYC with AVX512-BF16, idle, benchmarks/step_speed.py --crop 160): ResNet-18,
# batch 32, bf16 + channels_last 0.77 s a step against 1.77 s in fp32 (2.3x), so PRECISION=bf16 here;
# measure again on another CPU (bf16 was 0.8x of fp32 on a Xeon without AMX, 2.9x on a Xeon with AMX: 0.39 s against
# 1.13 s). 2400 train images / 32
# = 75 steps an epoch; EPOCHS=14 is 1050 steps, 20 to 27 minutes a run on an idle
# machine (1.1 to 1.5 s a step with data loading on the same 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DRY_RUN=${DRY_RUN:-}
STEPS=${STEPS:-data pretrain grouped ablations reference oracle eval report}

RUN=${RUN:-runs/study}
ASSETS=${ASSETS:-.cache/assets}
DATA=${DATA:-.cache/study-scenes}
N_IMAGES=${N_IMAGES:-4000}
SIZE=${SIZE:-192}
ARCH=${ARCH:-resnet18}
HIDDEN=${HIDDEN:-512}           # small backbones use hidden = C
EPOCHS=${EPOCHS:-14}
CROP=${CROP:-160}               # a 5 x 5 C5 grid
BATCH=${BATCH:-32}
QUEUE=${QUEUE:-1024}            # below the 2400 train images: a query never meets its own earlier key
LR=${LR:-0.3}                   # for 256; supplementary Table 1: 0.3 for COCO-sized data
EMA=${EMA:-0.99}                # a short run: the key encoder must follow faster than 0.999
PRECISION=${PRECISION:-bf16}
DEVICE=${DEVICE:-cpu}
WORKERS=${WORKERS:-1}
SEEDS=${SEEDS:-0 1 2}
BN_GROUP=${BN_GROUP:-8}         # grouped: 4 groups of 8 at batch 32
WARMUP=${WARMUP:-$((EPOCHS * (N_IMAGES * 6 / 10 / BATCH) / 2))}  # ablation: lambda = 0 for the first half of the run
DENSE_QUEUE=${DENSE_QUEUE:-256} # ablation: a shorter dense queue
REF_ITERS=${REF_ITERS:-4500}    # supervised backbones: seg-finetune iterations (reference: 15 epochs of the train split at batch 8);
REF_CROP=${REF_CROP:-96}        # 600 at crop 160 stayed at the all-background floor, 1500 at 96 reached 13.3 val mIoU,
                                # 4500 at 96 10.9 test mIoU: the train labels do not teach the held-out objects (docs/results-1050-steps.md);
REF_OS=${REF_OS:-8}             # all of those at output stride 32 (a 3 x 3 grid at crop 96); 8 is the protocol's FCN-D8
REF_LR=${REF_LR:-0.02}
PAIRS=${PAIRS:-200}             # correspondence: view pairs of test images
MEMORY=${MEMORY:-1000,10000,30000}  # dense-nn memory sizes in patches (of the 345,600 C4 patches of the train split): 150 s a backbone here
PROBE_EPOCHS=${PROBE_EPOCHS:-5}  # seg-probe epochs: 115 s a backbone here (its default 30 took 802 s); all instruments about 7 min
DENSE_STAGE=${DENSE_STAGE:-c4}  # dense-nn and over-clustering read C4: at C5 (32 px cells on 192 px scenes) random
                                # init and DenseCL both sat at the all-background floor on val
SPLIT=test                      # val is kept for choosing settings; every number is on test
DEADLINE=${DEADLINE:-}          # epoch seconds by which every step but the report has to end (GPU calls); none: no limit
MIN_STEP_S=${MIN_STEP_S:-20}    # with DEADLINE: a step with less time left is skipped
KEEP_GOING=${KEEP_GOING:-}      # 1: a failed step is reported and the rest still run (one-call GPU runs)
RECORD=${RECORD:-}
REPORT=${REPORT:-docs/results-1050-steps.md}
FIGURES=${FIGURES:-docs/figures}

# the study's steps: record, run_step, same_code, pretrain, instrument (scripts/study_lib.sh)
source "$(dirname "$0")/study_lib.sh"
[ -n "$DRY_RUN" ] || mkdir -p "$RUN/eval" "$RUN/figures"
TIMING=$RUN/timing.tsv
# the instruments, cheapest and most dense-specific first: a stopped evaluation leaves whole columns
INSTRUMENTS=(correspondence dense-nn overcluster seg-probe svm)
[ -z "$RECORD" ] || [ ! -d "$RECORD" ] || record "$RECORD" "$RUN"
note_machine

MAIN=() GROUPED=()
for seed in $SEEDS; do MAIN+=("densecl-s$seed" "mocov2-s$seed"); GROUPED+=("densecl-bn$BN_GROUP-s$seed" "mocov2-bn$BN_GROUP-s$seed"); done
FIRST=${SEEDS%% *}
ABLATIONS=("densecl-warmup-s$FIRST" "densecl-geometry-s$FIRST" "densecl-densequeue-s$FIRST")

# ---------------------------------------------------------------- 1. data
if wants data && [ ! -e "$DATA/README.md" ]; then
  if [ ! -d "$ASSETS" ]; then say "assets: make assets"; [ -n "$DRY_RUN" ] || make assets; fi
  run_step scenes "" "$BIN/densecl" data scenes --objects "$ASSETS/objects" --backgrounds "$ASSETS/backgrounds" \
    --out "$DATA" --n "$N_IMAGES" --size "$SIZE" --seed 0
fi

# ---------------------------------------------------------------- 2. pre-training, 3. ablations
for seed in $SEEDS; do
  if wants pretrain; then
    pretrain "densecl-s$seed" "$seed" --loss-lambda 0.5
    pretrain "mocov2-s$seed" "$seed" --loss-lambda 0
  fi
  if wants grouped; then
    pretrain "densecl-bn$BN_GROUP-s$seed" "$seed" --loss-lambda 0.5 --bn-group-size "$BN_GROUP"
    pretrain "mocov2-bn$BN_GROUP-s$seed" "$seed" --loss-lambda 0 --bn-group-size "$BN_GROUP"
  fi
done
if wants ablations; then
  # each ablation's --comment is stored in its checkpoint: the report's label for it
  pretrain "densecl-warmup-s$FIRST" "$FIRST" --loss-lambda 0.5 --lambda-warmup-iters "$WARMUP" \
    --comment "lambda warm-up over the first half of the run"
  pretrain "densecl-geometry-s$FIRST" "$FIRST" --loss-lambda 0.5 --dense-matching geometry \
    --comment "dense positives from the known view geometry"
  pretrain "densecl-densequeue-s$FIRST" "$FIRST" --loss-lambda 0.5 --dense-queue-len "$DENSE_QUEUE" \
    --comment "a shorter dense queue"
fi

# ---------------------------------------------------------------- 4. the supervised backbones
wants reference && supervised reference train
wants oracle && train_and $SPLIT && supervised oracle "train+$SPLIT"

# ---------------------------------------------------------------- 5. evaluation
if wants eval; then
  backbones=()
  for name in "${MAIN[@]}" "${GROUPED[@]}" "${ABLATIONS[@]}"; do
    if finished "$RUN/$name/checkpoint.pt"; then
      backbones+=("$name=$RUN/$name/checkpoint.pt")
    elif evaluated "$name"; then
      say "skip eval of $name (evaluated)"
    else
      say "skip eval of $name (pre-training not finished)"
    fi
  done
  backbones+=(random=random)
  for name in reference oracle; do
    [ -e "$RUN/$name/backbone.pth" ] && backbones+=("$name=$RUN/$name/backbone.pth")
  done
  for protocol in "${INSTRUMENTS[@]}"; do
    for backbone in "${backbones[@]}"; do
      instrument "$protocol" "${backbone%%=*}" --weights "${backbone#*=}" --arch "$ARCH"  # --arch must agree with a file
    done
  done
  run_step curves "" "$BIN/densecl" plot "${MAIN[@]/#/$RUN/}" --out "$RUN/figures/curves.png" || say "warning: plot failed"
  if wants grouped; then
    run_step curves-grouped "" "$BIN/densecl" plot "$RUN/densecl-s$FIRST" "$RUN/mocov2-s$FIRST" "$RUN/densecl-bn$BN_GROUP-s$FIRST" \
      "$RUN/mocov2-bn$BN_GROUP-s$FIRST" --out "$RUN/figures/curves-grouped.png" || say "warning: plot failed"
  fi
  # the matches picture: one test pair, each line green / red / grey by the views' geometry
  run_step matches "$RUN/figures/matches.png" "$BIN/densecl" correspond --weights "$RUN/densecl-s$FIRST/checkpoint.pt" --label "DenseCL, seed $FIRST" \
    --weights "$RUN/mocov2-s$FIRST/checkpoint.pt" --label "MoCo-v2, seed $FIRST" --weights random --label "random init" \
    --arch "$ARCH" --data "$DATA/coco/$SPLIT" --pairs 16 --crop "$CROP" --seed 0 --device "$DEVICE" \
    --out "$RUN/figures/matches.png" || say "warning: matches picture failed"
fi

# ---------------------------------------------------------------- 6. report
if wants report; then
  run_step report "" "$BIN/python" scripts/experiment_report.py --run "$RUN" --data "$DATA" --out "$REPORT" --figures "$FIGURES"
fi
