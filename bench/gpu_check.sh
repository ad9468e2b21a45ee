#!/usr/bin/env bash
# The suite, the CUDA decoding benchmark and the at-scale checkpoint benchmarks on a machine with one
# NVIDIA GPU, from src/ (no install). Each part can be left out: SUITE=0, BENCH=0, AT_SCALE=0; under a
# 10-minute limit run one or two of them, e.g. SUITE=0 BENCH=0 bash bench/gpu_check.sh.
# Expects the missing packages as wheels in .whl/ (trl, datasets, math-verify, ...; see bench/RESULTS.md)
# and the shared benchmark copies in .whl/benchmarks. Writes logs to $OUT (default ./gpu-out).
set -uo pipefail
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p ../shared/data && cp -r .whl/benchmarks ../shared/data/ 2>/dev/null
{ nvidia-smi -L; python3 -c "import torch, transformers, trl, datasets, pyarrow, math_verify; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0), '| transformers', transformers.__version__, '| trl', trl.__version__, '| datasets', datasets.__version__, '| pyarrow', pyarrow.__version__)"; } 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
[ "${SUITE:-1}" = 1 ] && timeout "${SUITE_S:-330}" python3 -m pytest -q -p no:cacheprovider -n "${WORKERS:-8}" --dist loadfile -rs tests \
  2>&1 | tee "$OUT/pytest.log" | tail -40
echo "suite: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s wall" | tee -a "$OUT/pytest.log"
if [ "${BENCH:-1}" = 1 ]; then
  cp bench/RESULTS.md /tmp/RESULTS.before.md
  timeout "${BENCH_S:-200}" python3 bench/bench_decoding.py --device cuda --budget-s "${BUDGET_S:-120}" --write-results \
    2>&1 | tee "$OUT/bench_decoding.log" | tail -30
  diff /tmp/RESULTS.before.md bench/RESULTS.md > "$OUT/results.diff"; cp bench/RESULTS.md "$OUT/RESULTS.md"
fi
if [ "${AT_SCALE:-1}" = 1 ]; then
  # the weight analysis, the backtest and extrapolation at the Qwen2.5-1.5B shape (random init, bf16, 8
  # checkpoints, ~25 GB on disk), arithmetic on the GPU, beside the read floors; then decoding at that shape
  timeout "${SCALE_S:-420}" python3 bench/bench_checkpoints.py --shape qwen2.5-1.5b --device cuda --checkpoints 8 \
    --methods rlextra_full,rlextra_backtest,rlextra_extrapolate,cat_floor,cp_floor --work /tmp/bench-work \
    --write-results --name at-scale-cuda 2>&1 | tee "$OUT/at_scale.log" | tail -20
  timeout "${DECODE_S:-200}" python3 bench/bench_decoding.py --device cuda --shapes qwen2.5-1.5b --batches 1,64 \
    --budget-s 120 2>&1 | tee "$OUT/decoding_qwen.log" | tail -20
  cp bench/results/at-scale-cuda-*.json "$OUT/" 2>/dev/null
fi
