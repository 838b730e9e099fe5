# The steps of a resumable study, shared by scripts/experiment.sh and scripts/small_budget.sh (sourced, not run).
#
# The driver sets the study's settings (RUN, RECORD, DATA, BIN, EPOCHS, the pre-training and instrument
# settings, INSTRUMENTS, STEPS, DRY_RUN, TIMING, DEADLINE, MIN_STEP_S, KEEP_GOING) before it calls these.
# shellcheck shell=bash
say() { echo "${STUDY:-experiment}: $*"; }
wants() { [[ " $STEPS " == *" $1 "* ]]; }

# record: copy the small outputs from $1 to $2 (RECORD -> RUN at start, RUN -> RECORD after each step); a file that
# is there is replaced only by a newer one (cp -u); checkpoint-info.json is written for every finished pre-training.
record() {
  [ -n "$RECORD" ] && [ -z "$DRY_RUN" ] || return 0
  local from=$1 to=$2 dir name file files
  mkdir -p "$to/eval" "$to/figures"
  for file in "$from"/eval/*.json "$from"/eval/*.npz "$from"/figures/*.png "$from"/timing.tsv "$from"/PRETRAIN_COMMIT "$from"/MACHINE; do
    [ -e "$file" ] && cp -u "$file" "$to/${file#"$from"/}"
  done
  for dir in "$from"/*/; do
    name=$(basename "$dir")
    case $name in eval|figures) continue ;; esac
    [ "$to" = "$RUN" ] && ! evaluated "$name" && continue  # a run not fully evaluated is trained again
    if [ "$to" = "$RECORD" ] && [ ! -e "$dir/checkpoint-info.json" ] && finished "$dir/checkpoint.pt"; then
      "$BIN/densecl" checkpoint info "$dir/checkpoint.pt" --epochs "$EPOCHS" > "$dir/checkpoint-info.json.tmp" \
        && mv "$dir/checkpoint-info.json.tmp" "$dir/checkpoint-info.json"
    fi
    files=(seg-finetune.json)  # a pre-training's curves are kept once it has finished
    [ -e "$dir/checkpoint-info.json" ] && files+=(metrics.jsonl checkpoint-info.json)
    for file in "${files[@]}"; do
      [ -e "$dir/$file" ] && mkdir -p "$to/$name" && cp -u "$dir/$file" "$to/$name/"
    done
  done
  return 0
}

# evaluated NAME: every instrument has read this backbone (its checkpoint is no longer needed)
evaluated() {
  local protocol
  for protocol in "${INSTRUMENTS[@]}"; do [ -e "$RUN/eval/${1}_$protocol.json" ] || return 1; done
}

