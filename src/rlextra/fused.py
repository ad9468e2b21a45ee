"""Compiled passes over a chunk of all K checkpoints (numba), for the hot loops of the analysis
and the backtest, and bf16 widening.

Why: with numpy each parameter's fit and its report sums (R^2, the histogram, norms) took about
twenty passes over memory, holding the GIL between them, so a full-coverage analysis ran at 15x
the read floor on 2 cores (bench/RESULTS.md). Compiled, the same float64 arithmetic runs once per
parameter, without the GIL, so tensors on several threads really run at once.

``lerp_into`` / ``lerp_bf16_into`` are extrapolation's two-point line, the arithmetic of torch's CPU
``lerp`` (so outputs stay byte-identical to the torch path, tested) without importing torch.

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
    """``fn`` compiled once per process (numba's on-disk cache makes later processes cheap). The
    passes call ``_tile_loader``, which becomes the compiled ``_load_tile`` before any of them compiles."""
    if fn not in _COMPILED:
        import numba

        global _tile_loader
        if _tile_loader is _load_tile:
            _tile_loader = numba.njit(cache=True, nogil=True)(_load_tile)
        _COMPILED[fn] = numba.njit(cache=True, nogil=True, **options)(fn)
    return _COMPILED[fn]


TILE = 256  # entries per tile of the passes: a tile of all K rows and its running sums stay in L1


def _load_tile(block, j0, m, bf16, bits, tile):
    """Entries j0..j0+m of every row of a (K, n) block into ``tile`` (K, TILE) as float64: float32 or
    float64 storage as it is, or with ``bf16`` the bits of bf16 values (uint16) widened exactly
    through ``bits`` (uint32, TILE long; its float32 view is the value)."""
    wide = bits.view(np.float32)
    for k in range(block.shape[0]):
        raw = block[k, j0:j0 + m]
        if bf16:
            for j in range(m):
                bits[j] = np.uint32(raw[j]) << np.uint32(16)
            for j in range(m):
                tile[k, j] = wide[j]
        else:
            for j in range(m):
                tile[k, j] = raw[j]


_tile_loader = _load_tile  # the compiled one once numba is imported (``_compiled``)


def _chunk_stats(block, tc, sxx, hist, bf16):
    """(finite, n_constant, n_above_0.7, sum_r2, sq_first, sq_delta) of a (K, n) block (float32
    or float64 storage, or with ``bf16`` the bits of bf16 values as uint16, each widened to float64
    exactly); R^2 counts are added into ``hist`` (len(hist) equal bins over [0, 1]).

    The chunk runs in tiles of ``TILE`` entries (``_load_tile``), so that the tile and the running
    sums stay in L1 while every step's row passes through them (over a whole chunk the sums spilled
    out of L2), and bf16 rows are widened tile by tile, in cache, instead of in a pass of their own
    (bench/RESULTS.md). Within a tile, loops are split so that all but the histogram's vectorize:
    steps run in the outer loop of the sums, and no branch depends on the data (they mispredicted on
    real R^2 spreads). Each entry's sums are added in step order."""
    k_steps, n = block.shape
    bins = hist.shape[0]
    kk = float(k_steps)
    tile = np.empty((k_steps, TILE))
    bits = np.empty(TILE, dtype=np.uint32)
    s_d = np.empty(TILE)
    s_td = np.empty(TILE)
    s_dd = np.empty(TILE)
    r2 = np.empty(TILE)
    bad = False  # a NaN or Inf anywhere reaches s_dd or y0
    n_constant = 0
    n_above = 0
    sum_r2 = 0.0
    sq_first = 0.0
    sq_delta = 0.0
    for j0 in range(0, n, TILE):
        m = min(TILE, n - j0)
        _tile_loader(block, j0, m, bf16, bits, tile)
        for j in range(m):
            s_d[j] = 0.0
            s_td[j] = 0.0
            s_dd[j] = 0.0
        for k in range(1, k_steps):
            t = tc[k]
            for j in range(m):
                d = tile[k, j] - tile[0, j]
                s_d[j] += d
                s_dd[j] += d * d
                s_td[j] += d * t
        for j in range(m):
            y0 = tile[0, j]
            bad |= not np.isfinite(s_dd[j] + y0)
            syy = s_dd[j] - s_d[j] * (s_d[j] / kk)
            moved = syy > 0.0  # else never moved (or NaN): no R^2, as LineResult.r2 gives NaN
            v = min(max((s_td[j] * s_td[j]) / (sxx * syy), 0.0), 1.0)
            r2[j] = v if moved else -1.0
            n_constant += np.int64(not moved)
            sum_r2 += v if moved else 0.0
            last = tile[k_steps - 1, j] - y0
            sq_first += y0 * y0
            sq_delta += last * last
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
    tiles of ``TILE`` entries (``_load_tile``: all K rows widened once into a float64 tile in L1), and
    every combination passes over that tile (over the whole chunk, each combination had streamed
    its rows and a scratch row through L2)."""
    k_steps, n = block.shape
    n_q = index.shape[0]
    tile = np.empty((k_steps, TILE))
    tmp = np.empty(TILE)
    bits = np.empty(TILE, dtype=np.uint32)
    acc = np.zeros(n_q)
    for j0 in range(0, n, TILE):
        m = min(TILE, n - j0)
        _tile_loader(block, j0, m, bf16, bits, tile)
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


def _lerp(a, b, coeff, small, out):
    """torch's CPU lerp with a scalar weight w: small (|w| < 0.5): fma(w, b - a, a); else
    fma(w - 1, b - a, b), in the arrays' precision (``coeff`` is w or w - 1, rounded to it)."""
    for i in range(a.shape[0]):
        out[i] = coeff * (b[i] - a[i]) + (a[i] if small else b[i])


