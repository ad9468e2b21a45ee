"""Does the payoff of a jump grow with the batch? GRPO against RL-Extra at several rollouts per step.

The v3 paper proposes that the noise of a run (its token-level signal-to-noise ratio) sets how
linear it is. This sweep runs the demo's warmed-up tiny model at one learning rate with several
batch sizes (prompts x samples per step) and, at each, the same number of real steps of:

  grpo        plain GRPO
  grpo-lrX    GRPO with the learning rate raised by the jump's factor (m + n) / m: on a straight
              path, a jump of n after m steps buys what a larger learning rate would (the baseline
              the paper never runs)
  paper       the paper's RL-Extra: two-point jump at m, n, optimizer state reset
  auto        rlextra's adaptive RL-Extra (--rl-extra-auto): the in-flight monitor picks n per cycle
  auto-safe   the same, with safe mode checking each jump
  lr-auto     GRPO under --lr-auto (rlextra's AdaptiveLR: the lr headroom sets the lr multiplier)
  prodigy     GRPO with Prodigy (prodigyopt, lr 1.0 as its authors recommend), the lr-free optimizer

Every run records the linearity monitor (``linearity.jsonl``: window R^2 and the in-flight weight
error), and every checkpoint (every 10 real steps) is evaluated on the 200 held-out problems (avg@4,
T=0.6, top-p 0.95, fixed seed) with the demo's decoder. Finished runs are kept in the JSON and a run
interrupted mid-way resumes from its last checkpoint, so the sweep can be stopped and restarted.

Usage: python bench/bench_batch_sweep.py [--batches 32x8,128x16,512x16] [--steps 100] [--seeds 1]
       [--lr 2e-5] [--variants grpo,grpo-lr2,paper,auto,auto-safe] [--threshold T] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _curves import score_run  # noqa: E402
M, N = 20, 20  # the paper's cycle for the fixed jump, and auto's largest n (--rl-extra M,N)


def variant_options(name: str, lr: float, threshold: float | None) -> dict:
    """TrainConfig fields of one variant (beside the shared regime); ``NAME:MxN`` sets the cycle."""
    name, _, cycle = name.partition(":")
    m, n = (int(x) for x in cycle.split("x")) if cycle else (M, N)
    if name == "grpo":
        return {}
    if name.startswith("grpo-lr"):
        return {"learning_rate": lr * float(name[len("grpo-lr"):])}
    if name == "lr-auto":
        return {"lr_auto": True}
    if name == "prodigy":
        return {"optimizer": "prodigy", "learning_rate": 1.0}
    if name == "paper":
        return {"rl_extra": (m, n), "rl_extra_optimizer": "reset", "rl_extra_method": "two-point"}
    if name in ("auto", "auto-safe"):
        opts = {"rl_extra": (m, n), "rl_extra_auto": True, "rl_extra_optimizer": "reset",
                "rl_extra_method": "two-point", "rl_extra_safe": name == "auto-safe"}
        if threshold is not None:
            opts["rl_extra_auto_threshold"] = threshold
        return opts
    raise SystemExit(f"unknown variant {name!r}")


def run(model_dir: Path, out: Path, seed: int, steps: int, demo, batch: tuple[int, int], lr: float,
        monitor_every: int, **options) -> dict:
    """Train (resuming a partial run), then evaluate every checkpoint; curves and monitor rows."""
    from rlextra.rl import TrainConfig, train

    spec = demo.task_spec()
    fields = dict(model=str(model_dir), output_dir=str(out), task=spec, max_steps=steps, save_every=10,
                  learning_rate=lr, warmup_steps=demo.lr_warmup_steps, prompts_per_step=batch[0],
                  num_generations=batch[1], max_completion_length=demo.max_tokens(), seed=seed, eval_problems=0,
                  progress=False, monitor_every=monitor_every)
    fields.update(options)
    train(TrainConfig(**fields))
    rows = score_run(out, spec, demo, per_problem=True)
    jumps = out / "rl_extra.jsonl"
    monitor = out / "linearity.jsonl"
    lr_auto = out / "lr_auto.jsonl"
    history = _log_history(out)
    result = {"curve": rows, "train_log": history,
              "jumps": [json.loads(x) for x in jumps.read_text().splitlines()] if jumps.exists() else [],
              "monitor": [json.loads(x) for x in monitor.read_text().splitlines()] if monitor.exists() else [],
              "lr_auto": [json.loads(x) for x in lr_auto.read_text().splitlines()] if lr_auto.exists() else []}
    shutil.rmtree(out)  # checkpoints are not needed once evaluated
    return result


def _log_history(out: Path) -> list[dict]:
    """Per real step: mean training reward and the lr the optimizer ran at (the trainer's own log)."""
    from rlextra.rl.grpo import last_checkpoint

    ckpt = last_checkpoint(out)
    if ckpt is None:
        return []
    log = json.loads((ckpt / "trainer_state.json").read_text()).get("log_history", [])
    return [{"step": r["step"], "reward": round(r["reward"], 4), "lr": r.get("learning_rate")}
            for r in log if "reward" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="32x8,128x16,512x16", help="PROMPTSxSAMPLES per step, comma-separated")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--variants", default="grpo,grpo-lr2,paper,auto,auto-safe",
                    help="comma-separated; VARIANT:MxN sets the cycle (default 20x20), e.g. paper:20x100")
    ap.add_argument("--threshold", type=float, default=None, help="--rl-extra-auto-threshold (default: rlextra's)")
    ap.add_argument("--monitor-every", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix of the run keys (e.g. a threshold being selected)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "batch_sweep")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batch_sweep.json")
    a = ap.parse_args()
    import torch

    from rlextra.demo import DemoConfig
    from rlextra.rl.models import build_tiny_model

    torch.set_num_threads(1)
    demo = DemoConfig()
    model_dir = HERE / "_work" / "rl_extra" / f"model-{demo.warmup_steps}-{demo.warmup_lr:g}-noise{demo.warmup_label_noise:g}"
    if not model_dir.exists():
        build_tiny_model(model_dir, demo.task_spec(), warmup_steps=demo.warmup_steps, lr=demo.warmup_lr,
                         label_noise=demo.warmup_label_noise, seed=0, progress=False)
    for batch_text in a.batches.split(","):
        batch = tuple(int(x) for x in batch_text.split("x"))
        for seed in (int(s) for s in a.seeds.split(",")):
            for variant in a.variants.split(","):
                key = f"{batch_text}-{variant.replace(':', '-')}{a.tag}-seed{seed}"
                state = json.loads(a.out.read_text()) if a.out.exists() else {"runs": {}}
                if key not in state["runs"]:  # resumable: finished runs are kept in the JSON
                    opts = variant_options(variant, a.lr, a.threshold)
                    lr = opts.pop("learning_rate", a.lr)
                    res = run(model_dir, a.work / key, seed, a.steps, demo, batch, lr, a.monitor_every, **opts)
                    base, _, cycle = variant.partition(":")
                    res["cycle"] = [int(x) for x in cycle.split("x")] if cycle else [M, N]
                    res.update(batch=list(batch), seed=seed, variant=base, lr=lr, steps=a.steps,
                               threshold=a.threshold, date=str(datetime.date.today()),
                               machine=f"{os.cpu_count()} CPU cores ({platform.machine()}), Python "
                                       f"{platform.python_version()}, 1 torch thread",
                               command=" ".join(["python", *sys.argv]))
                    a.out.parent.mkdir(parents=True, exist_ok=True)
                    with open(a.out.with_suffix(".lock"), "w") as lock:  # two sweeps may share the file
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        state = json.loads(a.out.read_text()) if a.out.exists() else {"runs": {}}
                        state["runs"][key] = res
                        tmp = a.out.with_suffix(".tmp")
                        tmp.write_text(json.dumps(state, indent=1) + "\n")
                        tmp.replace(a.out)
                r = state["runs"][key]
                print(key, [(x["step"], x["acc"]) for x in r["curve"]], flush=True)


if __name__ == "__main__":
    main()
