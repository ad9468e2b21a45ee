"""Side-by-side benchmark: extrapolation methods (low-rank against two-point) and the backtest's wall
time, on the bf16 SmolLM2-135M-architecture series of bench_checkpoints.py.

Every case runs in its own fresh process, one after another, and reports wall time and peak RSS
minus the RSS right after its imports (as bench_checkpoints.py). Cases:
- two_point: first and last checkpoints, alpha 1.5 (the baseline of the ratios);
- rank1_k2: low-rank (r = 1) on the same two checkpoints;
- rank1_all / lsq_all: low-rank (r = 1) and lsq on all checkpoints, to the same target step;
- backtest: every method on all checkpoints (two-point over every pair), weight errors only.

Usage: python bench/bench_methods.py [--checkpoints 8] [--work bench/_work] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_checkpoints import ensure_series, status_kb  # noqa: E402

CASES = ["two_point", "rank1_k2", "rank1_all", "lsq_all", "backtest"]


def worker(case: str, work: Path) -> dict:
    import torch
    import transformers  # noqa: F401

    import rlextra.extrapolate  # noqa: F401
    from rlextra.extrapolate.backtest import backtest
    from rlextra.extrapolate.backtest_plots import plot_backtest_error  # noqa: F401  (matplotlib import)

    torch.set_num_threads(1)
    series = sorted((work / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    b, s = int(series[0].name.split("-")[1]), int(series[-1].name.split("-")[1])
    target = b + 1.5 * (s - b)
    base_rss = status_kb("VmRSS")
    out = work / f"out-{case}"
    shutil.rmtree(out, ignore_errors=True)
    info: dict = {}
    t0 = time.perf_counter()
    if case == "backtest":
        res = backtest(series, out, progress=False)
        info = {"rows": len(res["rows"]),
                "recommendation": {m: r["verdict"] for m, r in res["recommendation"].items()},
                "median_error": {m: round(r["median_weight_error"], 3) for m, r in res["recommendation"].items()}}
    else:
        pair = [series[0], series[-1]]
        given, method = {"two_point": (pair, "two-point"), "rank1_k2": (pair, "low-rank"),
                         "rank1_all": (series, "low-rank"), "lsq_all": (series, "lsq")}[case]
        rlextra.extrapolate.extrapolate_weights(given, out, to_step=target, method=method, progress=False)
        info = {"checkpoints": len(given)}
    wall = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    shutil.rmtree(out, ignore_errors=True)
    return {"case": case, "wall_s": wall, "mem_mb": (peak - base_rss) / 1024, **info}


def run_worker(case: str, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, __file__, "--worker", case, "--work", str(work)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"case": case, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def render(res: dict, a) -> str:
    def ratio(x, key):
        try:
            return f"{res[x][key] / res['two_point'][key]:.2f}"
        except (KeyError, ZeroDivisionError, TypeError):
            return "n/a"

    def row(c):
        r = res[c]
        if "error" in r:
            return f"| {c} | failed: {r['error'][:120]} | | | |"
        note = f"{r['rows']} rows; {r['recommendation']}; median error {r['median_error']}" if c == "backtest" \
            else f"{r['checkpoints']} checkpoints"
        return f"| {c} | {r['wall_s']:.2f} | {r['mem_mb']:.0f} | {ratio(c, 'wall_s')} / {ratio(c, 'mem_mb')} | {note} |"

    cpu = platform.processor() or platform.machine()
    return "\n".join([
        f"## Extrapolation methods: low-rank against two-point, and the backtest ({datetime.date.today()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, 1 torch/BLAS thread, "
        "shared with other jobs. "
        f"Series: {a.checkpoints} bf16 checkpoints of the SmolLM2-135M architecture (134.5M params; full-rank "
        "planted drift plus noise, from bench_checkpoints.py), page cache warm. Target: alpha 1.5 of (first, last).",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_methods.py --checkpoints {a.checkpoints} "
        "--write-results`",
        "",
        "| case | wall s | peak RSS - post-import RSS, MB | time / memory vs two_point | notes |",
        "|---|---|---|---|---|",
        *[row(c) for c in res],
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--worker")
    ap.add_argument("--write-results", action="store_true", help="append a section to bench/RESULTS.md")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.work)))
        return
    ensure_series(a.work, a.checkpoints)
    results = {}
    for case in a.cases.split(","):
        print(f"running {case} ...", flush=True)
        results[case] = run_worker(case, a.work)
        print("  ", results[case], flush=True)
    table = render(results, a)
    print(table)
    if a.write_results:
        append_to_results(table + "\n")


if __name__ == "__main__":
    main()
