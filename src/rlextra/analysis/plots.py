"""PNG plots of a linearity report: R^2 histogram, module x layer heatmap, example trajectories."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlextra.linefit import fit_lines  # noqa: E402

_LAYER = re.compile(r"\.(\d+)\.(.+)$")


def plot_r2_histogram(g: dict, path: Path, title: str = "Weights") -> None:
    """An R^2 distribution (a summary with mean/median/frac/histogram), 0.7 threshold marked."""
    edges = np.asarray(g["histogram"]["edges"])
    counts = np.asarray(g["histogram"]["counts"], dtype=float)
    total = counts.sum()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(edges[:-1], counts / total if total else counts, width=np.diff(edges), align="edge",
           color="#4477aa", edgecolor="white")
    ax.axvline(0.7, color="#cc3311", ls="--", lw=1, label="R² = 0.7")
    frac = g.get("frac_r2_above_0.7")
    sub = f"mean {g['mean_r2']:.3f}, median {g['median_r2']:.3f}, {100 * frac:.1f}% > 0.7" \
        if frac is not None else "no parameter analysed"
    ax.set_title(f"{title}: R² of linear fit vs step\n{sub}", fontsize=10)
    ax.set_xlabel("R²")
    ax.set_ylabel("fraction")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_module_grid(tensors: Sequence[dict], key: str = "mean_r2"
                      ) -> tuple[list[str], list[int], np.ndarray]:
    """Rows: module names (e.g. self_attn.q_proj.weight), columns: layer indices; NaN where absent."""
    cells: dict[tuple[str, int], float] = {}
    for t in tensors:
        m = _LAYER.search(t["name"])
        if m and t.get(key) is not None:
            cells[(m.group(2), int(m.group(1)))] = t[key]
    modules = sorted({k[0] for k in cells})
    layers = sorted({k[1] for k in cells})
    grid = np.full((len(modules), len(layers)), np.nan)
    for (mod, layer), v in cells.items():
        grid[modules.index(mod), layers.index(layer)] = v
    return modules, layers, grid


def plot_r2_heatmap(report: dict, path: Path) -> None:
    """Mean R^2 per module and layer; tensors outside numbered layers are listed in weights.csv."""
    modules, layers, grid = layer_module_grid(report["tensors"])
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers) + 3), max(3, 0.35 * len(modules) + 1.5)))
    if grid.size:
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(modules)), modules, fontsize=7)
        step = max(1, len(layers) // 16)
        ax.set_xticks(range(0, len(layers), step), [str(x) for x in layers[::step]], fontsize=7)
        fig.colorbar(im, ax=ax, label="mean R²")
    else:
        ax.text(0.5, 0.5, "no per-layer tensors", ha="center", va="center")
    ax.set_xlabel("layer")
    ax.set_title("Mean R² per module and layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(steps: Sequence[int], examples: Sequence[dict], path: Path,
                      ylabel: str = "weight value") -> None:
    """A few individual trajectories (randomly chosen, not cherry-picked) with their fitted lines."""
    n = max(1, len(examples))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    t = np.asarray(steps, dtype=float)
    for ax, ex in zip(axes.flat, examples):
        y = np.asarray(ex["values"])
        fit = fit_lines(t, y[:, None])
        ax.plot(t, y, "o", ms=4, color="#4477aa")
        ax.plot(t, fit.value_at(t[0])[0] + fit.slope[0] * (t - t[0]), "-", color="#cc3311", lw=1)
        label = ex.get("label") or f"{ex['tensor']}[{ex['index']}]"
        ax.set_title(f"{label}\nR² = {ex['r2']:.3f}", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(examples):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_curve(real: dict[int, float], extrapolated: dict[int, float],
                        rewards: dict[int, float], path: Path, title: str = "Held-out accuracy vs step",
                        extra_label: str = "extrapolated", logits: dict[int, float] | None = None,
                        logits_label: str = "logits extrapolation", rl_extra: dict[int, float] | None = None,
                        rl_extra_label: str = "RL-Extra") -> None:
    """Accuracy of real checkpoints (line), extrapolated ones (markers), training reward (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = sorted(real)
    ax.plot(xs, [real[x] for x in xs], "o-", color="#4477aa", label="real checkpoints")
    if extrapolated:
        xe = sorted(extrapolated)
        ax.plot(xe, [extrapolated[x] for x in xe], "D", ms=7, color="#cc3311", label=extra_label)
    if logits:
        xl = sorted(logits)
        ax.plot(xl, [logits[x] for x in xl], "s", ms=6, mfc="none", mew=1.5, color="#228833",
                label=logits_label)
    if rl_extra:
        xx = sorted(rl_extra)
        ax.plot(xx, [rl_extra[x] for x in xx], "^-", ms=4, lw=1, color="#aa3377", label=rl_extra_label)
    if rewards:
        xr = sorted(rewards)
        ax.plot(xr, [rewards[x] for x in xr], "--", color="#999999", label="mean training reward (T=1)")
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy / reward")
    ax.set_ylim(0, 1.04)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_series(steps: Sequence[int], values: Sequence[float], path: Path, ylabel: str) -> None:
    """One quantity against the step, with its least-squares line."""
    t = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    fit = fit_lines(t, y[:, None])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, y, "o-", color="#4477aa", label="measured")
    ax.plot(t, fit.value_at(0)[0] + fit.slope[0] * t, "--", color="#cc3311",
            label=f"line, R² = {fit.r2()[0]:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layer_r2(per_layer: Sequence[dict], path: Path, title: str = "Activations") -> None:
    """Mean R^2 (and the fraction above 0.7) of each layer's coordinates against the layer index."""
    layers = [row["layer"] for row in per_layer]
    mean = [np.nan if row["mean_r2"] is None else row["mean_r2"] for row in per_layer]
    frac = [np.nan if row["frac_r2_above_0.7"] is None else row["frac_r2_above_0.7"] for row in per_layer]
    fig, ax = plt.subplots(figsize=(max(5, 0.2 * len(layers) + 3), 3.5))
    ax.plot(layers, mean, "o-", color="#4477aa", label="mean R²")
    ax.plot(layers, frac, "s--", ms=4, color="#cc3311", label="fraction R² > 0.7")
    ax.set_xlabel("layer (output of)")
    ax.set_ylim(0, 1.04)
    ax.set_title(f"{title}: R² of linear fit vs step, per layer", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_linearity_vs_step(rows: Sequence[dict], path: Path, title: str = "In-flight linearity") -> None:
    """Window R^2 (mean, fraction > 0.7), in-flight weight error and, where rows carry it, the lr
    headroom (rlextra's heuristic) with the lr multiplier an lr-auto run took, against the step."""
    jumps = [r["step"] for r in rows if r.get("event") in ("jump", "lr_change")]
    rows = [r for r in rows if "event" not in r and r.get("mean_r2") is not None]
    room = [(r["step"], r["lr_headroom"]["multiplier"]) for r in rows if r.get("lr_headroom")]
    fig, axes = plt.subplots(1, 3 if room else 2, figsize=(16 if room else 11, 4))
    a1, a2 = axes[0], axes[1]
    if room:
        a3 = axes[2]
        a3.step(*zip(*room), where="post", label="lr headroom (in-flight error < threshold)")
        taken = [(r["step"], r["lr_multiplier"]) for r in rows if r.get("lr_multiplier") is not None]
        if taken:
            a3.step(*zip(*taken), where="post", ls="--", label="lr multiplier taken (lr-auto)")
        a3.set_yscale("log", base=2)
        a3.set_xlabel("real step")
        a3.set_title("lr headroom (rlextra's heuristic)")
        a3.legend(fontsize=7)
    steps = [r["step"] for r in rows]
    a1.plot(steps, [r["mean_r2"] for r in rows], "o-", ms=3, label="mean R²")
    if all("frac_r2_above_0.7" in r for r in rows):  # compacted rows (a benchmark's record) may keep the mean only
        a1.plot(steps, [r["frac_r2_above_0.7"] for r in rows], "s--", ms=3, label="fraction R² > 0.7")
    a1.set_xlabel("real step")
    a1.set_ylim(0, 1)
    a1.set_title("window R²")
    a1.legend()
    alphas = sorted({e["alpha"] for r in rows for e in r["backtest_ladder"].get("two-point", [])})
    for alpha in alphas:
        pts = [(r["step"], e["weight_error"]) for r in rows for e in r["backtest_ladder"].get("two-point", [])
               if e["alpha"] == alpha and e["weight_error"] is not None]
        if pts:
            a2.plot(*zip(*pts), "o-", ms=3, label=f"two-point, alpha {alpha:g}")
    a2.axhline(1.0, color="#cc3311", ls="--", lw=1, label="no better than stopping")
    if room:
        from rlextra.extrapolate.headroom import HEADROOM_THRESHOLD

        last = next(r for r in reversed(rows) if r.get("lr_headroom"))["lr_headroom"]
        a2.axhline(last.get("threshold", HEADROOM_THRESHOLD), color="grey", ls=":", lw=1, label="headroom threshold")
    for j in jumps:
        a1.axvline(j, color="grey", lw=0.5)
        a2.axvline(j, color="grey", lw=0.5)
    a2.set_xlabel("real step")
    a2.set_ylabel("||W_pred - W_T|| / ||W_T - W_s||")
    a2.set_yscale("log")
    a2.set_title("in-flight weight error")
    a2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
