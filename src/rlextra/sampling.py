"""Which entries of a tensor a sampled analysis reads: one rule for ``analyze weights --sample``,
the in-flight monitor and ``watch``, so their figures are computed on the same parameters."""

from __future__ import annotations

import math
import zlib
from typing import Iterator

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


def pick_chunks(idx: np.ndarray, size: int) -> Iterator[tuple[int, int, int, int]]:
    """The sampled entries ``idx`` (sorted) in groups of at most ``size``: (start, stop, lo, hi), where
    entries [start, stop) of the tensor hold the picks idx[lo:hi].

    Why groups of picks rather than fixed ranges of entries: a 0.1% sample spans a whole tensor in
    one read per checkpoint (a few hundred thousand picks), instead of a read, a map and a fit per
    range; memory stays bounded by ``size`` picks.
    """
    if size < 1:
        raise RLExtraError(f"chunk size must be positive, got {size}")
    for lo in range(0, len(idx), size):
        hi = min(len(idx), lo + size)
        yield int(idx[lo]), int(idx[hi - 1]) + 1, lo, hi
