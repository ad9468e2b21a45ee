#!/usr/bin/env bash
# The suite and the CUDA decoding benchmark on a machine with one NVIDIA GPU, from src/ (no install).
# Expects the missing packages as wheels in .whl/ (trl, datasets, math-verify, ...; see bench/RESULTS.md)
# and the shared benchmark copies in .whl/benchmarks. Writes logs to $OUT (default ./gpu-out).
set -uo pipefail
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p ../shared/data && cp -r .whl/benchmarks ../shared/data/ 2>/dev/null
{ nvidia-smi -L; python3 -c "import torch, transformers, trl, datasets, pyarrow, math_verify; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0), '| transformers', transformers.__version__, '| trl', trl.__version__, '| datasets', datasets.__version__, '| pyarrow', pyarrow.__version__)"; } 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
timeout "${SUITE_S:-330}" python3 -m pytest -q -p no:cacheprovider -n "${WORKERS:-8}" --dist loadfile -rs tests \
  2>&1 | tee "$OUT/pytest.log" | tail -40
echo "suite: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s wall" | tee -a "$OUT/pytest.log"
if [ "${BENCH:-1}" = 1 ]; then
  cp bench/RESULTS.md /tmp/RESULTS.before.md
  timeout "${BENCH_S:-200}" python3 bench/bench_decoding.py --device cuda --budget-s "${BUDGET_S:-120}" --write-results \
    2>&1 | tee "$OUT/bench_decoding.log" | tail -30
  diff /tmp/RESULTS.before.md bench/RESULTS.md > "$OUT/results.diff"; cp bench/RESULTS.md "$OUT/RESULTS.md"
fi