# run_step NAME OUTPUT CMD...: run CMD unless OUTPUT exists ("": always); log its wall time.
# With DEADLINE (epoch seconds) a step is skipped when under MIN_STEP_S seconds are left and stopped at the
# deadline (SIGTERM: a pre-training saves its checkpoint first); the report is always written.
run_step() {
  local name=$1 out=$2; shift 2
  if [ -n "$out" ] && [ -e "$out" ]; then say "skip $name ($out exists)"; return 0; fi
  if [ -n "$DRY_RUN" ] && [ -n "$out" ]; then  # a dry run plans each output once, as a real run makes it once
    [[ " ${PLANNED:-} " == *" $out "* ]] && { say "skip $name (planned above)"; return 0; }
    PLANNED="${PLANNED:-} $out"
  fi
  local limit=() left
  if [ -n "$DEADLINE" ] && [ "$name" != report ]; then
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt "$MIN_STEP_S" ]; then say "skip $name (deadline: $left s left)"; return 0; fi
    limit=(timeout --signal=TERM --kill-after=60 "$left")
  fi
  say "$name: $(printf '%q ' "$@")"
  [ -n "$DRY_RUN" ] && return 0
  local t0=$SECONDS status=0
  "${limit[@]}" "$@" || status=$?
  local reached=""  # a pre-training's line also says the iteration its checkpoint reached (a restart from 0 shows)
  [ -z "${REACHED:-}" ] || reached=$'\t'$(checkpoint_step "$REACHED" || echo unknown)
  printf '%s\t%s\t%s%s\n' "$name" $((SECONDS - t0)) "$(date -u +%FT%TZ)" "$reached" >> "$TIMING"
  record "$RUN" "$RECORD"
  if [ ${#limit[@]} -gt 0 ] && [ "$status" = 124 ]; then say "$name stopped at the deadline"; return 0; fi
  if [ "$status" != 0 ] && [ -n "$KEEP_GOING" ]; then say "$name failed (exit status $status); going on"; return 0; fi
  return "$status"
}

# same_code: every pre-training of one study runs the same code (a change to the augmentation or the
# loss would otherwise differ between the methods' runs); the first one records its commit in RUN.
same_code() {
  local now recorded
  now=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain --untracked-files=no -- src 2>/dev/null)" ] || now="$now-modified"
  if [ ! -e "$RUN/PRETRAIN_COMMIT" ]; then
    [ -n "$DRY_RUN" ] || echo "$now" > "$RUN/PRETRAIN_COMMIT"
    return 0
  fi
  recorded=$(cat "$RUN/PRETRAIN_COMMIT")
  if [ "$recorded" != "$now" ] && [ "${MIXED_CODE:-}" != 1 ]; then
    say "stop: $RUN was pre-trained by commit $recorded, this tree is $now; pre-train with that code:"
    say "  git worktree add ../study-code ${recorded%-modified} and run its scripts/experiment.sh with RUN and DATA set to these folders"
    say "  (or MIXED_CODE=1 to go on with this code anyway)"
    exit 1
  fi
}

