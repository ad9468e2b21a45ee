"""Which entries of a tensor a sampled analysis reads: one rule for ``analyze weights --sample``,
the in-flight monitor and ``watch``, so their figures are computed on the same parameters."""

from __future__ import annotations

import math
import zlib
from typing import Iterator

import numpy as np

from rlextra.errors import RLExtraError

MAX_SEED = 2**63 - 1
MAX_SPAN = 1 << 24  # entries of a tensor one sampled read spans at most (32 MiB of bf16)  # torch.manual_seed and numpy take seeds up to a signed 64-bit integer


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


def pick_chunks(idx: np.ndarray, size: int, span: int = MAX_SPAN) -> Iterator[tuple[int, int, int, int]]:
    """The sampled entries ``idx`` (sorted) in groups of at most ``size`` picks within at most ``span``
    entries: (start, stop, lo, hi), where entries [start, stop) of the tensor hold the picks idx[lo:hi].

    Why groups of picks rather than fixed ranges of entries: a 0.1% sample then spans most tensors in
    one read per checkpoint, instead of a read, a map and a fit per range. ``size`` bounds the fit's
    memory, ``span`` what one read maps (its pages count in the process's resident memory).
    """
    if size < 1 or span < 1:
        raise RLExtraError(f"chunk size must be positive, got {min(size, span)}")
    lo = 0
    while lo < len(idx):
        start = int(idx[lo])
        hi = min(lo + size, int(np.searchsorted(idx, start + span)))
        yield start, int(idx[hi - 1]) + 1, lo, hi
        lo = hi
