"""The long SmolLM2 run's report: curves of every run evaluated so far, the choice of the learning
rate on GRPO curves alone, and (as the runs land) the comparisons at equal real steps.

Reads work/eval/NAME-STEP.json (written by train_and_eval.sh) and work/runs/NAME/metrics.jsonl;
writes curves.json (small: accuracy and per-problem counts per run and step), accuracy_vs_step.png
and RESULTS.md beside this script. Nothing here trains or evaluates: run it at any time.

The selection criterion (issue text, applied to GRPO curves only, before any linearity or
extrapolation number exists): held-out avg@4 rises by at least 0.15 from step 0 to the end, by at
least 0.05 over the second half, and no 30-step stretch is flat within noise. "Flat within noise"
is ours: a stretch whose gain is below one standard error of that gain, paired over the held-out
problems.

Usage: .venv/bin/python experiments/smollm2/long/report.py
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlextra.metrics import paired_difference  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CONFIG = json.loads((HERE / "config.json").read_text())
K = CONFIG["eval"]["k"]
KEY = f"avg@{K}"
STRETCH = 30  # steps: the criterion's stretch


def load_curves() -> dict[str, dict[int, dict]]:
    """Per run: step -> {acc, n_correct, seconds (eval)}, from the evaluations that exist."""
    runs: dict[str, dict[int, dict]] = {}
    names = sorted(d.name for d in (WORK / "runs").iterdir() if d.is_dir()) if (WORK / "runs").is_dir() else []
    for name in names:
        for f in sorted((WORK / "eval").glob(f"{name}-*.json")):
            m = re.fullmatch(re.escape(name) + r"-(\d+)\.json", f.name)
            if not m:  # an analysis of the run (horizon, beyond), not a checkpoint of it
                continue
            s = json.loads(f.read_text())
            runs.setdefault(name, {})[int(m.group(1))] = {
                "acc": s["metrics"][KEY], "n_correct": [p["n_correct"] for p in s["per_problem"]]}
    return {name: dict(sorted(c.items())) for name, c in runs.items()}


def train_rows(name: str) -> list[dict]:
    log = WORK / "runs" / name / "metrics.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def cpu_hours(name: str) -> tuple[float, float]:
    """Training and evaluation hours of one run from work/commands.log (one thread per job, so wall
    time is CPU time; two jobs shared the two cores)."""
    log = WORK / "commands.log"
    train = ev = 0.0
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.search(r"\((\d+) s\)$", line)
        if not m:
            continue
        if f"train {name} to step" in line:
            train += int(m.group(1))
        elif f"runs/{name}/checkpoint-" in line and "] eval " in line:
            ev += int(m.group(1))
    return train / 3600, ev / 3600


def criterion(curve: dict[int, dict], steps_total: int) -> dict:
    """The selection criterion on one GRPO curve; 'complete' is False until the last step is evaluated."""
    steps = sorted(curve)
    out = {"complete": steps_total in curve, "evaluated_to": steps[-1] if steps else None}
    if not steps or steps[0] != 0:
        return out
    last = steps[-1]
    half = min(steps, key=lambda s: abs(s - last / 2))
    out["rise"] = curve[last]["acc"] - curve[0]["acc"]
    out["second_half"] = curve[last]["acc"] - curve[half]["acc"]
    flats = []
    for s in steps:
        e = s + STRETCH
        if e in curve:
            gain, se = paired_difference(curve[e]["n_correct"], curve[s]["n_correct"], K)
            if gain < se:
                flats.append({"from": s, "to": e, "gain": round(gain, 4), "se": round(se, 4)})
    out["flat_stretches"] = flats
    out["met"] = out["complete"] and out["rise"] >= 0.15 and out["second_half"] >= 0.05 and not flats
    return out


def plot(curves: dict[str, dict[int, dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, c in curves.items():
        xs = sorted(c)
        ax.plot(xs, [c[x]["acc"] for x in xs], "o-", ms=3, lw=1.2, label=name)
    ax.set_xlabel("real optimizer step")
    ax.set_ylabel(f"held-out {KEY} (T={CONFIG['eval']['temperature']}, {CONFIG['task']['n_test']} problems)")
    ax.set_title("SmolLM2-135M-Instruct, mixed arithmetic, 8 prompts x 4 samples per step", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def write() -> None:
    curves = load_curves()
    total = CONFIG["train"]["steps"]
    cands = {f"grpo-lr{lr:.0e}": lr for lr in CONFIG["train"]["candidate_lrs"]}
    verdicts = {name: criterion(curves.get(name, {}), total) for name in cands}
    steps = sorted({s for c in curves.values() for s in c})
    names = list(curves)
    rows = "\n".join(f"| {s} | " + " | ".join(_fmt(curves[n].get(s, {}).get("acc")) for n in names) + " |"
                     for s in steps)
    reward_rows = {n: {r["step"]: r.get("mean_reward") for r in train_rows(n)} for n in names}
    hours = {n: cpu_hours(n) for n in names}
    vlines = []
    for name, v in verdicts.items():
        if v.get("evaluated_to") is None:
            vlines.append(f"| {name} | not evaluated yet | | | | |")
            continue
        flats = ", ".join(f"{f['from']}-{f['to']} ({f['gain']:+.3f} vs SE {f['se']:.3f})"
                          for f in v.get("flat_stretches", [])) or "none"
        state = ("**met**" if v.get("met") else "**missed**") if v["complete"] else f"open (to step {v['evaluated_to']})"
        train_h, eval_h = hours.get(name, (0.0, 0.0))
        vlines.append(f"| {name} | {_fmt(v.get('rise'))} | {_fmt(v.get('second_half'))} | {flats} | {state} | "
                      f"{train_h:.2f} + {eval_h:.2f} |")
    plot(curves, HERE / "accuracy_vs_step.png")
    (HERE / "curves.json").write_text(json.dumps({
        "metric": KEY, "n_test": CONFIG["task"]["n_test"],
        "runs": {n: {str(s): {"acc": round(v["acc"], 6), "n_correct": v["n_correct"]} for s, v in c.items()}
                 for n, c in curves.items()},
        "train_reward": {n: {str(s): r for s, r in rr.items()} for n, rr in reward_rows.items()},
        "selection": verdicts}, separators=(",", ":")) + "\n")
    t = CONFIG["task"]
    text = f"""# The paper's regime on a real model: a long, slow SmolLM2 run (CPU)

