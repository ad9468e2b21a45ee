"""GRPO step time on SmolLM2 with HF generation against `--vllm` (TRL's colocate mode, rlextra's sync), side
by side: the long SmolLM2 regime (8 prompts x 4 samples, 16 new tokens, lr 1e-6, fp32).

Each run trains from the same model with the same seed. Seconds per step = (a whole run of N steps -
a whole run of 1 step) / (N - 1): start-up (vLLM's engine included) and the final checkpoint cancel.
Run it in the vLLM venv.

Usage (repository root):
  OMP_NUM_THREADS=1 .venv-vllm/bin/python bench/bench_vllm_train.py --model experiments/smollm2/work/model \\
      --task experiments/smollm2/long/work/task.jsonl --write-results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
RX = str(HERE.parent / ".venv-vllm" / "bin" / "rlextra")


def run(name: str, a, steps: int, extra: list[str]) -> float:
    """Wall seconds of one whole `rlextra train` of ``steps`` steps (a checkpoint at the end)."""
    out = a.work / f"{name}-{steps}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [RX, "train", "--model", a.model, "-o", str(out), "--task", a.task, "--n-test", "128", "--task-seed", "0",
           "--instruction", "Answer with only the number.", "--steps", str(steps), "--save-every", str(steps),
           "--lr", "1e-6", "--prompts-per-step", "8", "--num-generations", "4", "--max-completion-length", "16",
           "--eval-problems", "0", "--seed", "0", "-q", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return round(time.perf_counter() - t0, 1)


def timing(name: str, a, extra: list[str]) -> dict:
    """Seconds per step: (a run of N steps - a run of 1 step) / (N - 1), so start-up and the final save cancel."""
    one, many = run(name, a, 1, extra), run(name, a, a.steps, extra)
    return {"wall_1_step_s": one, f"wall_{a.steps}_steps_s": many, "step_s": round((many - one) / (a.steps - 1), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "vllm_train")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    hf, vl = timing("hf", a, []), timing("vllm", a, ["--vllm"])
    res = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
           "steps": a.steps, "hf": hf, "vllm": vl,
           "ratio_hf_over_vllm": round(hf["step_s"] / vl["step_s"], 2)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "vllm_train.json").write_text(json.dumps(res, indent=1) + "\n")
    text = (f"\n## GRPO step time on SmolLM2: HF generation against `--vllm` ({res['date']})\n\n"
            f"Machine: {res['machine']}, Python {platform.python_version()}, one torch thread, two single-thread "
            "training jobs beside it (compare the two rows, not other machines). SmolLM2-135M-Instruct fp32, "
            f"8 prompts x 4 samples, 16 new tokens, lr 1e-6, from the same model and seed; seconds per step = "
            f"(a run of {a.steps} steps - a run of 1 step) / {a.steps - 1}, so start-up and the final checkpoint cancel.\n"
            "Command: `OMP_NUM_THREADS=1 .venv-vllm/bin/python bench/bench_vllm_train.py --model "
            "experiments/smollm2/work/model --task experiments/smollm2/long/work/task.jsonl --write-results`\n\n"
            f"| generation | s / step | 1-step run, s | {a.steps}-step run, s |\n|---|---|---|---|\n"
            f"| HF generate (TRL's default) | {hf['step_s']} | {hf['wall_1_step_s']} | {hf[f'wall_{a.steps}_steps_s']} |\n"
            f"| vLLM, colocate (`--vllm`) | {vl['step_s']} | {vl['wall_1_step_s']} | {vl[f'wall_{a.steps}_steps_s']} |\n\n"
            f"HF / vLLM step time: {res['ratio_hf_over_vllm']}x. Curves: `bench/results/vllm_train.json`.\n")
    print(text)
    if a.write_results:
        append_to_results(text)


if __name__ == "__main__":
    main()
