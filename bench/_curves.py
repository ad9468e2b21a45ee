"""The one way the RL-Extra benchmarks score a run: every checkpoint in metrics.jsonl, held-out avg@4
(T=0.6, top-p 0.95, sampling seed 0) through the demo's decoder (rlextra's engine, float32)."""

from __future__ import annotations

import json
from pathlib import Path


def score_run(out: Path, spec, demo, *, per_problem: bool = False) -> list[dict]:
    """Rows of step, effective step, training seconds and held-out avg@4 (and per-problem counts)."""
    from rlextra.decoding import SamplingConfig
    from rlextra.evaluation import evaluate_checkpoint
    from rlextra.tasks import load_task

    task = load_task(spec)
    sampling = SamplingConfig(k=4, temperature=0.6, top_p=0.95, max_new_tokens=demo.max_tokens(), batch_size=512,
                              seed=0)
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        m = evaluate_checkpoint(out / f"checkpoint-{r['step']}", task, sampling=sampling, backend="rlextra",
                                device="cpu", dtype="float32", progress=False)
        row = {"step": r["step"], "effective_step": r.get("effective_step", r["step"]),
               "seconds": r["train_seconds"], "acc": round(m["metrics"]["avg@4"], 4)}
        if per_problem:  # for paired standard errors
            row["n_correct"] = [p["n_correct"] for p in m["per_problem"]]
        rows.append(row)
    return rows
