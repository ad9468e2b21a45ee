"""The embedded default run (README command 1).

Until the RLVR harness lands, the demo exercises the checkpoint pipeline on a synthetic series:
a small Llama model whose weights drift linearly with noise, analysed and extrapolated, and the
extrapolated checkpoint compared with the real one at the same step.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, threads: int = 1,
             overwrite: bool = False) -> Path:
    """Generate a series, analyse it, extrapolate early checkpoints, write DIR/report.md."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    from rlextra.analysis import analyze_weights
    from rlextra.checkpoints import load_series
    from rlextra.errors import RLExtraError
    from rlextra.extrapolate import extrapolate_weights
    from rlextra.synthetic import tiny_llama_config, write_synthetic_series

    out = Path(out)
    if out.exists() and not overwrite:
        raise RLExtraError(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    steps = list(range(0, 101, 20 if quick else 10))
    cfg = tiny_llama_config(vocab_size=128, hidden=64 if quick else 128, layers=2 if quick else 4,
                            intermediate=128 if quick else 256)
    print(f"[demo] writing {len(steps)} synthetic checkpoints (steps {steps[0]}..{steps[-1]})", flush=True)
    run = out / "run"
    write_synthetic_series(run, cfg, steps, drift=2e-2, noise=2e-3, seed=seed)
    print("[demo] analyze weights", flush=True)
    rep = analyze_weights(run, out / "weights", seed=seed)
    early = [f"{run}/checkpoint-{steps[0]}", f"{run}/checkpoint-{steps[len(steps) // 2]}"]
    print(f"[demo] extrapolate {early} -> step {steps[-1]}", flush=True)
    extrapolate_weights(early, out / "extrapolated", to_step=steps[-1])
    pair = load_series([f"{steps[-1]}={out / 'extrapolated'}"], min_checkpoints=1)
    real = load_series([f"{run}/checkpoint-{steps[-1]}"]).newest
    errs, spans = [], []
    first = load_series([f"{run}/checkpoint-{steps[0]}"]).newest
    for name in real.tensors:
        x = pair.newest.tensors[name].read(0, real.tensors[name].numel)
        y = real.tensors[name].read(0, real.tensors[name].numel)
        z = first.tensors[name].read(0, real.tensors[name].numel)
        errs.append(np.linalg.norm(x - y))
        spans.append(np.linalg.norm(y - z))
    rel = float(np.linalg.norm(errs) / np.linalg.norm(spans))
    g = rep["global"]
    report = out / "report.md"
    report.write_text(
        "# rlextra demo (synthetic series)\n\n"
        f"Steps {steps}, {rep['n_params']:,} parameters, drift 2e-2 and noise 2e-3 planted.\n\n"
        f"- R^2 mean {g['mean_r2']:.4f}, median {g['median_r2']:.4f}, "
        f"fraction > 0.7: {g['frac_r2_above_0.7']:.4f}\n"
        f"- Two-point extrapolation from steps {steps[0]} and {steps[len(steps) // 2]} to step "
        f"{steps[-1]}: ||W_extra - W_real|| / ||W_real - W_0|| = {rel:.4f} (norms copied)\n\n"
        "![R^2 histogram](weights/r2_histogram.png)\n\n![heatmap](weights/r2_heatmap.png)\n\n"
        "![trajectories](weights/trajectories.png)\n")
    print(f"[demo] report: {report}")
    return report