# note_machine: RUN/MACHINE lists every machine that has run a step of the study (a record goes from one machine
# to the next), one line each, for the report
note_machine() {
  [ -z "$DRY_RUN" ] || return 0
  local here
  here=$("$BIN/python" -c 'import os, torch; from densecl.precision import cpu_model
print(f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")' \
    2> /dev/null) || return 0  # no description is no reason to stop a study
  grep -qxF "$here" "$RUN/MACHINE" 2> /dev/null || echo "$here" >> "$RUN/MACHINE"
}

# finished PATH: PATH is a checkpoint that has all EPOCHS epochs (a missing file is checked without starting Python)
finished() {
  [ -e "$1" ] && "$BIN/densecl" checkpoint finished "$1" --epochs "$EPOCHS" > /dev/null 2>&1
}

# checkpoint_step PATH: the iteration a checkpoint was written at (0 when there is none)
checkpoint_step() {
  [ -e "$1" ] || { echo 0; return 0; }
  "$BIN/densecl" checkpoint info "$1" | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["step"])'
}

# pretrain NAME SEED FLAGS...: one run in RUN/NAME; resumed when it has a checkpoint. With UNTIL (an iteration)
# set, the run stops there (--max-iters; the schedule still spans EPOCHS) and a later call with a larger UNTIL
# goes on: a study can advance all its runs a stretch at a time.
pretrain() {
  local name=$1 seed=$2; shift 2
  local ckpt=$RUN/$name/checkpoint.pt until=()
  if evaluated "$name"; then say "skip pretrain-$name (evaluated)"; return 0; fi
  if finished "$ckpt"; then
    say "skip pretrain-$name ($ckpt has all $EPOCHS epochs)"
    return 0
  fi
  if [ -n "${UNTIL:-}" ]; then
    if [ "$(checkpoint_step "$ckpt")" -ge "$UNTIL" ]; then
      say "skip pretrain-$name (at iteration $UNTIL)"
      return 0
    fi
    until=(--max-iters "$UNTIL")
  fi
  same_code
  if [ -e "$ckpt" ]; then
    REACHED=$ckpt run_step "pretrain-$name" "" "$BIN/densecl" pretrain --resume "$ckpt" --epochs "$EPOCHS" "${until[@]}"
  else
    REACHED=$ckpt run_step "pretrain-$name" "" "$BIN/densecl" pretrain --config demo_cpu --arch "$ARCH" --hidden-dim "$HIDDEN" \
      --queue-len "$QUEUE" --momentum "$EMA" --lr "$LR" --batch-size "$BATCH" --crop-size "$CROP" --epochs "$EPOCHS" \
      --workers "$WORKERS" --precision "$PRECISION" --device "$DEVICE" --save-every 50 --log-every 10 \
      --data "${TRAIN_IMAGES:-$DATA/unlabeled/train}" --seed "$seed" --output-dir "$RUN/$name" --bn-group-size none "${until[@]}" "$@"  # flags after win
  fi
}

# supervised NAME TRAIN_SPLIT INPUT_FLAGS...: seg-finetune from random init on TRAIN_SPLIT's labels (REF_ITERS
# iterations at batch 8, crop REF_CROP, output stride REF_OS, learning rate REF_LR), the backbone to
# RUN/NAME/backbone.pth; evaluated on SPLIT. A backbone already there that was trained with other settings stops
# the study (its readings would be recorded as this schedule's): move it and its readings away to train it again.
supervised() {
  local name=$1 split=$2; shift 2
  local settings=(--crop "$REF_CROP" --batch-size 8 --iters "$REF_ITERS" --lr "$REF_LR" --output-stride "$REF_OS")
  if [ -e "$RUN/$name/seg-finetune.json" ]; then
    local other
    other=$("$BIN/python" - "$RUN/$name/seg-finetune.json" "${settings[@]}" <<'PY'
import json, sys
path, asked = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
config = json.load(open(path))["config"]
trained = {flag: config[flag[2:].replace("-", "_")] for flag in asked}
print(", ".join(f"{flag} {trained[flag]} (asked {v})" for flag, v in asked.items() if float(trained[flag]) != float(v)))
PY
) || exit 1
    if [ -n "$other" ]; then
      say "stop: $RUN/$name was trained with $other; move it and its readings ($RUN/eval/${name}_*) away to train it again"
      exit 1
    fi
  fi
  if evaluated "$name"; then say "skip $name (evaluated)"; return 0; fi
  run_step "$name" "$RUN/$name/backbone.pth" "$BIN/densecl" eval seg-finetune --weights random --arch "$ARCH" "$@" \
    --data "$DATA/voc" --train-split "$split" --val-split "$SPLIT" "${settings[@]}" --workers "$WORKERS" \
    --device "$DEVICE" --seed 0 --save-backbone "$RUN/$name/backbone.pth" --out "$RUN/$name/seg-finetune.json" \
    --save-every 100 --resume
}

# train_and SPLIT: the segmentation split list train+SPLIT (the oracle's labels), written once
train_and() {
  local lists=$DATA/voc/ImageSets/Segmentation
  if [ -z "$DRY_RUN" ] && [ ! -e "$lists/train+$1.txt" ]; then
    cat "$lists/train.txt" "$lists/$1.txt" > "$lists/train+$1.txt.tmp" && mv "$lists/train+$1.txt.tmp" "$lists/train+$1.txt"
  fi
}

# instrument PROTOCOL NAME WEIGHTS...: one instrument on one backbone, RUN/eval/NAME_PROTOCOL.json
instrument() {
  local protocol=$1 name=$2; shift 2
  local out=$RUN/eval/${name}_$protocol.json args=(--device "$DEVICE" --seed 0)
  case $protocol in
    correspondence) args+=(--data "$DATA/coco/$SPLIT" --pairs "$PAIRS" --crop "${EVAL_CROP:-$CROP}" --stages c4,c5) ;;
    dense-nn) args+=(--data "$DATA/voc" --val-split $SPLIT --stages "$DENSE_STAGE" --memory-sizes "$MEMORY"
                     --masks-out "$RUN/eval/${name}_dense-nn-masks.npz") ;;
    overcluster) args+=(--data "$DATA/voc" --val-split $SPLIT --stages "$DENSE_STAGE" --ks 0,4x) ;;
    seg-probe) args+=(--data "$DATA/voc" --val-split $SPLIT --stages c4,c5 --epochs "$PROBE_EPOCHS") ;;
    svm) args+=(--data "$DATA/voc" --val-split $SPLIT --image-size "$SIZE" --workers "$WORKERS") ;;
  esac
  run_step "$protocol-$name" "$out" "$BIN/densecl" eval "$protocol" "$@" "${args[@]}" --out "$out"
}
