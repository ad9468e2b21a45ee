#!/usr/bin/env bash
# HumanEval on SmolLM2-135M-Instruct (converted by `rlextra convert-gguf --smollm2`), k=4, 256 new
# tokens, every program run in rlextra's sandbox. Usage (repository root):
#   bash experiments/smollm2/humaneval/run.sh humaneval        # the bare prompt, Codex's stop strings
#   bash experiments/smollm2/humaneval/run.sh humaneval-chat   # the function asked for in a chat
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
TASK=${1:?humaneval or humaneval-chat}
STOPS=()
[ "$TASK" = humaneval ] && STOPS=(--stop $'\nclass' --stop $'\ndef' --stop $'\n#' --stop $'\nif' --stop $'\nprint')
.venv/bin/rlextra eval experiments/smollm2/work/model --task "$TASK" --k 4 --max-new-tokens 256 \
  --temperature 0.6 --top-p 0.95 --seed 0 --backend rlextra "${STOPS[@]}" \
  -o "experiments/smollm2/humaneval/$TASK.json" -q
