"""verl FSDP shards read in place against the same weights as safetensors: peak memory and wall time
of whole `rlextra analyze weights` processes, side by side in one run.

The series: a Llama-shaped model trained a few AdamW steps under FSDP2 on CPU/gloo at 2 and 4 ranks,
saved as verl's checkpoint manager saves (tests/verl_fsdp_worker.py, the test suite's verl
stand-in), with the gathered fp32 weights beside it as safetensors: the same numbers three ways.
Each analysis runs as its own process under /usr/bin/time (peak RSS, wall seconds); the reports
must agree byte for byte (weights.csv), or the bench fails.

Usage (repository root):
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fsdp_shards.py --write-results
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
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = ROOT / "tests" / "verl_fsdp_worker.py"
STEPS = (2, 4, 6, 8)


def produce(out: Path, world: int, sizes: str) -> None:
    """Shards of FSDP2 at ``world`` ranks under out/run, gathered weights under out/reference."""
    if (out / "run" / "latest_checkpointed_iteration.txt").is_file():
        return
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), str(ROOT / "src")])}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
                    str(WORKER), str(out), "2", ",".join(map(str, STEPS)), sizes], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def measure(args: list[str], out: Path) -> dict:
    """One whole process: peak RSS (MB) and wall seconds from /usr/bin/time."""
    shutil.rmtree(out, ignore_errors=True)
    stats = out.with_suffix(".time")
    cmd = ["/usr/bin/time", "-f", "%M %e", "-o", str(stats), str(ROOT / ".venv" / "bin" / "rlextra"),
           "analyze", "weights", *args, "-o", str(out), "--no-plots", "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    kb, wall = stats.read_text().split()[-2:]
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "wall_s": float(wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "fsdp_shards")
    ap.add_argument("--sizes", default="768,12,2048", help="hidden,layers,intermediate of the model")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each analysis; the median is kept")
    ap.add_argument("--write-results", action="store_true", help="append a section to bench/RESULTS.md")
    a = ap.parse_args()
    rows = {}
    for world in (2, 4):
        produce(a.work / f"w{world}", world, a.sizes)
    ref = [f"{s}={a.work / 'w2' / 'reference' / f'step{s}'}" for s in STEPS]
    cases = {"safetensors (gathered fp32)": ref, "FSDP2 shards, 2 ranks": [str(a.work / "w2" / "run")],
             "FSDP2 shards, 4 ranks": [str(a.work / "w4" / "run")]}
    for rep in range(a.repeats):  # interleaved, so that load on the machine falls on all alike
        for i, (name, args) in enumerate(cases.items()):
            rows.setdefault(name, []).append(measure(args, a.work / f"out-{i}"))
    csvs = {}
    for i, name in enumerate(cases):
        csvs[name] = (a.work / f"out-{i}" / "weights.csv").read_bytes()
    # w4's run is another training (4 ranks reduce in another order): its reference is its own gathered weights
    same_w2 = csvs["FSDP2 shards, 2 ranks"] == csvs["safetensors (gathered fp32)"]
    ref4 = [f"{s}={a.work / 'w4' / 'reference' / f'step{s}'}" for s in STEPS]
    measure(ref4, a.work / "out-ref4")
    same_w4 = (a.work / "out-ref4" / "weights.csv").read_bytes() == csvs["FSDP2 shards, 4 ranks"]
    if not (same_w2 and same_w4):
        sys.exit(f"reports differ: 2 ranks {same_w2}, 4 ranks {same_w4}")
    med = {n: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]} for n, rs in rows.items()}
    size_mb = sum(f.stat().st_size for f in (a.work / "w2" / "reference").rglob("model.safetensors")) / 2**20
    result = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "sizes": a.sizes, "checkpoints": len(STEPS), "series_mb": round(size_mb, 1), "median": med,
              "runs": rows, "reports_identical": True}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "fsdp_shards.json").write_text(json.dumps(result, indent=1) + "\n")
    base = med["safetensors (gathered fp32)"]
    lines = ["| input | peak RSS, MB | x safetensors | wall s | x safetensors |", "|---|---|---|---|---|"]
    for n, m in med.items():
        lines.append(f"| {n} | {m['peak_rss_mb']:.0f} | {m['peak_rss_mb'] / base['peak_rss_mb']:.2f} | "
                     f"{m['wall_s']:.2f} | {m['wall_s'] / base['wall_s']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if a.write_results:
        text = (f"\n## verl FSDP shards read in place ({result['date']})\n\n"
                f"Machine: {result['machine']}, Python {platform.python_version()}, 1 torch thread. Series: "
                f"{len(STEPS)} fp32 checkpoints of a Llama-shaped model (hidden, layers, intermediate = {a.sizes}; "
                f"{size_mb:.0f} MB as safetensors), whole `rlextra analyze weights` processes, median of "
                f"{a.repeats}, interleaved.\nCommand: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fsdp_shards.py "
                f"--write-results`\n\n{table}\n\nThe three reports are identical (weights.csv byte for byte; the "
                "4-rank run against its own gathered weights). Curves: `bench/results/fsdp_shards.json`.\n")
        append_to_results(text)


if __name__ == "__main__":
    main()
