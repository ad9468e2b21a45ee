"""PNG plots of a backtest: weight error against alpha per method, accuracy against step."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = {"two-point": ("#4477aa", "o"), "lsq": ("#228833", "s"), "low-rank": ("#cc3311", "^"),
          "logits": ("#aa3377", "D")}


def plot_backtest_error(rows: list[dict], path: Path) -> None:
    """Every prediction's weight error against its alpha, one colour per method; 1 = stopping at s."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["alpha"], r["weight_error"]) for r in rows
               if r["method"] == method and r["weight_error"] is not None]
        if pts:
            color, marker = _STYLE.get(method, ("#777777", "x"))
            ax.scatter(*zip(*pts), s=22, color=color, marker=marker, alpha=0.75, label=method)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="no better than stopping at s")
    ax.set_yscale("log")
    ax.set_xlabel("alpha = (T - b) / (s - b)")
    ax.set_ylabel("||W_pred - W_T|| / ||W_T - W_s||")
    ax.set_title("Backtest: weight error of each prediction", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_backtest_accuracy(rows: list[dict], real: dict, path: Path) -> None:
    """Real checkpoints' accuracy against step (line), each prediction at its target step (markers)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    steps = sorted(real["by_step"], key=float)
    ax.plot([float(s) for s in steps], [real["by_step"][s] for s in steps], color="black", marker="o",
            lw=1.5, label="real checkpoints")
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["target"], r["accuracy"]) for r in rows
               if r["method"] == method and r.get("accuracy") is not None]
        if pts:
            color, marker = _STYLE.get(method, ("#777777", "x"))
            ax.scatter(*zip(*pts), s=22, color=color, marker=marker, alpha=0.7, label=f"{method} prediction")
    ax.set_xlabel("step")
    ax.set_ylabel(real["metric"])
    ax.set_title("Backtest: held-out accuracy of predictions and real checkpoints", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
