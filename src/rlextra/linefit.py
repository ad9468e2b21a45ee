"""The one idea of rlextra: a per-coordinate least-squares line over training steps, streamed.

Every feature (weight R^2, token log-prob R^2, two-point and least-squares extrapolation,
R^2-gated extrapolation, K-model logit extrapolation, the RL-Extra jump) is a read of this fit.

Values arrive one checkpoint at a time (``add``), so memory is a few arrays of the block width
``n`` whatever the number of steps K. Accumulation is float64 and shifted by the first value
(``d_k = y_k - y_0``), which keeps the variance exact even when a weight moves by 1e-6 around 1.0.
Two-point extrapolation is the K = 2 case: the line through both points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rlextra.errors import RLExtraError

MAX_ALPHA = 1e6  # rlextra's bound: |alpha| past this is a typo, and overflows every float dtype's range


@dataclass
class LineResult:
    """Sufficient statistics of the fitted lines for n coordinates."""

    t_mean: float
    sxx: float
    y_mean: np.ndarray  # value of the line at t_mean (= mean of y)
    slope: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray

    def r2(self) -> np.ndarray:
        """Squared Pearson correlation of y with t; NaN where y never changes."""
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = (self.sxy * self.sxy) / (self.sxx * self.syy)
        r2[~(self.syy > 0)] = np.nan
        np.clip(r2, 0.0, 1.0, out=r2)
        return r2

    def value_at(self, t: float) -> np.ndarray:
        """The fitted line evaluated at step t (extrapolation when t lies past the last step)."""
        with np.errstate(invalid="ignore", over="ignore"):  # callers check results for NaN/Inf
            return self.y_mean + self.slope * (float(t) - self.t_mean)


class LineFit:
    """Streaming least-squares fit of y(t) = a + b t for n coordinates at known steps.

    Call ``add`` once per step, in the order of ``steps``; then ``result``. Optional trackers:
    ``track_range`` keeps min/max (the paper's min-change filter), ``distinct_cap`` counts
    distinct values up to a cap (the paper's min-distinct filter) with cap - 1 extra arrays.
    """

    def __init__(self, steps: Sequence[float], n: int, *, track_range: bool = False,
                 distinct_cap: int = 0) -> None:
        t = np.asarray(steps, dtype=np.float64)
        if t.ndim != 1 or len(t) < 2:
            raise ValueError("a line fit needs at least 2 steps")
        if len(np.unique(t)) != len(t):
            raise ValueError(f"steps must be distinct, got {t.tolist()}")
        self.t_mean = float(t.mean())
        self.tc = t - self.t_mean
        self.sxx = float((self.tc * self.tc).sum())
        self.n = int(n)
        self.k = 0
        self.y0: np.ndarray | None = None
        self.last: np.ndarray | None = None
        self.s_d = self.s_td = self.s_dd = None  # allocated by the first add (a block sets them)
        self.track_range = track_range
        self.y_min = self.y_max = None
        self.distinct = _DistinctCounter(distinct_cap, n) if distinct_cap > 1 else None

    def add(self, y: np.ndarray) -> None:
        """Fold in the values of all n coordinates at the next step."""
        if self.k >= len(self.tc):
            raise ValueError("more values added than steps given")
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf propagate; see all_finite
            self._add(np.asarray(y, dtype=np.float64).reshape(-1))

    def _add(self, y: np.ndarray) -> None:
        if y.shape[0] != self.n:
            raise ValueError(f"expected {self.n} values, got {y.shape[0]}")
        if self.y0 is None:
            self.s_d, self.s_td, self.s_dd = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
            self.y0 = y.copy()
            if self.track_range:
                self.y_min = y.copy()
                self.y_max = y.copy()
        else:
            d = y - self.y0
            self.s_d += d
            self.s_dd += d * d
            d *= self.tc[self.k]
            self.s_td += d
            if self.track_range:
                np.minimum(self.y_min, y, out=self.y_min)
                np.maximum(self.y_max, y, out=self.y_max)
        if self.distinct is not None:
            self.distinct.add(y)
        self.last = y
        self.k += 1

    def add_block(self, ys) -> None:
        """Fold in all K steps at once from a (K, n) float64 block, numpy or torch (then the sums
        run on its device and come back as numpy). The block is overwritten.

        Why: the same float64 sums as K ``add`` calls in about half the passes over memory (the
        two linear sums are one matrix product), which is most of a full-coverage analysis.
        """
        if self.k != 0:
            raise ValueError("add_block needs a fit with no steps added yet")
        if tuple(ys.shape) != (len(self.tc), self.n):
            raise ValueError(f"expected a ({len(self.tc)}, {self.n}) block, got {tuple(ys.shape)}")
        if isinstance(ys, np.ndarray):
            self._add_block_numpy(ys if ys.dtype == np.float64 else ys.astype(np.float64))
        else:
            self._add_block_torch(ys)
        self.k = len(self.tc)

    def _add_block_numpy(self, ys: np.ndarray) -> None:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf propagate; see all_finite
            if self.track_range:
                self.y_min, self.y_max = ys.min(axis=0), ys.max(axis=0)
            if self.distinct is not None:
                for row in ys:
                    self.distinct.add(row)
            self.y0, self.last = ys[0].copy(), ys[-1].copy()  # the block's buffer is reused
            d = ys[1:]
            d -= self.y0
            self.s_d, self.s_td = np.stack([np.ones(len(self.tc) - 1), self.tc[1:]]) @ d
            self.s_dd = np.einsum("kn,kn->n", d, d)

    def _add_block_torch(self, ys) -> None:
        import torch

        def host(x):  # a copy, also on the CPU: the block is overwritten below
            return x.to("cpu", copy=True).numpy()

        if ys.dtype != torch.float64:
            raise ValueError(f"add_block needs float64 values, got {ys.dtype}")
        if self.track_range:
            self.y_min, self.y_max = host(ys.amin(dim=0)), host(ys.amax(dim=0))
        if self.distinct is not None:
            for row in ys:
                self.distinct.add(host(row))
        y0 = ys[0].clone()
        self.y0, self.last = host(y0), host(ys[-1])
        d = ys[1:]
        d -= y0
        weights = torch.from_numpy(np.stack([np.ones(len(self.tc) - 1), self.tc[1:]])).to(ys.device)
        s_d, s_td = weights @ d
        self.s_d, self.s_td, self.s_dd = host(s_d), host(s_td), host(torch.einsum("kn,kn->n", d, d))

    def result(self) -> LineResult:
        if self.k != len(self.tc):
            raise ValueError(f"{self.k} of {len(self.tc)} steps added")
        kk = float(self.k)
        d_mean = self.s_d / kk
        with np.errstate(invalid="ignore", over="ignore"):
            syy = self.s_dd - self.s_d * d_mean
            np.maximum(syy, 0.0, out=syy)
        return LineResult(self.t_mean, self.sxx, self.y0 + d_mean, self.s_td / self.sxx,
                          self.s_td, syy)

    def all_finite(self) -> bool:
        """False if any value added was NaN/Inf (they propagate into these sums)."""
        return bool(np.isfinite(self.s_dd).all() and np.isfinite(self.y0).all())

    def endpoint_change(self) -> np.ndarray:
        """Value at the last step minus value at the first (the paper's token filter reads this)."""
        return self.last - self.y0

    def value_range(self) -> np.ndarray:
        """max - min over the steps (needs track_range)."""
        return self.y_max - self.y_min

    def n_distinct_capped(self) -> np.ndarray:
        """Number of distinct values seen, saturated at distinct_cap."""
        return self.distinct.count


class _DistinctCounter:
    """Exact 'at least cap distinct values' per coordinate, streaming, with cap - 1 slots."""

    def __init__(self, cap: int, n: int) -> None:
        self.cap = cap
        self.slots = np.full((cap - 1, n), np.nan)
        self.count = np.zeros(n, dtype=np.int64)

    def add(self, y: np.ndarray) -> None:
        seen = np.zeros(y.shape[0], dtype=bool)
        for slot in self.slots:
            seen |= slot == y
        new = np.nonzero(~seen & (self.count < self.cap))[0]
        store = new[self.count[new] < self.cap - 1]
        self.slots[self.count[store], store] = y[store]
        self.count[new] += 1


def two_point(y_b, y_s, alpha: float, out=None):
    """The K = 2 line evaluated at alpha = (T - b) / (s - b): y_b + alpha (y_s - y_b).

    Works on numpy arrays or torch tensors; with torch it is one fused ``lerp`` in the inputs'
    precision (fp32 in extrapolation, as the paper computes), written into ``out`` when given.
    """
    if hasattr(y_b, "lerp"):
        if out is not None:
            import torch

            return torch.lerp(y_b, y_s, alpha, out=out)
        return y_b.lerp(y_s, alpha)
    return y_b + alpha * (y_s - y_b)


def resolve_target(steps: Sequence[float], to_step: float | None = None,
                   alpha: float | None = None) -> tuple[float, float]:
    """(T, alpha) from exactly one of them, alpha = (T - b) / (s - b) with b, s the first and last
    of ``steps``: the one place where the step and the paper's alpha are converted."""
    if (to_step is None) == (alpha is None):
        raise RLExtraError("give exactly one of --to-step T or --alpha A")
    if len(steps) < 2:
        raise RLExtraError(f"alpha needs 2 or more steps, got {list(steps)}")
    b, s = float(steps[0]), float(steps[-1])
    if s == b:
        raise RLExtraError(f"first and last steps are both {b:g}; alpha is undefined")
    if to_step is not None:
        target = float(to_step)
        if not math.isfinite(target):
            raise RLExtraError(f"--to-step {to_step}: must be a finite number")
        alpha = (target - b) / (s - b)
        if not abs(alpha) <= MAX_ALPHA:
            raise RLExtraError(f"--to-step {to_step}: alpha {alpha:.3g} is out of range (|alpha| <= {MAX_ALPHA:g})")
        return target, alpha
    if not (math.isfinite(float(alpha)) and abs(float(alpha)) <= MAX_ALPHA):
        raise RLExtraError(f"--alpha {alpha}: must be a finite number with |alpha| <= {MAX_ALPHA:g}")
    return b + float(alpha) * (s - b), float(alpha)


def line_weights(steps: Sequence[float], target: float) -> np.ndarray:
    """Weights w with sum_k w_k y_k = the least-squares line through (steps, y) evaluated at target.

    The fitted value is linear in the observations: w_k = 1/K + (T - t_mean)(t_k - t_mean)/Sxx.
    This is how K-model logit extrapolation mixes logits without fitting per token; for K = 2
    it is (1 - alpha, alpha), the paper's two-point formula.
    """
    t = np.asarray(steps, dtype=np.float64)
    if len(t) == 1:
        return np.ones(1)
    if len(np.unique(t)) != len(t):
        raise ValueError(f"steps must be distinct, got {t.tolist()}")
    tc = t - t.mean()
    return 1.0 / len(t) + (float(target) - t.mean()) * tc / float(tc @ tc)


def fit_lines(steps: Sequence[float], values: np.ndarray) -> LineResult:
    """Fit a (K, n) block of values at K steps in one call (for small in-memory series)."""
    values = np.asarray(values, dtype=np.float64)
    fit = LineFit(steps, values.shape[1] if values.ndim == 2 else 1)
    for row in values.reshape(len(steps), -1):
        fit.add(row)
    return fit.result()
