"""Extrapolation methods on tensors: predict one weight tensor at step T from K snapshots.

Every method here is a read of the same least-squares line (``rlextra.linefit``):

* ``two-point`` (the paper's method): W_T = W_b + alpha (W_s - W_b), alpha = (T - b) / (s - b),
  from the first (b) and last (s) of the K snapshots.
* ``lsq``: each coordinate's least-squares line over K >= 3 snapshots, evaluated at T. With
  ``min_r2``, a coordinate whose own R^2 is below it keeps its newest value.
* ``low-rank`` (``rank`` r, default 1), rlextra's variant of the rank-1 methods of AlphaRL
  (arXiv 2510.00553) and RELEX (arXiv 2605.21468). For a 2-D weight (tensors with more
  dimensions are viewed as ``(shape[0], -1)``), with updates D_k = W_k - W_b relative to the first
  snapshot of the window:

  1. **Singular vectors of the newest update.** U_r, V_r are the top-r left/right singular vectors
     of D_s = W_s - W_b (exact SVD when the smaller side is at most 256, else
     ``torch.svd_lowrank`` with r + 10 columns, 4 power iterations and a fixed seed, e.g. for a
     150k x 3.5k embedding). They do not depend on T.
  2. **Linear coefficients.** Each snapshot's r x r core C_k = U_r^T D_k V_r (C_b = 0) is fitted
     by the least-squares line in the step over the window and read at T: C_T = sum_k w_k C_k,
     with w from ``line_weights``. This equals projecting the lsq-predicted update onto the
     subspace (U_r U_r^T D V_r V_r^T); for r = 1 the core is the single coefficient u^T D v.
  3. **Residual kept from the newest snapshot.** W_T = W_s + U_r (C_T - C_s) V_r^T: only the
     rank-r part moves; everything outside it stays at W_s, so a rank-r prediction never does
     worse than stopping at s outside the subspace.
  4. **1-D tensors** (biases, norms when extrapolated) get their own per-coordinate line, as lsq
     (with K = 2 that is two-point).

  With K = 2 the method is well defined: W_T = W_s + (alpha - 1) trunc_r(W_s - W_b), two-point
  restricted to the top-r directions of the update, so rlextra allows it (lsq needs K >= 3).

  How this differs from the sources (rlextra's choices): AlphaRL takes the SVD of one update
  (W_t - W_0) per attention/MLP matrix, keeps its top right singular vector fixed and predicts the
  left vector sigma*u (by regression on accuracy, not on the step), then adds the predicted rank-1
  update to a real checkpoint, so the residual is kept; embeddings and norms are left alone.
  RELEX flattens every tensor, takes the top-r principal directions of the stacked updates
  (theta_t - theta_0 over all history steps, one direction in parameter space rather than a
  matrix singular pair), fits each coefficient linearly in the step and rebuilds
  theta_0 + c(T) V_r^T, so the residual is dropped. rlextra uses matrix singular vectors as AlphaRL
  does, a linear fit in the step as RELEX does, and keeps the newest residual.

Arithmetic is fp32 on the values' device, whatever their dtype. Lines are evaluated as
y_b + sum_k w_k (y_k - y_b) (the weights sum to 1), which keeps precision when a weight moves by
1e-6 around 1.0. Memory: the K snapshots of one tensor (the caller holds them) plus a few
fp32 copies of it; the SVD needs the whole matrix, so low-rank is never chunked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlextra.errors import RLExtraError
from rlextra.hf import resolve_device
from rlextra.linefit import line_weights, two_point

from rlextra.extrapolate.registry import METHODS, MIN_CHECKPOINTS, canonical, method as registry_entry  # noqa: F401 (re-exported)

LOWRANK_ABOVE = 256  # smaller side of a matrix above which low-rank uses torch.svd_lowrank


def check_method(method: str, k: int, *, rank: int = 1, min_r2: float | None = None) -> None:
    """One-line errors for a method that cannot run on k snapshots with these options."""
    entry = registry_entry(method)
    method = entry.name
    need = entry.min_checkpoints
    if k < need:
        hint = " (with 2 it is two-point)" if method == "lsq" else ""
        raise RLExtraError(f"--method {method} needs at least {need} checkpoints, got {k}{hint}")
    if entry.max_checkpoints is not None and k > entry.max_checkpoints:
        raise RLExtraError(f"--method {method} takes exactly {entry.max_checkpoints} checkpoints, got {k}; "
                           "use --method lsq or low-rank")
    if min_r2 is not None and not 0 <= min_r2 <= 1:
        raise RLExtraError(f"--min-r2 {min_r2}: must be a number in [0, 1]")
    if min_r2 is not None and method != "lsq":
        raise RLExtraError("--min-r2 needs --method lsq (a two-point line always has R^2 = 1)")
    if int(rank) != rank or rank < 1:
        raise RLExtraError(f"--rank must be a positive integer, got {rank}")


def check_device(device: str | None):
    """A torch device from a user's --device (rlextra's one parser, ``hf.resolve_device``); None is
    the CPU, where the streamed methods run."""
    import torch

    return torch.device("cpu") if device is None else resolve_device(device)


class WindowPredictor:
    """One tensor's window of K snapshots, ready to be read at any target step.

    The per-window work (fp32 copies, low-rank's SVD and cores) is done once, so a backtest can read
    many targets from one window cheaply.
    """

    def __init__(self, method: str, steps: Sequence[float], values: Sequence, *, rank: int = 1,
                 min_r2: float | None = None, check: bool = True) -> None:
        import torch

        method = canonical(method)
        if check:
            check_method(method, len(values), rank=rank, min_r2=min_r2)
        if len(steps) != len(values):
            raise RLExtraError(f"{len(steps)} steps for {len(values)} tensors")
        shape = tuple(values[0].shape)
        for v in values:
            if tuple(v.shape) != shape:
                raise RLExtraError(f"tensors of one window differ in shape: {list(shape)} and {list(v.shape)}")
        self.method, self.steps, self.rank, self.min_r2 = method, [float(s) for s in steps], int(rank), min_r2
        if len(set(self.steps)) != len(self.steps):
            raise RLExtraError(f"steps must be distinct, got {self.steps}")
        device = values[0].device
        self.ys = [v.detach().to(device=device, dtype=torch.float32) for v in values]
        self.basis = None
        if method == "low-rank" and len(shape) >= 2 and all(d > 0 for d in shape):  # else its own line
            self._prepare_rank(shape)

    def _prepare_rank(self, shape: tuple[int, ...]) -> None:
        mat = lambda y: y.reshape(shape[0], -1)  # noqa: E731
        y_b = mat(self.ys[0])
        u, v = top_singular(mat(self.ys[-1]) - y_b, self.rank)
        self.basis = (u, v)
        self.cores = [u.T @ (mat(y) - y_b) @ v for y in self.ys]  # r x r each; cores[0] = 0

    def at(self, target: float):
        """The prediction at step ``target``, fp32, shaped like the inputs."""
        import torch

        ys, target = self.ys, float(target)
        if self.method == "two-point":
            b, s = self.steps[0], self.steps[-1]
            return two_point(ys[0], ys[-1], (target - b) / (s - b))
        w = line_weights(self.steps, target)
        if self.basis is not None:
            u, v = self.basis
            core = sum(float(wk) * c for wk, c in zip(w, self.cores))
            move = u @ (core - self.cores[-1]) @ v.T
            return ys[-1] + move.reshape(ys[-1].shape)
        pred = line_at(ys, w)
        if self.min_r2 is not None:
            low = line_r2(ys, self.steps) < self.min_r2  # NaN (constant) is False: its line is flat anyway
            pred = torch.where(low, ys[-1], pred)
        return pred


def predict_tensor(method: str, steps: Sequence[float], values: Sequence, target: float, *,
                   rank: int = 1, min_r2: float | None = None):
    """One tensor at step ``target`` from K same-shaped snapshots at ``steps`` (fp32 result).

    ``method``: 'two-point' (the first and last values; exactly 2), 'lsq' (K >= 3, optional
    ``min_r2``) or 'low-rank' (K >= 2, ``rank`` r). Math in fp32 on the values' device.
    """
    return WindowPredictor(method, steps, values, rank=rank, min_r2=min_r2).at(target)


def top_singular(d, rank: int):
    """Top-``rank`` left and right singular vectors (m x r, n x r) of a 2-D fp32 tensor.

    Exact SVD for small matrices; ``torch.svd_lowrank`` (randomised, seeded, so repeatable) when
    the smaller side exceeds LOWRANK_ABOVE.
    """
    import torch

    m, n = d.shape
    r = min(rank, m, n)
    if min(m, n) <= LOWRANK_ABOVE:
        u, _, vh = torch.linalg.svd(d, full_matrices=False)
        return u[:, :r].contiguous(), vh[:r].T.contiguous()
    with torch.random.fork_rng(devices=[d.device] if d.device.type == "cuda" else []):
        torch.manual_seed(0)
        u, _, v = torch.svd_lowrank(d, q=min(r + 10, m, n), niter=4)
    return u[:, :r].contiguous(), v[:, :r].contiguous()


def line_at(ys: Sequence, w: np.ndarray):
    """sum_k w_k y_k, evaluated as y_0 + sum_k w_k (y_k - y_0) (the weights sum to 1)."""
    pred = ys[0].clone()
    for wk, y in zip(w[1:], ys[1:]):
        pred.add_(y - ys[0], alpha=float(wk))
    return pred


def line_r2(ys: Sequence, steps: Sequence[float]):
    """Per-coordinate R^2 of the line fit, two-pass on shifted values in the values' dtype; NaN if constant."""
    import torch

    t = np.asarray(steps, dtype=np.float64)
    tc = t - t.mean()
    d_mean = sum(y - ys[0] for y in ys) / len(ys)
    sxy = torch.zeros_like(ys[0])
    syy = torch.zeros_like(ys[0])
    for tk, y in zip(tc, ys):
        d = y - ys[0] - d_mean
        sxy.add_(d, alpha=float(tk))
        syy.add_(d * d)
    r2 = sxy * sxy / (float(tc @ tc) * syy)
    return torch.where(syy > 0, r2.clamp(0.0, 1.0), torch.full_like(r2, float("nan")))
