#!/usr/bin/env bash
# HumanEval on SmolLM2-135M-Instruct (converted by `rlextra convert-gguf --smollm2`), k=4, 256 new
# tokens, with the Codex paper's stop strings; every program runs in rlextra's sandbox.
# Usage (repository root): bash experiments/smollm2/humaneval/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
.venv/bin/rlextra eval experiments/smollm2/work/model --task humaneval --k 4 --max-new-tokens 256 \
  --temperature 0.6 --top-p 0.95 --seed 0 --backend rlextra \
  --stop $'\nclass' --stop $'\ndef' --stop $'\n#' --stop $'\nif' --stop $'\nprint' \
  -o experiments/smollm2/humaneval/summary.json -q
