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

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for bare environments
    numba = None

AVAILABLE = numba is not None


def _chunk_stats(block, tc, sxx, hist):
    """(finite, n_constant, n_above_0.7, sum_r2, sq_first, sq_delta) of a (K, n) block (float32
    or float64 storage, widened to float64 exactly); R^2 counts are added into ``hist`` (len(hist)
    equal bins over [0, 1]). Steps run in the outer loop so that the inner one vectorizes."""
    k_steps, n = block.shape
    bins = hist.shape[0]
    kk = float(k_steps)
    s_d = np.zeros(n)
    s_td = np.zeros(n)
    s_dd = np.zeros(n)
    for k in range(1, k_steps):
        t = tc[k]
        for j in range(n):
            d = np.float64(block[k, j]) - np.float64(block[0, j])
            s_d[j] += d
            s_dd[j] += d * d
            s_td[j] += d * t
    n_constant = 0
    n_above = 0
    sum_r2 = 0.0
    sq_first = 0.0
    sq_delta = 0.0
    for j in range(n):  # without data-dependent branches but one: they mispredicted on real R^2 spreads
        y0 = np.float64(block[0, j])
        syy = s_dd[j] - s_d[j] * (s_d[j] / kk)
        if syy > 0.0:
            r2 = min(max((s_td[j] * s_td[j]) / (sxx * syy), 0.0), 1.0)
            sum_r2 += r2
            n_above += np.int64(r2 > 0.7)
            hist[min(np.int64(r2 * bins), bins - 1)] += 1
        else:
            n_constant += 1  # never moved (or NaN): no R^2, as LineResult.r2 gives NaN
        last = np.float64(block[k_steps - 1, j]) - y0
        sq_first += y0 * y0
        sq_delta += last * last
    finite = True  # a NaN or Inf anywhere reaches s_dd (through y0 too)
    for j in range(n):
        if not np.isfinite(s_dd[j]):
            finite = False
    return finite, n_constant, n_above, sum_r2, sq_first, sq_delta


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


def _bf16_any_nonfinite(raw):
    bad = False
    for j in range(raw.shape[0]):
        bad |= (raw[j] & np.uint16(0x7F80)) == np.uint16(0x7F80)
    return bad


def bf16_all_finite(raw: np.ndarray) -> bool:
    """True when no bf16 value (uint16 storage) is NaN or Inf: one pass, no temporaries."""
    if AVAILABLE:
        return not _bf16_any_nonfinite_compiled(raw)
    return not bool(np.any((raw & 0x7F80) == 0x7F80))


def _widen(raw, bits):
    for j in range(raw.shape[0]):
        bits[j] = np.uint32(raw[j]) << np.uint32(16)


def bf16_to_float32(raw: np.ndarray, out: np.ndarray) -> None:
    """Write the float32 values of bf16 storage ``raw`` (uint16; bf16 is the top half of a float32)
    into ``out`` (float32, same length), without holding the GIL when numba is there."""
    bits = out.view(np.uint32)
    if AVAILABLE:
        _widen_compiled(raw, bits)
    else:
        bits[...] = raw
        bits <<= 16


if AVAILABLE:
    chunk_stats = numba.njit(cache=True, nogil=True, error_model="numpy")(_chunk_stats)
    combo_sq_sums = numba.njit(cache=True, nogil=True, error_model="numpy",
                               fastmath={"reassoc", "contract"})(_combo_sq_sums)
    _widen_compiled = numba.njit(cache=True, nogil=True)(_widen)
    _bf16_any_nonfinite_compiled = numba.njit(cache=True, nogil=True)(_bf16_any_nonfinite)
else:  # pragma: no cover
    chunk_stats = combo_sq_sums = _widen_compiled = _bf16_any_nonfinite_compiled = None
