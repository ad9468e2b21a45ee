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


TILE = 256  # entries per tile of ``_chunk_stats``: its running sums (4 x 2 KiB) stay in L1


def _chunk_stats(block, tc, sxx, hist, bf16):
    """(finite, n_constant, n_above_0.7, sum_r2, sq_first, sq_delta) of a (K, n) block (float32
    or float64 storage, or with ``bf16`` the bits of bf16 values as uint16, each widened to float64
    exactly); R^2 counts are added into ``hist`` (len(hist) equal bins over [0, 1]).

    The chunk runs in tiles of ``TILE`` entries, so that the running sums stay in L1 while every
    step's row streams past them (over a whole chunk they spilled out of L2), and bf16 rows are
    widened tile by tile, in cache, instead of in a pass of their own (bench/RESULTS.md). Within a
    tile, loops are split so that all but the histogram's vectorize: steps run in the outer loop of
    the sums, and no branch depends on the data (they mispredicted on real R^2 spreads). Each
    entry's sums are added in step order."""
    k_steps, n = block.shape
    bins = hist.shape[0]
    kk = float(k_steps)
    s_d = np.empty(TILE)
    s_td = np.empty(TILE)
    s_dd = np.empty(TILE)
    y0 = np.empty(TILE)
    r2 = np.empty(TILE)
    last = np.empty(TILE)
    bits = np.empty(TILE, dtype=np.uint32)  # one bf16 row of a tile, widened: its float32 view is ``wide``
    wide = bits.view(np.float32)
    bad = False  # a NaN or Inf anywhere reaches s_dd or y0
    n_constant = 0
    n_above = 0
    sum_r2 = 0.0
    sq_first = 0.0
    sq_delta = 0.0
    for j0 in range(0, n, TILE):
        m = min(TILE, n - j0)
        for k in range(k_steps):
            if bf16:
                raw = block[k, j0:j0 + m]
                for j in range(m):
                    bits[j] = np.uint32(raw[j]) << np.uint32(16)
                if k == 0:
                    for j in range(m):
                        y0[j] = wide[j]
                        s_d[j] = 0.0
                        s_td[j] = 0.0
                        s_dd[j] = 0.0
                        last[j] = 0.0
                    continue
                t = tc[k]
                for j in range(m):
                    d = np.float64(wide[j]) - y0[j]
                    s_d[j] += d
                    s_dd[j] += d * d
                    s_td[j] += d * t
                if k == k_steps - 1:
                    for j in range(m):
                        last[j] = np.float64(wide[j]) - y0[j]
            else:
                row = block[k, j0:j0 + m]
                if k == 0:
                    for j in range(m):
                        y0[j] = row[j]
                        s_d[j] = 0.0
                        s_td[j] = 0.0
                        s_dd[j] = 0.0
                        last[j] = 0.0
                    continue
                t = tc[k]
                for j in range(m):
                    d = np.float64(row[j]) - y0[j]
                    s_d[j] += d
                    s_dd[j] += d * d
                    s_td[j] += d * t
                if k == k_steps - 1:
                    for j in range(m):
                        last[j] = np.float64(row[j]) - y0[j]
        for j in range(m):
            bad |= not np.isfinite(s_dd[j] + y0[j])
            syy = s_dd[j] - s_d[j] * (s_d[j] / kk)
            moved = syy > 0.0  # else never moved (or NaN): no R^2, as LineResult.r2 gives NaN
            v = min(max((s_td[j] * s_td[j]) / (sxx * syy), 0.0), 1.0)
            r2[j] = v if moved else -1.0
            n_constant += np.int64(not moved)
            sum_r2 += v if moved else 0.0
            sq_first += y0[j] * y0[j]
            sq_delta += last[j] * last[j]
        for j in range(m):
            v = r2[j]
            if v >= 0.0:
                n_above += np.int64(v > 0.7)
                hist[min(np.int64(v * bins), bins - 1)] += 1
    return not bad, n_constant, n_above, sum_r2, sq_first, sq_delta


def _combo_sq_sums(block, index, coef, counts, out, bf16):
    """out[q] += sum over the chunk of (sum_p coef[q, p] * block[index[q, p], j])^2, for every
    combination q of at most index.shape[1] checkpoints (a prediction minus its target, or two
    checkpoints' difference); with ``bf16`` the block holds bf16 bits (uint16). The chunk runs in
    tiles of ``TILE`` entries: all K rows of a tile are widened once into a float64 tile in L1, and
    every combination passes over that tile (over the whole chunk, each combination had streamed
    its rows and a scratch row through L2)."""
    k_steps, n = block.shape
    n_q = index.shape[0]
    tile = np.empty((k_steps, TILE))
    tmp = np.empty(TILE)
    bits = np.empty(TILE, dtype=np.uint32)
    wide = bits.view(np.float32)
    acc = np.zeros(n_q)
    for j0 in range(0, n, TILE):
        m = min(TILE, n - j0)
        for k in range(k_steps):
            if bf16:
                raw = block[k, j0:j0 + m]
                for j in range(m):
                    bits[j] = np.uint32(raw[j]) << np.uint32(16)
                for j in range(m):
                    tile[k, j] = wide[j]
            else:
                row = block[k, j0:j0 + m]
                for j in range(m):
                    tile[k, j] = row[j]
        for q in range(n_q):
            k0 = index[q, 0]
            c0 = coef[q, 0]
            for j in range(m):
                tmp[j] = c0 * tile[k0, j]
            for p in range(1, counts[q]):
                k = index[q, p]
                c = coef[q, p]
                for j in range(m):
                    tmp[j] += c * tile[k, j]
            s = 0.0
            for j in range(m):
                s += tmp[j] * tmp[j]
            acc[q] += s
    for q in range(n_q):
        out[q] += acc[q]


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
    """The compiled ``_chunk_stats`` (needs numba: check ``AVAILABLE``); a uint16 block holds bf16 bits."""
    return _compiled(_chunk_stats, error_model="numpy", fastmath={"reassoc", "contract"})(
        block, tc, sxx, hist, block.dtype == np.uint16)


def combo_sq_sums(block, index, coef, counts, out) -> None:
    """The compiled ``_combo_sq_sums`` (needs numba: check ``AVAILABLE``); a uint16 block holds bf16 bits."""
    _compiled(_combo_sq_sums, error_model="numpy", fastmath={"reassoc", "contract"})(
        block, index, coef, counts, out, block.dtype == np.uint16)
