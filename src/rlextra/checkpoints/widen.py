"""bf16 storage to float32, exactly (bf16 is the top half of a float32), without holding the GIL.

Why: the analysis reads tensors on several threads; numpy's two-step widening (cast, shift)
holds the GIL long enough that bf16 series scaled poorly across cores. Compiled with numba when
it is installed; numpy otherwise.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for bare environments
    numba = None


def _widen(raw, bits):
    for j in range(raw.shape[0]):
        bits[j] = np.uint32(raw[j]) << np.uint32(16)


_compiled = numba.njit(cache=True, nogil=True)(_widen) if numba is not None else None


def bf16_to_float32(raw: np.ndarray, out: np.ndarray) -> None:
    """Write the float32 values of bf16 storage ``raw`` (uint16) into ``out`` (float32, same length)."""
    bits = out.view(np.uint32)
    if _compiled is not None:
        _compiled(raw, bits)
    else:
        bits[...] = raw
        bits <<= 16
