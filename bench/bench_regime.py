"""How the demo's training regime was chosen: candidate regimes, judged on learning curves only.

Each candidate is a warm-up (SFT steps, lr) and a GRPO setting (lr, prompts x samples, steps). For
each, the script trains on the demo task with the demo's seed, evaluates every checkpoint on the
held-out problems (avg@4, temperature 0.6, top-p 0.95) with the demo's decoder (rlextra's engine, float32,
sampling seed 0; `--backend hf` for HF generate) and records the mean training reward. The
criterion, fixed before any run: held-out avg@4 rises by at least 0.20 over the run and is still
rising at mid-run, with the GRPO part short enough for a 10-minute demo on 2 cores. Linearity
(R^2) and extrapolation results are never computed here, so they cannot steer the choice.

Usage: python bench/bench_regime.py [--candidates NAME ...] [--out bench/results/regime.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (digits, ops, warm-up SFT steps, warm-up lr, warm-up label noise, GRPO lr, prompts/step, samples/prompt, steps)
CANDIDATES = {
    "old-demo": (2, "+", 400, 1e-3, 0.0, 5e-5, 32, 8, 200),
    "short-warmup-lr1e-4": (2, "+", 150, 1e-3, 0.0, 1e-4, 32, 8, 200),
    "warmup-lr1e-4": (2, "+", 400, 1e-3, 0.0, 1e-4, 32, 8, 200),
    "noisy0.5-lr5e-5": (2, "+", 400, 1e-3, 0.5, 5e-5, 32, 8, 200),
    "noisy0.5-lr1e-4": (2, "+", 400, 1e-3, 0.5, 1e-4, 32, 8, 200),
    "noisy0.6-lr1e-4": (2, "+", 400, 1e-3, 0.6, 1e-4, 32, 8, 200),
    "long-noisy0.5-lr1e-4": (2, "+", 1000, 1e-3, 0.5, 1e-4, 32, 8, 200),
    "long-noisy0.5-lr2e-4": (2, "+", 1000, 1e-3, 0.5, 2e-4, 32, 8, 200),
    "long-clean-lr1e-4": (2, "+", 1000, 1e-3, 0.0, 1e-4, 32, 8, 200),
    "long-noisy0.6-lr1e-4": (2, "+", 1000, 1e-3, 0.6, 1e-4, 32, 8, 200),
    "long-noisy0.5-lr1.5e-4": (2, "+", 1000, 1e-3, 0.5, 1.5e-4, 32, 8, 200),
}


def curves(name: str, work: Path, seed: int = 0, save_every: int = 20, backend: str = "rlextra") -> dict:
    from rlextra.decoding import SamplingConfig
    from rlextra.evaluation import evaluate_checkpoint
    from rlextra.rl.models import build_tiny_model
    from rlextra.rl import TrainConfig, train
    from rlextra.tasks import TaskSpec, load_task

    digits, ops, wsteps, wlr, noise, lr, prompts, gens, steps = CANDIDATES[name]
    spec = TaskSpec("arithmetic", ops, digits, 4000, 200, seed)
    model = work / f"model-{digits}{ops}-{wsteps}-{wlr:g}-noise{noise:g}"
    if not model.exists():
        build_tiny_model(model, spec, warmup_steps=wsteps, lr=wlr, label_noise=noise, seed=seed, progress=False)
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    train(TrainConfig(model=str(model), output_dir=str(run), task=spec, max_steps=steps, save_every=save_every,
                      learning_rate=lr, warmup_steps=10, prompts_per_step=prompts, num_generations=gens,
                      max_completion_length=2 * digits + 2, seed=seed, eval_problems=0, progress=False))
    train_s = time.perf_counter() - t0
    task = load_task(spec)
    sampling = SamplingConfig(k=4, temperature=0.6, top_p=0.95, max_new_tokens=2 * digits + 2, batch_size=512, seed=0)
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        acc = evaluate_checkpoint(run / f"checkpoint-{r['step']}", task, sampling=sampling, backend=backend,
                                  device="cpu", dtype="float32", progress=False)["metrics"]["avg@4"]
        rows.append({"step": r["step"], "mean_reward": r["mean_reward"], "avg@4": acc})
    shutil.rmtree(run)
    return {"candidate": dict(zip(["digits", "ops", "warmup_steps", "warmup_lr", "label_noise", "lr", "prompts", "gens",
                                   "steps"],
                                  CANDIDATES[name])), "train_seconds": round(train_s, 1), "decoder": backend,
            "curve": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    ap.add_argument("--backend", default="rlextra", choices=["rlextra", "hf"],
                    help="the decoder that scores every checkpoint (default: rlextra's engine, as the demo uses)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "regime")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "regime.json")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    a.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    for name in a.candidates:
        results[name] = curves(name, a.work, backend=a.backend)
        c = results[name]["curve"]
        print(name, f"{results[name]['train_seconds']}s",
              " ".join(f"{r['step']}:{r['avg@4']:.3f}/{(r['mean_reward'] or 0):.2f}" for r in c), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
