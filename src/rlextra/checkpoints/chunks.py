"""Walk one tensor across all checkpoints of a series in chunks: the (K, n) access pattern
that analysis and extrapolation share, with the NaN/Inf check on every chunk read."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from rlextra.fused import bf16_to_float32
from rlextra.checkpoints.read_meter import ReadMeter
from rlextra.checkpoints.reader import STORAGE, TensorRef, decoded_is_finite, to_float64, to_torch
from rlextra.errors import RLExtraError

DEFAULT_CHUNK_SIZE = 1 << 18  # elements of one tensor read from one checkpoint at a time


CACHE_BLOCK_BYTES = 2 << 20  # one chunk of all K checkpoints, float64: about one core's L2 cache
DEVICE_BLOCK_BYTES = 256 << 20  # the same on an accelerator: large enough to keep it busy


def auto_chunk_size(n_checkpoints: int, device=None) -> int:
    """Elements per chunk so that the (K, n) float64 block of a chunk fits ``CACHE_BLOCK_BYTES``
    (on a device, ``DEVICE_BLOCK_BYTES``). Why: on a CPU every pass of the fit then runs from cache,
    about twice as fast as from memory (bench/RESULTS.md)."""
    budget = CACHE_BLOCK_BYTES if device is None else DEVICE_BLOCK_BYTES
    return max(4096, budget // (8 * max(n_checkpoints, 1)))


def chunk_ranges(numel: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    if chunk_size < 1:
        raise RLExtraError(f"chunk size must be positive, got {chunk_size}")
    for start in range(0, numel, chunk_size):
        yield start, min(numel, start + chunk_size)


class BlockReader:
    """Chunks of one tensor from all K checkpoints as one (K, n) block, numpy or on a device.

    Why: the hot loop of a full-coverage analysis. Each file is opened once per tensor and read
    with ``readinto`` into a reused buffer (no mapping, no page faults, no allocation per chunk),
    and the values are decoded straight into the block: a chunk costs one copy from the page cache
    and one conversion per checkpoint. With ``device`` the block is a float64 torch tensor there
    (the raw values travel, then are decoded). The block is reused: read the next chunk only after
    the last one is consumed. The block is float64, or with ``compact`` (numpy only) float32 where
    every checkpoint's values fit it exactly. With ``bf16_bits`` as well, a series stored in bf16
    alone comes as the values' bits (uint16, read straight into the block): for the compiled pass,
    which widens them in cache (``as_float`` widens such a block for everything else). ``meter``
    counts the bytes and the seconds spent in the reads themselves (the progress bar's disk rate).
    """

    def __init__(self, refs: list[TensorRef], width: int, device=None, compact: bool = False,
                 bf16_bits: bool = False, meter: ReadMeter | None = None) -> None:
        self.refs, self.device, self.meter = refs, device, meter
        if device is None and compact and bf16_bits and all(r.dtype == "BF16" for r in refs):
            self.block = np.empty((len(refs), width), dtype=np.uint16)
        elif device is None:
            # compact: float32 unless a checkpoint holds float64 (every narrower float widens exactly),
            # so that float32 files are read straight into the block, without a conversion pass
            wide = not compact or any(r.dtype == "F64" for r in refs)
            self.block = np.empty((len(refs), width), dtype=np.float64 if wide else np.float32)
        else:
            import torch

            self.block = torch.empty((len(refs), width), dtype=torch.float64, device=device)
        # a checkpoint whose storage is the block's dtype is read straight into its row
        self.direct = [device is None and self.block.dtype == STORAGE[r.dtype][0] for r in refs]
        self.raw = [None if d else np.empty(width, dtype=STORAGE[r.dtype][0]) for r, d in zip(refs, self.direct)]
        self.files: list = []

    def __enter__(self) -> "BlockReader":
        try:
            for r in self.refs:
                self.files.append(r.open_files())
        except OSError as exc:
            self.__exit__()
            raise RLExtraError(f"{exc.filename}: cannot open ({exc.strerror})") from None
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files:
            if f is not None:
                f.close()
        self.files = []

    def read(self, start: int, stop: int):
        """Elements [start, stop) of every checkpoint's tensor: row k is checkpoint k."""
        n = stop - start
        block = self.block[:, :n]
        for k, (ref, f, direct) in enumerate(zip(self.refs, self.files, self.direct)):
            raw = block[k] if direct else self.raw[k][:n]
            if self.meter is None:
                ref.read_into(start, raw, f)
            else:
                t0 = time.perf_counter()
                ref.read_into(start, raw, f)
                self.meter.add(raw.nbytes, time.perf_counter() - t0)
            if direct:
                continue
            if self.device is not None:
                block[k].copy_(to_torch(raw, ref.dtype))
            elif ref.dtype == "BF16" and block.dtype == np.float32:
                bf16_to_float32(raw, block[k])
            elif ref.dtype == "BF16":
                to_torch(block[k], "F64").copy_(to_torch(raw, ref.dtype))
            else:
                block[k] = raw
        return block


def as_float(block):
    """A block as values: a bf16-bits block (``BlockReader(bf16_bits=True)``) widened to float32, any
    other block as it is."""
    if not isinstance(block, np.ndarray) or block.dtype != np.uint16:
        return block
    out = np.empty(block.shape, dtype=np.float32)
    for k in range(block.shape[0]):
        bf16_to_float32(block[k], out[k])
    return out


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
