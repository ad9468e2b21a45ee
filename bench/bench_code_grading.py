"""Grading time per HumanEval problem: the check apart from the completion (rlextra.tasks.calls,
two sandboxed processes and a call relay) against the previous design (one sandboxed program: the
completion, the check, then a pass token printed), side by side in one run.

Every one of the 164 canonical solutions is graded one at a time (one worker), the two designs
interleaved, ``--repeats`` times; medians of the per-pass totals. Results go to
bench/results/code_grading.json (machine, date, command).

Usage: python bench/bench_code_grading.py [--repeats 3] [--limit 164]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def previous_design(spec: dict, completion: str, timeout: float = 10.0) -> bool:
    """The design before 2026-12-06, kept here for the comparison only (it can be forged)."""
    from rlextra.code_tasks import PREAMBLE, completion_code
    from rlextra.sandbox import run_program

    token = uuid.uuid4().hex
    source = (PREAMBLE + spec["prompt"] + completion_code(completion) + "\n\n" + spec["test"] + "\n\n"
              + f"check({spec['entry_point']})\nprint({token!r})\n")
    res = run_program(source, timeout=timeout)
    return res.status == "ok" and res.stdout.rstrip("\n").rsplit("\n", 1)[-1] == token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "code_grading.json")
    a = ap.parse_args()
    from rlextra.code_tasks import grade_code, humaneval_rows
    from rlextra.sandbox import run_program

    rows = humaneval_rows()[: a.limit]
    answers = [json.dumps({k: r[k] for k in ("task_id", "prompt", "test", "entry_point")}) for r in rows]
    run_program("pass")  # warm the interpreter's files
    times: dict[str, list[float]] = {"previous": [], "apart": []}
    passed: dict[str, int] = {}
    for _ in range(a.repeats):
        for name in ("previous", "apart"):
            t0 = time.perf_counter()
            if name == "previous":
                ok = [previous_design(json.loads(ans), r["canonical_solution"]) for r, ans in zip(rows, answers)]
            else:
                ok = [bool(grade_code(r["canonical_solution"], ans)) for r, ans in zip(rows, answers)]
            times[name].append(time.perf_counter() - t0)
            passed[name] = sum(ok)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"date": str(datetime.date.today()), "command": " ".join(["python", *sys.argv]),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), Python {platform.python_version()}",
              "problems": len(rows), "repeats": a.repeats, "seconds": times, "passed": passed,
              "per_problem_ms": {k: round(1000 * v / len(rows), 1) for k, v in med.items()},
              "ratio_apart_over_previous": round(med["apart"] / med["previous"], 2)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("passed", "per_problem_ms", "ratio_apart_over_previous")}))


if __name__ == "__main__":
    main()
