"""Which entries of a tensor a sampled analysis reads: one rule for ``analyze weights --sample``,
the in-flight monitor and ``watch``, so their figures are computed on the same parameters."""

from __future__ import annotations

import math
import zlib

import numpy as np


def sample_indices(name: str, numel: int, fraction: float, seed: int) -> np.ndarray:
    """The paper's sampling: a fraction of each tensor, at least 50 entries, seeded per tensor.

    Sorted flat indices into the tensor; ``fraction`` 1.0 gives every entry.
    """
    n = min(numel, max(math.ceil(fraction * numel), 50))
    if n == numel:
        return np.arange(numel)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(numel, size=n, replace=False))
