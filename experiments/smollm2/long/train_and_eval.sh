#!/usr/bin/env bash
# One run of the long SmolLM2 experiment: train (or resume) in segments of SEGMENT steps, evaluate
# every new checkpoint after each segment (so the curve grows while the run goes on), and keep
# Adam's state and the RL-Extra anchor only in the newest checkpoint, the one a resume reads
# (`--keep-optimizer last`; the analyses read weights; ~1 GB per optimizer file, 540 MB per anchor).
# Resumable: rerun the same command after a stop.
# Usage (repository root): bash experiments/smollm2/long/train_and_eval.sh NAME LR [train options...]
#   e.g. bash experiments/smollm2/long/train_and_eval.sh grpo-lr2e-06 2e-6
#        bash experiments/smollm2/long/train_and_eval.sh rlextra-20-20-lr2e-06 2e-6 --rl-extra 20,20
set -euo pipefail
cd "$(dirname "$0")/../../.."
NAME=$1 LR=$2; shift 2
W=experiments/smollm2/long/work
STEPS=${STEPS:-150} SEGMENT=${SEGMENT:-30} SAVE=10
EVAL_FROM=${EVAL_FROM:-0}  # evaluate checkpoints from this step on (a rerun whose earlier curve is on record)
EVAL_EVERY=${EVAL_EVERY:-10}  # evaluate every this many steps (a multiple of 10; 50 for a sparse curve)
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
RX=.venv/bin/rlextra
TASK=(--task $W/task.jsonl --n-test 128 --task-seed 0 --instruction "Answer with only the number.")
EVAL=(--k 4 --temperature 0.6 --top-p 0.95 --max-new-tokens 16 --backend rlextra --seed 0 -q)
mkdir -p $W/runs $W/eval
RUN=$W/runs/$NAME
log() { echo "[$(date -u +%FT%TZ)] $*" | tee -a $W/commands.log; }
checkpoints() { ls -d $RUN/checkpoint-* 2>/dev/null | sort -V; }  # in step order (checkpoint-90 before -100)
evaluate() {
  for c in $(checkpoints); do
    st=${c##*-}; out=$W/eval/$NAME-$st.json
    [ -e "$out" ] && continue
    [ "$st" -ge "$EVAL_FROM" ] || continue
    [ $((st % EVAL_EVERY)) = 0 ] || continue
    [ -e "$c/trainer_state.json" ] || [ "$st" = 0 ] || continue  # complete checkpoints only
    t0=$SECONDS; $RX eval "$c" "${TASK[@]}" "${EVAL[@]}" -o "$out"
    log "eval $c -> $out ($((SECONDS - t0)) s)"
  done
}
for ((end = SEGMENT; end <= STEPS; end += SEGMENT)); do
  if [ ! -e "$RUN/checkpoint-$end/trainer_state.json" ]; then
    t0=$SECONDS
    $RX train --model experiments/smollm2/work/model -o $RUN "${TASK[@]}" --steps $end --save-every $SAVE \
      --lr "$LR" --prompts-per-step 8 --num-generations 4 --max-completion-length 16 --eval-problems 0 \
      --seed 0 --keep-optimizer last -q "$@"
    log "train $NAME to step $end: $RX train ... --steps $end --lr $LR $* ($((SECONDS - t0)) s)"
  fi
  evaluate
done
log "done $NAME"