def _lerp_bf16(a, b, coeff, small, out):
    """``_lerp`` on bf16 storage (uint16 bits): widened to float32 exactly, the float32 line,
    rounded back to nearest even, as torch's bf16 lerp does; tile by tile. A NaN result becomes
    0x7FC0 (torch's vector loop gives 0xFFFF): callers refuse NaN before anything is written."""
    ta = np.empty(TILE, dtype=np.uint32)
    tb = np.empty(TILE, dtype=np.uint32)
    tr = np.empty(TILE, dtype=np.uint32)
    fa, fb, fr = ta.view(np.float32), tb.view(np.float32), tr.view(np.float32)
    n = a.shape[0]
    for j0 in range(0, n, TILE):
        m = min(TILE, n - j0)
        for j in range(m):
            ta[j] = np.uint32(a[j0 + j]) << np.uint32(16)
            tb[j] = np.uint32(b[j0 + j]) << np.uint32(16)
        for j in range(m):
            fr[j] = coeff * (fb[j] - fa[j]) + (fa[j] if small else fb[j])
        for j in range(m):
            u = tr[j]
            rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            out[j0 + j] = np.uint16(0x7FC0) if fr[j] != fr[j] else np.uint16(rounded)


def _lerp_coeff(w: float, dtype) -> tuple:
    """(coeff, small) of torch's lerp for a Python-float weight in ``dtype`` (float32 or float64)."""
    w = dtype.type(w)
    small = bool(abs(w) < 0.5)
    # not small: b + (w - 1)(b - a), as torch's vector loop computes it. Its scalar loop (tails shorter
    # than two vectors, and where threads split the work) computes b - (1 - w)(b - a): the same bits except
    # the sign of a zero result at w = 1 exactly (tested)
    return (w if small else w - dtype.type(1)), small


# contract only: a * b + c becomes one fused multiply-add where the CPU has it, as in torch's
# vectorized kernel; nothing is reassociated
_LERP_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}


def lerp_into(a: np.ndarray, b: np.ndarray, w: float, out: np.ndarray) -> np.ndarray:
    """``out`` = the two-point line a + w (b - a) as torch's CPU lerp computes it (needs numba);
    a, b, out float32 or float64, one dtype, same length."""
    coeff, small = _lerp_coeff(w, a.dtype)
    _compiled(_lerp, **_LERP_OPTIONS)(a, b, coeff, small, out)
    return out


def lerp_bf16_into(a: np.ndarray, b: np.ndarray, w: float, out: np.ndarray) -> np.ndarray:
    """``lerp_into`` on bf16 storage (uint16 arrays), computed in float32 and rounded once, as torch."""
    coeff, small = _lerp_coeff(w, np.dtype(np.float32))
    _compiled(_lerp_bf16, **_LERP_OPTIONS)(a, b, coeff, small, out)
    return out


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
