"""Compiled passes over a chunk of all K checkpoints (numba), for the hot loops of the analysis
and the backtest, and bf16 widening.

Why: with numpy each parameter's fit and its report sums (R^2, the histogram, norms) took about
twenty passes over memory, holding the GIL between them, so a full-coverage analysis ran at 15x
the read floor on 2 cores (bench/RESULTS.md). Compiled, the same float64 arithmetic runs once per
parameter, without the GIL, so tensors on several threads really run at once.

``chunk_stats`` gives the numbers of ``LineFit`` (shifted float64 sums, the same R^2 formula and
clipping); ``combo_sq_sums`` the backtest's squared errors, in float64. Only the order of the
additions differs from the numpy/torch paths. Without numba installed, ``AVAILABLE`` is False and
callers keep those paths.
"""

from __future__ import annotations

import importlib.util

import numpy as np

# numba is a dependency, kept optional for bare environments (the GPU image has none). It is imported
# on first use, not here: importing it costs about 0.3 s, which commands that never reach a compiled
# pass should not pay.
AVAILABLE = importlib.util.find_spec("numba") is not None
_COMPILED: dict = {}


def _compiled(fn, **options):
    """``fn`` compiled once per process (numba's on-disk cache makes later processes cheap)."""
    if fn not in _COMPILED:
        import numba

        _COMPILED[fn] = numba.njit(cache=True, nogil=True, **options)(fn)
    return _COMPILED[fn]


def _chunk_stats(block, tc, sxx, hist):
    """(finite, n_constant, n_above_0.7, sum_r2, sq_first, sq_delta) of a (K, n) block (float32
    or float64 storage, widened to float64 exactly); R^2 counts are added into ``hist`` (len(hist)
    equal bins over [0, 1]). Loops are split so that all but the histogram's vectorize: steps run
    in the outer loop of the sums, and no branch depends on the data (they mispredicted on real
    R^2 spreads)."""
    k_steps, n = block.shape
    bins = hist.shape[0]
    kk = float(k_steps)
    s_d = np.zeros(n)
    s_td = np.zeros(n)
    s_dd = np.zeros(n)
    y0 = np.empty(n)
    r2 = np.empty(n)
    for j in range(n):
        y0[j] = block[0, j]
    for k in range(1, k_steps):
        t = tc[k]
        for j in range(n):
            d = np.float64(block[k, j]) - y0[j]
            s_d[j] += d
            s_dd[j] += d * d
            s_td[j] += d * t
    bad = False  # a NaN or Inf anywhere reaches s_dd or y0
    n_constant = 0
    sum_r2 = 0.0
    sq_first = 0.0
    sq_delta = 0.0
    for j in range(n):
        bad |= not np.isfinite(s_dd[j] + y0[j])
        syy = s_dd[j] - s_d[j] * (s_d[j] / kk)
        moved = syy > 0.0  # else never moved (or NaN): no R^2, as LineResult.r2 gives NaN
        v = min(max((s_td[j] * s_td[j]) / (sxx * syy), 0.0), 1.0)
        r2[j] = v if moved else -1.0
        n_constant += np.int64(not moved)
        sum_r2 += v if moved else 0.0
        last = np.float64(block[k_steps - 1, j]) - y0[j]
        sq_first += y0[j] * y0[j]
        sq_delta += last * last
    n_above = 0
    for j in range(n):
        v = r2[j]
        if v >= 0.0:
            n_above += np.int64(v > 0.7)
            hist[min(np.int64(v * bins), bins - 1)] += 1
    return not bad, n_constant, n_above, sum_r2, sq_first, sq_delta


def _combo_sq_sums(block, index, coef, counts, out):
    """out[q] += sum over the chunk of (sum_p coef[q, p] * block[index[q, p], j])^2, for every
    combination q of at most index.shape[1] checkpoints (a prediction minus its target, or two
    checkpoints' difference). One scratch row, so every pass over the chunk vectorizes."""
    n = block.shape[1]
    tmp = np.empty(n)
    for q in range(index.shape[0]):
        k0 = index[q, 0]
        c0 = coef[q, 0]
        for j in range(n):
            tmp[j] = c0 * np.float64(block[k0, j])
        for p in range(1, counts[q]):
            k = index[q, p]
            c = coef[q, p]
            for j in range(n):
                tmp[j] += c * np.float64(block[k, j])
        acc = 0.0
        for j in range(n):
            acc += tmp[j] * tmp[j]
        out[q] += acc


def _widen(raw, bits):
    for j in range(raw.shape[0]):
        bits[j] = np.uint32(raw[j]) << np.uint32(16)


def bf16_to_float32(raw: np.ndarray, out: np.ndarray) -> None:
    """Write the float32 values of bf16 storage ``raw`` (uint16; bf16 is the top half of a float32)
    into ``out`` (float32, same length), without holding the GIL when numba is there."""
    bits = out.view(np.uint32)
    if AVAILABLE:
        _compiled(_widen)(raw, bits)
    else:
        bits[...] = raw
        bits <<= 16


def chunk_stats(block, tc, sxx, hist):
    """The compiled ``_chunk_stats`` (needs numba: check ``AVAILABLE``)."""
    return _compiled(_chunk_stats, error_model="numpy", fastmath={"reassoc", "contract"})(block, tc, sxx, hist)


def combo_sq_sums(block, index, coef, counts, out) -> None:
    """The compiled ``_combo_sq_sums`` (needs numba: check ``AVAILABLE``)."""
    _compiled(_combo_sq_sums, error_model="numpy", fastmath={"reassoc", "contract"})(block, index, coef, counts, out)
