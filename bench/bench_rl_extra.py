"""GRPO against RL-Extra variants on the demo's regime, several seeds, equal hyperparameters.

Every run starts from the demo's warmed-up tiny model and uses the demo's GRPO settings for the
same number of real optimizer steps, checkpointing every 10; every checkpoint is evaluated on the
200 held-out problems (avg@4, temperature 0.6, top-p 0.95, fixed seed) with the demo's decoder
(rlextra's engine, float32).

Variants (``rlextra train --rl-extra M,N`` plus):
  paper   two-point jump, optimizer state reset after each jump (the paper's procedure)
  keep    two-point jump, Adam's moments kept across jumps (rlextra's option)
  lsq     least-squares jump over 3 snapshots of the cycle, reset (rlextra's option)
  low-rank   rank-1 jump over 3 snapshots of the cycle, reset (rlextra's option)
and, on the reported seeds, the chosen variant in safe mode (``--rl-extra-safe``).

Selection: m, n and the variant are chosen on --select-seed only (first to reach GRPO's final
accuracy in the fewest real steps, then the higher final accuracy); the reported seeds never take
part in the choice. Reported per seed: real steps and training seconds to first reach GRPO's final
accuracy (same seed), accuracy at equal real steps, and the speed-up (GRPO's steps / the variant's).

Usage: python bench/bench_rl_extra.py [--steps 200] [--seeds 1,2,3] [--select-seed 100]
       [--candidates paper:10,10 keep:20,20 ...] [--baselines-only] [--out FILE] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _curves import score_run  # noqa: E402
VARIANTS = {
    "paper": dict(rl_extra_optimizer="reset", rl_extra_method="two-point"),
    "keep": dict(rl_extra_optimizer="keep", rl_extra_method="two-point"),
    "lsq": dict(rl_extra_optimizer="reset", rl_extra_method="lsq", rl_extra_snapshots=3),
    "low-rank": dict(rl_extra_optimizer="reset", rl_extra_method="low-rank", rl_extra_snapshots=3),
}


def run(model_dir: Path, out: Path, seed: int, steps: int, demo, rl_extra=None, **extra) -> list[dict]:
    """Train, then evaluate every checkpoint; rows of step, effective step, seconds, accuracy."""
    from rlextra.rl import TrainConfig, train

    shutil.rmtree(out, ignore_errors=True)
    spec = demo.task_spec()
    train(TrainConfig(model=str(model_dir), output_dir=str(out), task=spec, max_steps=steps, save_every=10,
                      learning_rate=demo.learning_rate, warmup_steps=demo.lr_warmup_steps,
                      prompts_per_step=demo.prompts_per_step, num_generations=demo.num_generations,
                      max_completion_length=demo.max_tokens(), seed=seed, eval_problems=0, progress=False,
                      rl_extra=rl_extra, **extra))
    rows = score_run(out, spec, demo)
    jumps = out / "rl_extra.jsonl"
    decisions = [json.loads(x).get("decision") for x in jumps.read_text().splitlines()] if jumps.exists() else []
    shutil.rmtree(out)  # checkpoints are large and not needed after evaluation
    if decisions and decisions[0] is not None:
        rows[-1]["safe_decisions"] = decisions
    return rows


def first_reach(rows: list[dict], target: float) -> dict | None:
    return next((r for r in rows if r["acc"] >= target), None)


def compare(grpo: list[dict], extra: list[dict]) -> dict:
    target = grpo[-1]["acc"]
    g, e = first_reach(grpo, target), first_reach(extra, target)
    return {"target": target, "grpo_steps": g["step"], "grpo_seconds": g["seconds"],
            "extra_steps": e["step"] if e else None, "extra_seconds": e["seconds"] if e else None,
            "speedup": g["step"] / e["step"] if e and e["step"] else None,
            "grpo_final": grpo[-1]["acc"], "extra_final": extra[-1]["acc"],
            "gap_at_equal_steps": round(extra[-1]["acc"] - grpo[-1]["acc"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--select-seed", type=int, default=100)
    ap.add_argument("--candidates", nargs="+", default=[f"{v}:{c}" for c in ("10,10", "20,20") for v in VARIANTS],
                    help="VARIANT:M,N pairs tried on the selection seed")
    ap.add_argument("--baselines-only", action="store_true",
                    help="only the GRPO runs of the reported seeds (another process can run them meanwhile)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "rl_extra")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rl_extra.json")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    import torch

    from rlextra.demo import DemoConfig
    from rlextra.rl.models import build_tiny_model

    torch.set_num_threads(1)
    demo = DemoConfig()
    model_dir = a.work / f"model-{demo.warmup_steps}-{demo.warmup_lr:g}-noise{demo.warmup_label_noise:g}"
    if not model_dir.exists():
        build_tiny_model(model_dir, demo.task_spec(), warmup_steps=demo.warmup_steps, lr=demo.warmup_lr,
                         label_noise=demo.warmup_label_noise, seed=0, progress=False)
    state = json.loads(a.out.read_text()) if a.out.exists() else {}
    curves = state.setdefault("curves", {})

    def one(key, seed, rl_extra=None, **extra):
        if key not in curves:  # resumable: finished runs are kept in the JSON
            curves[key] = run(model_dir, a.work / key, seed, a.steps, demo, rl_extra, **extra)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(state, indent=1) + "\n")
        print(key, [(r["step"], r["acc"]) for r in curves[key]], flush=True)
        return curves[key]

    seeds = [int(s) for s in a.seeds.split(",")]
    if a.baselines_only:
        for seed in seeds:
            one(f"grpo-seed{seed}", seed)
        return
    sel_grpo = one(f"grpo-seed{a.select_seed}", a.select_seed)
    choice, best, selection = None, None, []
    for cand in a.candidates:
        v, cyc = cand.split(":")
        m, n = (int(x) for x in cyc.split(","))
        c = compare(sel_grpo, one(f"{v}-{m}x{n}-seed{a.select_seed}", a.select_seed, (m, n), **VARIANTS[v]))
        selection.append({"variant": v, "m": m, "n": n, **c})
        score = (c["extra_steps"] is not None, -(c["extra_steps"] or 0), c["extra_final"])
        if best is None or score > best:
            choice, best = (v, m, n), score
    v, m, n = choice
    results = []
    for seed in seeds:
        grpo = one(f"grpo-seed{seed}", seed)
        row = {"seed": seed, "variant": compare(grpo, one(f"{v}-{m}x{n}-seed{seed}", seed, (m, n), **VARIANTS[v])),
               "safe": compare(grpo, one(f"{v}-{m}x{n}-safe-seed{seed}", seed, (m, n), rl_extra_safe=True,
                                         **VARIANTS[v]))}
        results.append(row)
    regime = {k: getattr(demo, k) for k in ("digits", "ops", "warmup_steps", "warmup_lr", "warmup_label_noise",
                                            "learning_rate", "lr_warmup_steps", "prompts_per_step", "num_generations")}
    state.update(choice={"variant": v, "m": m, "n": n}, selection=selection, results=results, regime=regime,
                 decoder="rlextra engine, float32, sampling seed 0",
                 machine=f"{os.cpu_count()} CPU cores ({platform.machine()}), Python {platform.python_version()}",
                 date=str(datetime.date.today()), command=" ".join(["python", *sys.argv]))
    a.out.write_text(json.dumps(state, indent=1) + "\n")
    text = report(state, a)
    print(text)
    if a.write_results:
        append_to_results(text + "\n")


def report(state: dict, a) -> str:
    c = state["choice"]
    res = state["results"]

    def steps(r):
        return f"{r['extra_steps']} / {r['extra_seconds']:.0f}" if r["extra_steps"] is not None else "not reached / -"

    best_ok = all(r["variant"]["speedup"] and r["variant"]["extra_steps"] <= 0.5 * r["variant"]["grpo_steps"]
                  for r in res)
    safe_ok = all(r["safe"]["gap_at_equal_steps"] >= -0.02 for r in res)
    lines = [
        f"## RL-Extra variants against GRPO on the demo regime ({state['date']})",
        "",
        f"Machine: {state['machine']}, 1 torch thread, other jobs sharing the cores (seconds are indicative). "
        f"Demo regime, {a.steps} real steps, checkpoints every 10, avg@4 (T=0.6, top-p 0.95) on 200 held-out "
        f"problems. Chosen on seed {a.select_seed}: variant **{c['variant']}**, m, n = {c['m']}, {c['n']} "
        f"(among {', '.join(a.candidates)}).",
        f"Command: `OMP_NUM_THREADS=1 {state['command']}`; curves: `bench/results/{a.out.name}`.",
        "",
        "Selection seed:",
        "",
        "| variant | m,n | steps to GRPO's final | final avg@4 (GRPO " + f"{state['selection'][0]['grpo_final']:.3f}) |",
        "|---|---|---|---|",
        *[f"| {s['variant']} | {s['m']},{s['n']} | {s['extra_steps'] if s['extra_steps'] is not None else 'not reached'} "
          f"(GRPO {s['grpo_steps']}) | {s['extra_final']:.3f} |" for s in state["selection"]],
        "",
        "| seed | GRPO final avg@4 (target) | GRPO steps / s to target | variant steps / s | speed-up | "
        "variant avg@4 at equal steps | safe mode steps / s | safe mode avg@4 at equal steps |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['seed']} | {r['variant']['target']:.3f} | {r['variant']['grpo_steps']} / "
          f"{r['variant']['grpo_seconds']:.0f} | {steps(r['variant'])} | "
          f"{'%.2fx' % r['variant']['speedup'] if r['variant']['speedup'] else '-'} | "
          f"{r['variant']['extra_final']:.3f} | {steps(r['safe'])} | {r['safe']['extra_final']:.3f} |" for r in res],
        "",
        f"Target 1 (the best variant reaches GRPO's final accuracy in <= 0.5x GRPO's real steps on every seed): "
        f"**{'met' if best_ok else 'missed'}**.",
        f"Target 2 (safe mode never ends more than 0.02 below GRPO at equal real steps): "
        f"**{'met' if safe_ok else 'missed'}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
