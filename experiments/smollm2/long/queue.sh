#!/usr/bin/env bash
# The runs compared at equal real steps, in two lanes (one per core), once the learning rate LR is
# chosen on the GRPO curves (RESULTS.md section 1). Each run is resumable; rerun the same lane after a
# stop. Usage (repository root, in the background):
#   nohup bash experiments/smollm2/long/queue.sh A 1e-6 > lane-A.log 2>&1 &
#   nohup bash experiments/smollm2/long/queue.sh B 1e-6 > lane-B.log 2>&1 &
# Lane C, a second seed, after A and B: e.g. STEPS=100 SEGMENT=50 EVAL_EVERY=50 EVAL_FROM=50 bash ... queue.sh C 1e-6
# Lane D, the learning-rate question: bash ... queue.sh D 1e-6
set -euo pipefail
cd "$(dirname "$0")/../../.."
LANE=$1 LR=$2
T=experiments/smollm2/long/train_and_eval.sh
lr() { python3 -c "print(f'{$LR * $1:g}')"; }  # the chosen lr times a factor
name() { python3 -c "print(f'{$LR * $1:.0e}')"; }  # one significant digit: the names on record (x1, x2, x6)
name2() { python3 -c "print(f'{$LR * $1:.2g}')"; }  # x12 is 1.2e-05, not 1e-05
case $LANE in
  A)
    bash $T rlextra-20-20-lr$(name 1) $LR --rl-extra 20,20                       # the paper's RL-Extra
    bash $T rlextra-20-100-lr$(name 1) $LR --rl-extra 20,100                     # the paper's 6.1x setting
    bash $T replay-20-20-lr$(name 1) $LR --rl-extra 20,20 --rl-extra-replay      # with the paper's data order
    bash $T auto-20-100-lr$(name 1) $LR --rl-extra 20,100 --rl-extra-auto        # rlextra's adaptive jump
    ;;
  B)
    bash $T grpo-lr$(name 2) "$(lr 2)"  # lr x (20+20)/20 (a candidate run already, when LR is 1e-6: resumed)
    bash $T grpo-lr$(name 6) "$(lr 6)"                                           # lr x (20+100)/20
    bash $T control-20-0-lr$(name 1) $LR --rl-extra 20,0                         # the optimizer reset alone
    bash $T replay-20-100-lr$(name 1) $LR --rl-extra 20,100 --rl-extra-replay
    ;;
  C)  # a second training seed, where the budget allows (STEPS, EVAL_EVERY: how far, how often evaluated)
    bash $T grpo-lr$(name 1)-seed1 $LR --seed 1
    bash $T rlextra-20-20-lr$(name 1)-seed1 $LR --rl-extra 20,20 --seed 1
    ;;
  D)  # which learning rate? (bench/RESULTS.md, "Which learning rate?"): x12 beyond the x6 on record, and
      # rlextra's --lr-auto from the base lr; add x24 (grpo-lr$(name2 24)) if x12 still rises at step 150
    bash $T grpo-lr$(name2 12) "$(lr 12)"
    bash $T lrauto-lr$(name 1) $LR --lr-auto
    ;;
  *) echo "lane A, B, C or D" >&2; exit 2 ;;
esac
