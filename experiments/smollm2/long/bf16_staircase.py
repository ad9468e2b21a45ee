"""Why fp32 checkpoints matter: one run's series analysed as saved (fp32) and after a bf16 cast.

A merged verl checkpoint is bf16 (verl.model_merger casts every tensor); the trainer's shards hold
fp32. This script takes fp32 checkpoints of a real run (the long SmolLM2 runs: rlextra train saves
fp32), writes a bf16 copy of each (round to nearest even, as torch casts), and runs the same weight
analysis on both: the fraction of constant entries, the R^2 distribution, and what the paper's
filters (--min-change 1e-4 --min-distinct 4) keep in each. It draws a few entries' paths in both
precisions (the staircase and the line) beside the two R^2 histograms.

Usage (repository root):
  OMP_NUM_THREADS=1 .venv/bin/python experiments/smollm2/long/bf16_staircase.py \\
      experiments/smollm2/long/work/runs/grpo-lr1.2e-05 --label "x12 (lr 1.2e-5), steps 0-150" \\
      -o experiments/smollm2/long/bf16_staircase_x12.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def bf16_copy(run: Path, work: Path, steps: list[int] | None) -> Path:
    """checkpoint-N/model.safetensors (+ config.json) cast to bf16 under work/, made once."""
    import torch
    from safetensors.torch import load_file, save_file

    out = work / "bf16"
    for ckpt in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(ckpt.name.split("-")[1])
        if steps is not None and step not in steps:
            continue
        dst = out / ckpt.name
        if (dst / "model.safetensors").is_file():
            continue
        tmp = out / f".{ckpt.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = load_file(str(ckpt / "model.safetensors"))
        save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()},
                  str(tmp / "model.safetensors"))
        shutil.copy(ckpt / "config.json", tmp / "config.json")
        tmp.rename(dst)
    return out


def summary(rep: dict) -> dict:
    g = rep["global"]
    return {"n_params": rep["n_params"], "constant": rep["n_params_constant"] / rep["n_params"],
            "analyzed": rep["n_params_analyzed"] / rep["n_params"], "mean_r2": g["mean_r2"],
            "median_r2": g["median_r2"], "frac_r2_above_0.7": g["frac_r2_above_0.7"], "histogram": g["histogram"]}


def paths(run: Path, bf16: Path, steps: list[int], tensor: str, n: int, seed: int) -> dict:
    """n entries of one tensor across the series, fp32 and bf16 (entries that move, picked at random)."""
    from rlextra.checkpoints import load_series, read_values

    a, b = load_series([run / f"checkpoint-{s}" for s in steps]), load_series([bf16 / f"checkpoint-{s}" for s in steps])
    ref = a.newest.tensors[tensor]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(ref.numel, size=min(4096, ref.numel), replace=False))
    first, last = (read_values(r, 0, r.numel)[pick] for r in (a.checkpoints[0].tensors[tensor], ref))
    moved = np.abs(last - first) / bf16_spacing(first)  # in bf16 steps at the entry's size
    band = pick[(moved >= 1) & (moved <= 4)]  # a few bf16 steps over the run: where a staircase shows
    pool = band if band.size >= n else pick[np.argsort(-moved)[: 4 * n]]
    chosen = np.sort(rng.choice(pool, size=n, replace=False))
    return {"tensor": tensor, "index": chosen.tolist(), "steps": a.steps,
            "fp32": [[float(read_values(c.tensors[tensor], int(i), int(i) + 1)[0]) for c in a.checkpoints]
                     for i in chosen],
            "bf16": [[float(read_values(c.tensors[tensor], int(i), int(i) + 1)[0]) for c in b.checkpoints]
                     for i in chosen]}


def bf16_spacing(x) -> np.ndarray:
    """The distance between neighbouring bf16 values at |x| (bf16 keeps 8 of float32's 24 significant bits)."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float32))).astype(np.float64) * 2.0 ** 16


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    p = res["paths"]
    for k, (f, b) in enumerate(zip(p["fp32"], p["bf16"])):
        unit = bf16_spacing(f[0])
        axes[k % 2].plot(p["steps"], (np.array(f) - f[0]) / unit, "o-", ms=3, color=f"C{k}",
                         label="fp32" if k < 2 else None)
        axes[k % 2].step(p["steps"], (np.array(b) - f[0]) / unit, where="post", color=f"C{k}", alpha=0.7, ls="--",
                         label="bf16 cast" if k < 2 else None)
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.set_ylabel("change since the first checkpoint, in bf16 steps")
        ax.legend(fontsize=8)
    axes[0].set_title(f"{p['tensor']}: entries that moved 1-4 bf16 steps", fontsize=8)
    axes[1].set_title(f"more of them (in bf16, {100 * res['bf16']['constant']:.1f}% of all entries never move)",
                      fontsize=8)
    edges = np.array(res["fp32"]["histogram"]["edges"])
    for name, color in (("fp32", "C0"), ("bf16", "C3")):
        counts = np.array(res[name]["histogram"]["counts"], dtype=float)
        axes[2].step(edges[:-1], counts / counts.sum(), where="post", color=color,
                     label=f"{name}: mean R² {res[name]['mean_r2']:.3f}, constant {100 * res[name]['constant']:.1f}%")
    axes[2].set_xlabel("R² of an entry's line over the steps")
    axes[2].set_ylabel("fraction of the fitted entries")
    axes[2].set_title(res["label"], fontsize=8)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.rename(out)


def main() -> None:
    from rlextra.analysis import analyze_weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder of fp32 checkpoint-N/ folders")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the JSON to write (a PNG beside it)")
    ap.add_argument("--label", required=True)
    ap.add_argument("--steps", help="comma-separated steps (default: every checkpoint)")
    ap.add_argument("--work", type=Path, default=None, help="for the bf16 copies (default: beside the run)")
    ap.add_argument("--tensor", default="model.layers.15.mlp.up_proj.weight")
    a = ap.parse_args()
    steps = [int(s) for s in a.steps.split(",")] if a.steps else None
    work = a.work or a.run.parent.parent / "bf16" / a.run.name
    bf16 = bf16_copy(a.run, work, steps)
    if steps is None:
        steps = sorted(int(p.name.split("-")[1]) for p in a.run.glob("checkpoint-*"))
    res = {"label": a.label, "run": str(a.run), "steps": steps,
           "filters": {"min_change": 1e-4, "min_distinct": min(4, len(steps))}}
    for name, root in (("fp32", a.run), ("bf16", bf16)):
        series = [root / f"checkpoint-{s}" for s in steps]
        res[name] = summary(analyze_weights(series, plots=False, progress=False))
        res[name]["paper_filters"] = summary(analyze_weights(series, plots=False, progress=False,
                                                             min_change=1e-4, min_distinct=min(4, len(steps))))
        res[name]["paper_filters"].pop("histogram")
    res["paths"] = paths(a.run, bf16, steps, a.tensor, 6, 0)
    a.output.write_text(json.dumps(res, indent=1) + "\n")
    plot(res, a.output.with_suffix(".png"))
    for name in ("fp32", "bf16"):
        r, f = res[name], res[name]["paper_filters"]
        kept = "none" if f["mean_r2"] is None else f"{100 * f['analyzed']:.2f}% (mean R^2 {f['mean_r2']:.3f})"
        print(f"{name}: constant {100 * r['constant']:.2f}%, mean R^2 {r['mean_r2']:.3f}, median {r['median_r2']:.3f}, "
              f"> 0.7 {100 * r['frac_r2_above_0.7']:.1f}%; the paper's filters keep {kept}")


if __name__ == "__main__":
    main()
