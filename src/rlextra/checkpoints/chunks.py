"""Walk one tensor across all checkpoints of a series in chunks: the (K, n) access pattern
that analysis and extrapolation share, with the NaN/Inf check on every chunk read."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rlextra.checkpoints.reader import TensorRef, decoded_is_finite, to_float64, to_torch
from rlextra.errors import RLExtraError

DEFAULT_CHUNK_SIZE = 1 << 18  # elements of one tensor read from one checkpoint at a time


def chunk_ranges(numel: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    if chunk_size < 1:
        raise RLExtraError(f"chunk size must be positive, got {chunk_size}")
    for start in range(0, numel, chunk_size):
        yield start, min(numel, start + chunk_size)


def read_values(ref: TensorRef, start: int, stop: int, pick: np.ndarray | None = None) -> np.ndarray:
    """Float64 values of elements [start, stop), or of positions ``pick`` within that range.

    No NaN/Inf check here: NaN and Inf propagate into every fit statistic, so callers check the
    (much smaller) results and call ``raise_nonfinite`` only when something is off.
    """
    if not ref.is_float:
        raise RLExtraError(f"{ref.file}: tensor '{ref.name}' has dtype {ref.dtype}, "
                           "which rlextra cannot do arithmetic on")
    raw = ref.read_raw(start, stop)
    return to_float64(raw if pick is None else raw[pick], ref.dtype)


def raise_nonfinite(refs: list[TensorRef], steps: list[int], start: int, stop: int,
                    otherwise: str = "values too large to fit (overflow)") -> None:
    """Raise a one-line error naming the input file and tensor holding NaN/Inf in this chunk,
    or, if every input is finite, the error ``otherwise`` about the result."""
    for ref, step in zip(refs, steps):
        if not decoded_is_finite(ref.read_raw(start, stop), ref.dtype):
            raise RLExtraError(f"{ref.file}: tensor '{ref.name}' (step {step}) contains NaN or Inf")
    raise RLExtraError(f"tensor '{refs[0].name}': {otherwise}")



def read_tensor(ref: TensorRef, device=None, step: int | None = None):
    """The whole tensor as fp32 torch, shaped, on ``device`` (for methods that need the matrix,
    such as an SVD). Memory: one fp32 copy of the tensor. NaN/Inf are refused here, naming the file:
    whole-tensor methods (an SVD, a norm) would fail or turn them into a wrong answer."""
    import torch

    if not ref.is_float:
        raise RLExtraError(f"{ref.file}: tensor '{ref.name}' has dtype {ref.dtype}, "
                           "which rlextra cannot do arithmetic on")
    t = to_torch(ref.read_raw(0, ref.numel), ref.dtype).reshape(ref.shape)
    t = t.to(device=device or "cpu", dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        at = "" if step is None else f" (step {step})"
        raise RLExtraError(f"{ref.file}: tensor '{ref.name}'{at} contains NaN or Inf")
    return t
