"""One pass over a chunk of all K checkpoints: the weight analysis's sums, fused (numba).

Why: with numpy each parameter's fit and its report sums (R^2, the histogram, norms) take about
twenty passes over memory and hold the GIL between them, so a full-coverage analysis ran at 15x
the read floor on 2 cores (bench/RESULTS.md). Compiled, the same float64 arithmetic runs once per
parameter, without the GIL, so tensors on several threads really run at once.

The numbers are those of ``LineFit`` (shifted float64 sums, the same R^2 formula and clipping);
only the order of the additions differs. Without numba installed, ``AVAILABLE`` is False and the
analysis keeps the numpy path.
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


chunk_stats = numba.njit(cache=True, nogil=True, error_model="numpy")(_chunk_stats) if AVAILABLE else None
