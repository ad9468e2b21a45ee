"""How fast the storage delivers, measured from inside the reads: for a progress bar that says at a
glance whether the disk (or page cache) or rlextra's own arithmetic is what a long pass waits on."""

from __future__ import annotations

import threading
import time


class ReadMeter:
    """Bytes read and seconds spent inside read calls, summed over the threads that read.

    ``rate`` is what the storage delivered while it was asked (bytes / seconds in reads); ``share``
    the part of the readers' time spent waiting on it. A share near 1 means the disk is the limit;
    a small share means the rest of the pass (decoding, the fit) is.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)
        self.bytes = 0
        self.seconds = 0.0
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def add(self, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.bytes += nbytes
            self.seconds += seconds

    @property
    def rate(self) -> float:
        """Bytes per second while reading (0 before the first read)."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def share(self) -> float:
        """The part of the readers' wall time spent inside reads, in [0, 1]."""
        wall = (time.perf_counter() - self.started) * self.threads
        return min(1.0, self.seconds / wall) if wall > 0 else 0.0

    def summary(self) -> str:
        """'reads 2.1 GB/s, 28% of the time: rlextra-bound' (the bar's postfix)."""
        if self.bytes == 0:
            return "reads: -"
        share = self.share
        bound = "disk-bound" if share >= 0.5 else "rlextra-bound"
        return f"reads {_size(self.rate)}/s, {100 * share:.0f}% of the time: {bound}"


def _size(n: float) -> str:
    """Binary units, as the bar's own rate (tqdm with unit_divisor=1024) labels them."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TB"
