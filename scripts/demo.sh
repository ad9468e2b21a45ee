#!/usr/bin/env bash
# Set up and run the embedded demo: scripts/demo.sh [-o DIR] [--quick] ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh rl
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TOKENIZERS_PARALLELISM=false
exec .venv/bin/rlextra demo --overwrite "$@"
