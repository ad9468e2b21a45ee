"""Which entries of a tensor a sampled analysis reads: one rule for ``analyze weights --sample``,
the in-flight monitor and ``watch``, so their figures are computed on the same parameters."""

from __future__ import annotations

import math
import zlib

import numpy as np

from rlextra.errors import RLExtraError

MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy take seeds up to a signed 64-bit integer


def check_seed(seed, option: str = "--seed") -> int:
    """The one check of a user's seed: an integer in [0, 2^63 - 1], else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RLExtraError(f"{option} {seed}: must be an integer in [0, 2^63 - 1]")
    return seed


def sample_indices(name: str, numel: int, fraction: float, seed: int) -> np.ndarray:
    """The paper's sampling: a fraction of each tensor, at least 50 entries, seeded per tensor.

    Sorted flat indices into the tensor; ``fraction`` 1.0 gives every entry.
    """
    n = min(numel, max(math.ceil(fraction * numel), 50))
    if n == numel:
        return np.arange(numel)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(numel, size=n, replace=False))
