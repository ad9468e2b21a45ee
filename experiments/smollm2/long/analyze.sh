#!/usr/bin/env bash
# The measurements of the long SmolLM2 experiment on its GRPO run (run them after the learning rate is
# chosen and that run is complete): weights (the paper's figure, full coverage, each half), token
# log-probs and activations, the backtest of every method, the in-flight figures (`watch --once`),
# the horizon over training: from (0, s) to targets T that are real checkpoints (s + 10, s + 20, 1.5 s,
# 2 s, 3 s, rounded to the checkpoint grid, up to the last step), weights and logits, beside the real T,
# and extrapolation past the end of the run. Resumable: every output that exists is skipped.
# Usage (repository root): bash experiments/smollm2/long/analyze.sh NAME   (e.g. grpo-lr1e-06)
set -euo pipefail
cd "$(dirname "$0")/../../.."
NAME=$1
W=experiments/smollm2/long/work
RUN=$W/runs/$NAME
A=$W/analysis/$NAME
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
RX=.venv/bin/rlextra
TASK=(--task $W/task.jsonl --n-test 128 --task-seed 0 --instruction "Answer with only the number.")
EVAL=(--k 4 --temperature 0.6 --top-p 0.95 --max-new-tokens 16 --backend rlextra --seed 0 -q)
LAST=$(ls -d $RUN/checkpoint-* | sed 's/.*-//' | sort -n | tail -1)
HALF=$(( (LAST / 2 + 5) / 10 * 10 ))
mkdir -p $A $W/eval
log() { echo "[$(date -u +%FT%TZ)] $*" | tee -a $W/commands.log; }
step() {  # OUT CMD...: run CMD unless OUT exists
  local out=$1; shift
  [ -e "$out" ] && return 0
  local t0=$SECONDS; "$@"; log "$* ($((SECONDS - t0)) s)"
}
ckpts() { for s in $(seq "$1" 10 "$2"); do echo "$RUN/checkpoint-$s"; done; }

step $A/weights $RX analyze weights $RUN -o $A/weights -q
step $A/weights-paper $RX analyze weights $RUN -o $A/weights-paper --only-weights --min-change 1e-4 --min-distinct 4 -q
step $A/weights-first-half $RX analyze weights $(ckpts 0 $HALF) -o $A/weights-first-half -q
step $A/weights-second-half $RX analyze weights $(ckpts $HALF $LAST) -o $A/weights-second-half -q
step $A/outputs $RX analyze outputs $RUN --generate 64 "${TASK[@]}" --max-new-tokens 16 --token-filter endpoints \
  -o $A/outputs -q
step $A/activations $RX analyze activations $RUN --probes $A/outputs/probes.jsonl --max-tokens 0 -o $A/activations -q
step $A/backtest $RX backtest $RUN --methods two-point,lsq,low-rank --pairs first -o $A/backtest -q
step $A/watch $RX watch $RUN -o $A/watch --once -q

# past the end of the run: from (0, LAST) and (HALF, LAST) at alpha 1.25, 1.5, 2, against LAST
for b in 0 $HALF; do
  for alpha in 1.25 1.5 2; do
    out=$W/eval/$NAME-beyond-weights-$b-$LAST-alpha-$alpha.json
    if [ ! -e "$out" ]; then
      step $A/beyond-$b-$alpha $RX extrapolate $RUN/checkpoint-$b $RUN/checkpoint-$LAST --alpha $alpha \
        -o $A/beyond-$b-$alpha -q
      step "$out" $RX eval $A/beyond-$b-$alpha "${TASK[@]}" "${EVAL[@]}" -o "$out"
      rm -rf $A/beyond-$b-$alpha
    fi
    step $W/eval/$NAME-beyond-logits-$b-$LAST-alpha-$alpha.json $RX eval $RUN/checkpoint-$LAST \
      --extrapolate-from $RUN/checkpoint-$b --alpha $alpha "${TASK[@]}" "${EVAL[@]}" \
      -o $W/eval/$NAME-beyond-logits-$b-$LAST-alpha-$alpha.json
  done
done

# the horizon over training: from (0, s) to real checkpoints T (s + 10, s + 20, 1.5 s, 2 s, 3 s on the grid)
for s in 30 60 90 120; do
  for t in $(python3 -c "print(' '.join(str(t) for t in sorted({min(v, $LAST) for v in ($s + 10, $s + 20, round(1.5 * $s / 10) * 10, 2 * $s, 3 * $s) if v <= $LAST})))"); do
    out=$W/eval/$NAME-horizon-weights-0-$s-to-$t.json
    if [ ! -e "$out" ]; then
      step $A/extra-0-$s-to-$t $RX extrapolate $RUN/checkpoint-0 $RUN/checkpoint-$s --to-step $t -o $A/extra-0-$s-to-$t -q
      step "$out" $RX eval $A/extra-0-$s-to-$t "${TASK[@]}" "${EVAL[@]}" -o "$out"
      rm -rf $A/extra-0-$s-to-$t  # 540 MB each; the evaluation is what is kept
    fi
    step $W/eval/$NAME-horizon-logits-0-$s-to-$t.json $RX eval $RUN/checkpoint-$s --extrapolate-from $RUN/checkpoint-0 \
      --to-step $t "${TASK[@]}" "${EVAL[@]}" -o $W/eval/$NAME-horizon-logits-0-$s-to-$t.json
  done
done
log "analysis of $NAME done"
