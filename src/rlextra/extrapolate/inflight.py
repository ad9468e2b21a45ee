"""In-flight linearity: the R^2 of a window of sampled snapshots, and a backtest inside the window.

A run that is still training has no future checkpoints to check a jump against; it has its
recent past. The trainer callback (``rlextra.rl.LinearityMonitor``) and ``rlextra watch`` keep the
last W snapshots of a fixed sample of entries (``rlextra.sampling``: the entries that
``analyze weights --sample F --seed S`` reads) and compute here, per snapshot:

* the window's R^2: each sampled entry's least-squares line over the window's steps (the same
  ``LineFit`` kernel as ``analyze weights``), summarised as the mean R^2 and the fraction above
  0.7, over all entries and per module type (attention, mlp, embeddings, norms, other). Entries
  that were NaN or Inf in any snapshot are counted (``n_nonfinite``), never fitted, and then no
  weight error of the window is reported (None), so nothing acts on a diverged run;
* the relative update: ``||W_T - W_prev|| / ||W_prev||`` per real step between the two newest
  snapshots, on the sample (``relative_update``): the size of the step against the weights, a
  figure that, unlike R^2 and the weight error, scales with the learning rate;
* an in-flight backtest: the newest snapshot T is predicted from older snapshots of the window at
  the horizons a jump would use. For alpha = (T - b) / (s - b), two-point reads (b, s) and lsq
  reads every snapshot from b to s; of the (b, s) in the window that give exactly that alpha, the
  longest span is taken. ``weight_error = ||W_pred - W_T|| / ||W_T - W_s||`` on the sample (the
  backtest's definition: below 1 the prediction beats stopping at s). Norm weights are predicted
  by their value at s, as a jump leaves them (``norms='copy'``).

Everything is returned first as additive sums (``window_sums``), so shards of a model (FSDP ranks)
add theirs up before ``finalize_window`` turns them into the logged row.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from rlextra.extrapolate.backtest import MODULE_TYPES, module_type
from rlextra.linefit import LineFit, line_weights

INFLIGHT_METHODS = ("two-point", "lsq")
DEFAULT_ALPHAS = (1.25, 1.5, 2.0, 3.0, 6.0)  # jumps of n = m/4, m/2, m, 2m, 5m after m real steps
GROUPS = ("all",) + MODULE_TYPES


def pick_window(steps: Sequence[float], alpha: float, method: str) -> tuple[int, int] | None:
    """Indices (b, s) into ``steps`` whose line, read at the last step T, is at ``alpha``.

    The longest span wins (T - b, then s - b); lsq needs 3 snapshots from b to s. None when the
    window holds no such pair.
    """
    t = [float(x) for x in steps]
    last = len(t) - 1
    best = None
    for b in range(last):
        for s in range(b + 1, last):
            if method == "lsq" and s - b < 2:
                continue
            if math.isclose(t[last] - t[b], alpha * (t[s] - t[b]), rel_tol=1e-9, abs_tol=1e-9):
                key = (t[last] - t[b], t[s] - t[b])
                if best is None or key > best[0]:
                    best = (key, (b, s))
    return None if best is None else best[1]


def predict(method: str, steps: Sequence[float], values: Sequence[np.ndarray], b: int, s: int) -> np.ndarray:
    """The prediction at the last step from snapshots b..s (two-point: b and s only), float64."""
    target = float(steps[-1])
    if method == "two-point":
        alpha = (target - steps[b]) / (steps[s] - steps[b])
        return values[b] + alpha * (values[s] - values[b])
    w = line_weights(steps[b:s + 1], target)
    return sum(wk * v for wk, v in zip(w, values[b:s + 1]))


def window_sums(steps: Sequence[float], snapshots: Mapping[str, Sequence[np.ndarray]], *,
                alphas: Sequence[float] = DEFAULT_ALPHAS, methods: Sequence[str] = INFLIGHT_METHODS) -> dict:
    """Additive sums of one window: ``snapshots[name]`` holds one sampled vector per step (oldest first).

    Keys: ``r2/<group>/{sum,n,above,constant}``, ``upd/{num,den}`` (the newest step's squared norm and
    the previous snapshot's) and, per method and alpha that fits the window,
    ``bt/<method>/<alpha>/<group>/{num,den}`` (squared norms) with ``bt/<method>/<alpha>/{b,s}``
    (the steps used; not additive, equal on every shard).
    """
    steps = [float(x) for x in steps]
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    windows = {(m, a): pick_window(steps, a, m) for m in methods for a in alphas} if len(steps) >= 3 else {}
    by_group: dict[str, list[str]] = {}
    for name in snapshots:  # one vector per module type: the fit is per entry, so grouping changes no value
        by_group.setdefault(module_type(name), []).append(name)
    for group, names in by_group.items():
        ys = [np.concatenate([np.asarray(snapshots[n][k], dtype=np.float64).reshape(-1) for n in names])
              for k in range(len(steps))]
        ok = np.logical_and.reduce([np.isfinite(y) for y in ys])  # NaN/Inf entries: counted, never fitted
        if not ok.all():
            ys = [y[ok] for y in ys]
        fit = LineFit(steps, ys[0].size)
        for y in ys:
            fit.add(y)
        r2 = fit.result().r2()
        finite = np.isfinite(r2)
        vals = r2[finite]
        if len(ys) >= 2:
            add("upd/num", float(np.sum((ys[-1] - ys[-2]) ** 2)))
            add("upd/den", float(np.sum(ys[-2] ** 2)))
        for g in ("all", group):
            add(f"r2/{g}/sum", float(vals.sum()))
            add(f"r2/{g}/n", float(vals.size))
            add(f"r2/{g}/above", float((vals > 0.7).sum()))
            add(f"r2/{g}/constant", float((~finite).sum()))
            add(f"r2/{g}/nonfinite", float((~ok).sum()))
        for (method, alpha), pair in windows.items():
            if pair is None:
                continue
            b, s = pair
            pred = ys[s] if group == "norms" else predict(method, steps, ys, b, s)  # norms stay, as a jump leaves them
            num = float(np.sum((pred - ys[-1]) ** 2))
            den = float(np.sum((ys[-1] - ys[s]) ** 2))
            key = f"bt/{method}/{alpha:g}"
            sums[f"{key}/b"], sums[f"{key}/s"] = steps[b], steps[s]
            for g in ("all", group):
                add(f"{key}/{g}/num", num)
                add(f"{key}/{g}/den", den)
    return sums


def _ratio(num: float, den: float) -> float | None:
    return math.sqrt(num / den) if den > 0 else None


def finalize_window(step: float, steps: Sequence[float], sums: Mapping[str, float], *,
                    alphas: Sequence[float] = DEFAULT_ALPHAS, methods: Sequence[str] = INFLIGHT_METHODS,
                    primary_alpha: float | None = 2.0) -> dict:
    """The row a monitor logs for one window: R^2 figures, and the backtest at every horizon.

    ``backtest[method]`` is the figure at ``primary_alpha`` (the jump the run would make; the
    nearest measured alpha when it does not fit the window); ``backtest_ladder[method]`` lists
    every alpha that fits.
    """
    row: dict = {"step": step, "window_steps": list(steps)}
    per_module = {}
    for g in GROUPS:
        n = sums.get(f"r2/{g}/n", 0.0)
        if n == 0 and g != "all":
            continue
        fig = {"mean_r2": sums[f"r2/{g}/sum"] / n if n else None,
               "frac_r2_above_0.7": sums[f"r2/{g}/above"] / n if n else None,
               "n_analyzed": int(n), "n_constant": int(sums.get(f"r2/{g}/constant", 0.0)),
               "n_nonfinite": int(sums.get(f"r2/{g}/nonfinite", 0.0))}
        if g == "all":
            row.update(fig)
        else:
            per_module[g] = {k: fig[k] for k in ("mean_r2", "frac_r2_above_0.7")}
    row["per_module"] = per_module
    gap = float(steps[-1]) - float(steps[-2]) if len(steps) >= 2 else 0.0
    upd = _ratio(sums.get("upd/num", 0.0), sums.get("upd/den", 0.0))
    row["relative_update"] = upd / gap if upd is not None and gap > 0 and math.isfinite(upd) else None
    ladder: dict[str, list[dict]] = {}
    for method in methods:
        entries = []
        for alpha in alphas:
            key = f"bt/{method}/{alpha:g}"
            if f"{key}/b" not in sums:
                continue
            entries.append({"alpha": alpha, "b": sums[f"{key}/b"], "s": sums[f"{key}/s"],
                            "weight_error": _ratio(sums.get(f"{key}/all/num", 0.0), sums.get(f"{key}/all/den", 0.0)),
                            "per_module": {g: _ratio(sums[f"{key}/{g}/num"], sums[f"{key}/{g}/den"])
                                           for g in MODULE_TYPES if f"{key}/{g}/den" in sums}})
        ladder[method] = entries
    if row.get("n_nonfinite"):  # a diverged run: no weight error is trusted (auto then never jumps)
        for entries in ladder.values():
            for e in entries:
                e["weight_error"] = None
    row["backtest_ladder"] = ladder
    primary = {}
    for method, entries in ladder.items():
        if entries and primary_alpha is not None:
            e = min(entries, key=lambda x: (abs(x["alpha"] - primary_alpha), -x["alpha"]))
            primary[method] = {"alpha": e["alpha"], "weight_error": e["weight_error"]}
    row["backtest"] = primary
    return row


def flat_metrics(row: Mapping) -> dict[str, float]:
    """The scalars a trainer logs (console, TensorBoard, W&B) for one monitor row."""
    out = {"linearity/mean_r2": row.get("mean_r2"), "linearity/frac_r2_above_0.7": row.get("frac_r2_above_0.7")}
    for g, fig in row.get("per_module", {}).items():
        out[f"linearity/{g}/mean_r2"] = fig["mean_r2"]
        out[f"linearity/{g}/frac_r2_above_0.7"] = fig["frac_r2_above_0.7"]
    if row.get("lr_headroom"):
        out["linearity/lr_headroom"] = row["lr_headroom"]["multiplier"]
    if row.get("relative_update") is not None:
        out["linearity/relative_update"] = row["relative_update"]
    for method, e in row.get("backtest", {}).items():
        out[f"backtest/{method}/weight_error"] = e["weight_error"]
        out[f"backtest/{method}/alpha"] = e["alpha"]
    return {k: float(v) for k, v in out.items() if v is not None}


class InflightWindow:
    """The one window of sampled snapshots that the trainer's ``LinearityMonitor`` and ``rlextra watch``
    keep: the last ``size`` snapshots of the current segment (a jump or an lr change starts a new one,
    so no window straddles it), the rows and events logged so far, and the row of the window now.

    ``add`` keeps a snapshot (the arrays are kept as given, not copied); ``row`` computes the window's
    row (``sums`` from outside when shards added theirs up) with its ``segment`` and ``lr_headroom``;
    ``record`` appends a row or an event. ``state``/``tensors`` and ``load`` save and resume it.
    """

    def __init__(self, size: int, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 methods: Sequence[str] = INFLIGHT_METHODS, primary_alpha: float | None = 2.0) -> None:
        self.size, self.methods, self.primary_alpha = size, tuple(methods), primary_alpha
        self.alphas = tuple(sorted(set(float(a) for a in alphas)))
        self.snapshots: list[tuple[float, dict[str, np.ndarray]]] = []
        self.segment = 0
        self.rows: list[dict] = []  # every row and event, oldest first

    @property
    def steps(self) -> list[float]:
        return [s for s, _ in self.snapshots]

    def add(self, step: float, sample: Mapping[str, np.ndarray]) -> bool:
        """Keep the snapshot at ``step`` (once per step); False when the window holds it already."""
        if self.snapshots and self.snapshots[-1][0] == step:
            return False
        self.snapshots.append((step, dict(sample)))
        del self.snapshots[:-self.size]
        return True

    def ready(self) -> bool:
        return len(self.snapshots) >= 3

    def sums(self) -> dict:
        names = self.snapshots[-1][1].keys()
        return window_sums(self.steps, {n: [snap[n] for _, snap in self.snapshots] for n in names},
                           alphas=self.alphas, methods=self.methods)

    def row(self, sums: Mapping[str, float] | None = None) -> dict:
        """The row of the window now (not recorded): R^2, the backtest ladder, segment, lr headroom."""
        from rlextra.extrapolate.headroom import recent_headroom

        row = finalize_window(self.steps[-1], self.steps, self.sums() if sums is None else sums, alphas=self.alphas,
                              methods=self.methods, primary_alpha=self.primary_alpha)
        row["segment"] = self.segment
        row["lr_headroom"] = recent_headroom(self.segment_rows(), row)
        return row

    def record(self, row: dict) -> None:
        self.rows.append(row)

    def restart(self, step: float, sample: Mapping[str, np.ndarray], event: str, **info) -> dict:
        """The path changed at ``step``: a new segment starting from ``sample``; returns the event row."""
        self.segment += 1
        self.snapshots = [(step, dict(sample))]
        ev = {"step": step, "event": event, "segment": self.segment, **info}
        self.record(ev)
        return ev

    def segment_rows(self) -> list[dict]:
        """The rows (not events) of the current segment, oldest first."""
        return [r for r in self.rows if r.get("segment") == self.segment and "event" not in r]

    def state(self) -> dict:
        return {"snapshot_steps": self.steps, "segment": self.segment, "rows": self.rows}

    def tensors(self) -> dict[str, np.ndarray]:
        """Every snapshot as ``"i/name"`` arrays (a safetensors file)."""
        return {f"{i}/{k}": v for i, (_, snap) in enumerate(self.snapshots) for k, v in snap.items()}

    def load(self, state: Mapping, tensors: Mapping[str, np.ndarray], where: str) -> None:
        """Resume from ``state`` and ``tensors`` (as saved); NaN or Inf in them is refused, naming ``where``."""
        from rlextra.errors import RLExtraError

        self.snapshots = [(s, {k.split("/", 1)[1]: np.asarray(v) for k, v in tensors.items()
                               if k.split("/", 1)[0] == str(i)}) for i, s in enumerate(state["snapshot_steps"])]
        if any(not np.isfinite(v).all() for _, snap in self.snapshots for v in snap.values()):
            raise RLExtraError(f"{where}: the monitor's window holds NaN or Inf; remove this checkpoint folder to "
                               "resume from the one before")
        self.segment, self.rows = state["segment"], list(state["rows"])
