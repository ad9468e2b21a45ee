"""Reused chunk buffers for streamed work that runs on several threads.

Why: a fresh 2-4 MB array per chunk is fresh memory from the kernel, page-faulted and zeroed each
time; on a 1.5B-parameter extrapolation that doubled the system time (bench/RESULTS.md). A pool
hands out buffers that were used before and takes them back when their chunk is written.
"""

from __future__ import annotations

import threading

import numpy as np


class BufferPool:
    """Flat arrays by dtype, reused: ``take`` one (a view of ``n`` entries), ``give`` it back when done.

    Never blocks: an empty pool allocates, so the pool grows to the number of buffers in flight at
    once (bounded by the caller's read-ahead). Arrays the pool did not hand out are ignored by ``give``.
    """

    def __init__(self, size: int) -> None:
        self.size = size  # entries per buffer: the largest chunk
        self._free: dict[np.dtype, list[np.ndarray]] = {}
        self._owned: dict[int, np.ndarray] = {}  # id -> buffer, held so that no id is reused
        self._lock = threading.Lock()

    def take(self, dtype, n: int) -> np.ndarray:
        if n > self.size:
            raise ValueError(f"a chunk of {n} entries is larger than the pool's buffers ({self.size})")
        dtype = np.dtype(dtype)
        with self._lock:
            free = self._free.setdefault(dtype, [])
            buf = free.pop() if free else None
        if buf is None:
            buf = np.empty(self.size, dtype=dtype)
            with self._lock:
                self._owned[id(buf)] = buf
        return buf[:n]

    def give(self, view: np.ndarray) -> None:
        buf = view.base if isinstance(view, np.ndarray) and view.base is not None else view
        with self._lock:
            if isinstance(buf, np.ndarray) and id(buf) in self._owned:
                self._free.setdefault(buf.dtype, []).append(buf)
