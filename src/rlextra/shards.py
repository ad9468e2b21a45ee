"""How a series' tensors are split across processes or machines (``--shard i/N``): one size-balanced
assignment for ``analyze weights`` and ``backtest`` alike, so their shards merge exactly."""

from __future__ import annotations

import os

from rlextra.errors import RLExtraError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity): the default for threads and workers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def assign_shards(sizes: dict[str, int], n_shards: int) -> dict[str, int]:
    """Deterministic size-balanced assignment of tensors to shards (largest first, least loaded)."""
    loads = [0] * n_shards
    owner = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        i = min(range(n_shards), key=lambda j: (loads[j], j))
        owner[name] = i
        loads[i] += sizes[name]
    return owner


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/N' -> (i, N); None -> rank/world size from torchrun/accelerate, if more than one."""
    if text is None:
        world, rank = _env_int("WORLD_SIZE", "1"), _env_int("RANK", "0")
        if world < 1 or not 0 <= rank < world:
            raise RLExtraError(f"RANK={rank} WORLD_SIZE={world}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE")
        return (rank, world) if world > 1 else None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RLExtraError(f"--shard expects i/N (e.g. 0/4), got '{text}'") from None
    if not (n >= 1 and 0 <= i < n):
        raise RLExtraError(f"--shard {text}: need 0 <= i < N")
    return i, n


def _env_int(name: str, default: str) -> int:
    text = os.environ.get(name, default)
    try:
        return int(text)
    except ValueError:
        raise RLExtraError(f"{name}={text!r}: expected an integer (set by torchrun/accelerate)") from None
