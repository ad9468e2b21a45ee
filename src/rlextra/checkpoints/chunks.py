"""Walk one tensor across all checkpoints of a series in chunks: the (K, n) access pattern
that analysis and extrapolation share, with the NaN/Inf check on every chunk read."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rlextra.checkpoints.reader import TensorRef, decoded_is_finite, to_float64
from rlextra.errors import RLExtraError

DEFAULT_CHUNK_SIZE = 1 << 20  # elements of one tensor read from one checkpoint at a time


def chunk_ranges(numel: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    if chunk_size < 1:
        raise RLExtraError(f"chunk size must be positive, got {chunk_size}")
    for start in range(0, numel, chunk_size):
        yield start, min(numel, start + chunk_size)


def read_checked(ref: TensorRef, start: int, stop: int, step: int,
                 pick: np.ndarray | None = None) -> np.ndarray:
    """Float64 values of elements [start, stop) (or of positions ``pick`` within that range);
    a one-line error naming file and tensor on NaN/Inf."""
    if not ref.is_float:
        raise RLExtraError(f"{ref.file}: tensor '{ref.name}' has dtype {ref.dtype}, "
                           "which rlextra cannot do arithmetic on")
    raw = ref.read_raw(start, stop)
    if pick is not None:
        raw = raw[pick]
    if not decoded_is_finite(raw, ref.dtype):
        raise RLExtraError(f"{ref.file}: tensor '{ref.name}' (step {step}) contains NaN or Inf")
    return to_float64(raw, ref.dtype)


def iter_chunks(refs: list[TensorRef], steps: list[int], chunk_size: int = DEFAULT_CHUNK_SIZE
                ) -> Iterator[tuple[int, int, Iterator[np.ndarray]]]:
    """For each chunk of a tensor: (start, stop, a generator of its K float64 value arrays)."""
    for start, stop in chunk_ranges(refs[0].numel, chunk_size):
        yield start, stop, (read_checked(r, start, stop, s) for r, s in zip(refs, steps))