Status ({time.strftime('%Y-%m-%d')}): **in progress.** This file is rewritten by
`experiments/smollm2/long/report.py` from the evaluations that exist; the runs are resumable
background jobs (`train_and_eval.sh`), run in parts on a 2-core CPU (x86_64, 1 torch thread per job,
two jobs sharing the cores).

## Setup

- Model: SmolLM2-135M-Instruct (`rlextra convert-gguf --smollm2`: the Q4_1 GGUF dequantized to
  float32).
- Task (`config.json`, problems written once with seed {CONFIG['seed']}): chat prompts "What is a + b?" with
  a, b in {t['sum_range']} and "What is a * b?" with a, b in {t['product_ranges'][0]}, plus
  "{t['instruction']}"; {t['n_problems']} distinct problems, {t['n_problems'] - t['n_test']} for training and
  {t['n_test']} held out; graded by math-verify under rlextra's operation rule.
- GRPO (TRL 1.16): {CONFIG['train']['prompts_per_step']} prompts x {CONFIG['train']['num_generations']} samples
  per step, temperature 1.0, constant lr, no KL, no lr warm-up, completions up to
  {CONFIG['train']['max_completion_length']} tokens, checkpoint every {CONFIG['train']['save_every']} steps (Adam's
  state kept only in the newest), trained in segments of 30 steps (each a resume of the last).
- Evaluation: every checkpoint, {t['n_test']} held-out problems x {K} samples, temperature
  {CONFIG['eval']['temperature']}, top-p {CONFIG['eval']['top_p']}, up to {CONFIG['eval']['max_new_tokens']} new tokens,
  rlextra's engine, sampling seed {CONFIG['eval']['seed']}: every model through one decoder and seed.
- The batch: 32 rollouts per step is what this CPU allows (about 35-50 s per step). It is 4x below
  the tiny-model demo's batch at which jumps lost or tied, and far below the paper's (its
  DeepSeek-R1-Distill runs use 128 prompts x 8 or more). On the v3 account (gradient noise sets
  linearity), this is the regime least favourable to extrapolation; a result here says little about
  the paper's 1.5B setting at its batch.

## 1. Choosing the learning rate on GRPO curves only

Candidates: the mixed task at lr {', '.join(f'{lr:g}' for lr in CONFIG['train']['candidate_lrs'])} (the paper's lr is
1e-6), {total} steps each. The criterion (see the docstring of `report.py`; "flat within noise" is
ours: gain below one paired standard error) is checked on the GRPO curves alone; no linearity or
extrapolation number was computed before the choice.

| candidate | rise, step 0 to last | rise over the second half | flat 30-step stretches | criterion | CPU hours, training + evaluation |
|---|---|---|---|---|---|
""" + "\n".join(vlines) + f"""

![held-out accuracy](accuracy_vs_step.png)

Held-out {KEY} per evaluated checkpoint:

| step | """ + " | ".join(names) + """ |
|""" + "---|" * (len(names) + 1) + "\n" + rows + """

Mean training reward (T=1.0, per logged step, averaged over each 10-step interval):

| step | """ + " | ".join(names) + """ |
|""" + "---|" * (len(names) + 1) + "\n" + "\n".join(
        f"| {s} | " + " | ".join(_fmt(reward_rows[n].get(s)) for n in names) + " |"
        for s in sorted({s for rr in reward_rows.values() for s in rr if s})) + """

## What runs next (at equal real steps, after the choice)

`queue.sh A LR` and `queue.sh B LR`, one lane per core: the paper's RL-Extra at 20,20 and at 20,100
(two-point, optimizer reset), GRPO at the lr raised by the jump's factor (x2, x6: the baseline the
paper never ran), the control 20,0 (the optimizer reset alone), the paper's data order
(`--rl-extra-replay`: every cycle trains on GRPO's first 20 batches again) at 20,20 and 20,100, and
rlextra's adaptive jump (`--rl-extra-auto`). Then `analyze.sh NAME` on the chosen GRPO run: weights
(the paper's figure, full coverage, each half), token log-probs, activations, the backtest, the
in-flight figures, the horizon over training and extrapolation past the end.

## Commands

`bash experiments/smollm2/long/train_and_eval.sh NAME LR [train options]` (after
`bash experiments/smollm2/run.sh`'s setup and `rlextra convert-gguf --smollm2 -o
experiments/smollm2/work/model`); each line of `work/commands.log` records one command and its wall
time.
"""
    (HERE / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    write()
