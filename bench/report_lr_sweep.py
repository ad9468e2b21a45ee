"""Which learning rate? The sweep's best multiplier per cell, the headroom's prediction, and lr-auto.

The ground truth is a learning-rate sweep (GRPO at the base lr times c, every other setting equal),
run by bench_batch_sweep.py (variants ``grpo`` and ``grpo-lrC``) into its JSON files. This report
reads them and writes the markdown of bench/RESULTS.md's "Which learning rate?" section and a plot.

Fixed before any sweep result of these cells was read (the criterion, the hit, the collapse):

* **c*** of a cell: the multiplier whose run has the highest mean held-out avg@4 over its evaluated
  checkpoints after step 0 (every 10 real steps); a tie goes to the smaller multiplier. The
  multiplier best at the last step is reported beside it.
* **prediction:** ``rlextra.extrapolate.headroom.predict_multiplier`` on the base-lr (x1) run's
  monitor rows at real steps <= 20, nothing else. A **hit** is a prediction within a factor of 2 of
  c* (0.5 <= predicted / c* <= 2).
* **collapse:** a run collapses when any evaluated checkpoint falls below half its step-0 accuracy.

What was known when the rule and the criterion were written (said, so a reader can weigh it): GRPO
at lr x2 beat x1 on every cell at lr 2e-5 (on record since 2026-11-29), x6 collapsed at lr 1e-4,
and one unrecorded probe at 32 x 8 seed 1 had x4 ending highest of x4, x8, x16 by its final step.

Usage: python bench/report_lr_sweep.py [--plot bench/results/lr_sweep.png] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

# (json file, batch, seed, base lr, real steps): the cells of the sweep
CELLS = [
    ("batch_sweep.json", "32x8", 1, 2e-5, 100),
    ("batch_sweep.json", "32x8", 2, 2e-5, 100),
    ("batch_sweep.json", "128x16", 1, 2e-5, 100),
    ("batch_sweep.json", "128x16", 2, 2e-5, 100),
    ("batch_sweep.json", "512x16", 1, 2e-5, 60),
    ("rl_extra_auto.json", "32x8", 1, 1e-4, 200),
    ("rl_extra_auto.json", "32x8", 2, 1e-4, 200),
]
COLLAPSE_FRACTION = 0.5


def multiplier_of(variant: str) -> float | None:
    """grpo -> 1, grpo-lr4 -> 4, grpo-lr0.25 -> 0.25; other variants -> None."""
    if variant == "grpo":
        return 1.0
    if variant.startswith("grpo-lr"):
        return float(variant[len("grpo-lr"):])
    return None


def mean_accuracy(curve: list[dict]) -> float:
    """The criterion's score: mean avg@4 over the evaluated checkpoints after step 0."""
    accs = [r["acc"] for r in curve if r["step"] > 0]
    return sum(accs) / len(accs)


def best_multiplier(sweep: dict[float, dict]) -> float:
    """c*: the highest mean_accuracy; ties to the smaller multiplier."""
    return max(sorted(sweep), key=lambda c: (mean_accuracy(sweep[c]["curve"]), -c))


def best_final(sweep: dict[float, dict]) -> float:
    return max(sorted(sweep), key=lambda c: (sweep[c]["curve"][-1]["acc"], -c))


def collapsed(curve: list[dict]) -> bool:
    start = curve[0]["acc"]
    return any(r["acc"] < COLLAPSE_FRACTION * start for r in curve[1:])


def hit(predicted: float, actual: float) -> bool:
    return 0.5 <= predicted / actual <= 2.0


def cell_runs(state: dict, batch: str, seed: int) -> dict[str, dict]:
    """Every run of one cell by variant (the keys bench_batch_sweep.py writes: BATCH-VARIANT-seedS)."""
    out = {}
    suffix = f"-seed{seed}"
    for key, run in state["runs"].items():
        if key.startswith(batch + "-") and key.endswith(suffix) and "-t0." not in key:
            out[key[len(batch) + 1:-len(suffix)]] = run
    return out
