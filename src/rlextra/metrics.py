"""Accuracy metrics over k samples per problem: avg@k and unbiased pass@k."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlextra.errors import RLExtraError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct (Chen et al., 2021):
    1 - C(n - c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise RLExtraError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def summarize(correct: Sequence[Sequence[bool]], ks: Sequence[int] | None = None) -> dict:
    """avg@n (mean accuracy over all samples) and pass@k for each k, averaged over problems."""
    if not correct:
        raise RLExtraError("no problems to summarize (an empty task or split?)")
    n = len(correct[0])
    ks = sorted({k for k in (ks or [1, n]) if 1 <= k <= n})
    per_problem = [sum(map(bool, c)) for c in correct]
    out = {"n_problems": len(correct), "k": n, f"avg@{n}": float(np.mean(per_problem)) / n}
    for k in ks:
        out[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in per_problem]))
    return out


def paired_difference(a: Sequence[int], b: Sequence[int], k: int) -> tuple[float, float]:
    """avg@k of A minus avg@k of B on the same problems, and its standard error paired over problems
    (``a``, ``b``: correct samples per problem, out of k). Pairing removes the problems' own spread,
    which dominates an unpaired error on small held-out sets."""
    if len(a) != len(b) or len(a) < 2:
        raise RLExtraError(f"paired difference: needs the same problems on both sides, at least 2 "
                           f"(got {len(a)} and {len(b)})")
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / k
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
