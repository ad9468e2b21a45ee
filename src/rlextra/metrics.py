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
