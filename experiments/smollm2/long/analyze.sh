#!/usr/bin/env bash
# The measurements of the long SmolLM2 experiment on its GRPO run (run them after the learning rate is
# chosen and that run is complete): weights (the paper's figure, full coverage, each half), token
# log-probs and activations, the backtest of every method, the in-flight figures (`watch --once`),
# the horizon over training: from (0, s) to targets T that are real checkpoints (s + 10, s + 20, 1.5 s,
# 2 s, 3 s, rounded to the checkpoint grid, up to the last step), weights and logits, beside the real T
for s in 30 60 90; do
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
log "analysis of $NAME done"
