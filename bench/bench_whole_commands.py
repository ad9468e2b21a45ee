"""What a user waits for: whole `rlextra` processes, start-up included, beside the read/copy floors.

Every row is a fresh process run the way a user runs it (`OMP_NUM_THREADS` unset, page cache warm),
interleaved over the rows and repeated (the median is kept), so that load on the machine falls on
every row alike. Series (tests/synthetic.py: random init, planted drift plus noise, 8 checkpoints):
`tiny` (the tests' 2-layer Llama, fp32, ~100 KB per checkpoint), `135m` (SmolLM2-135M shape, bf16, and
`135m-fp32`), and optionally `1.5b` (Qwen2.5-1.5B shape, bf16; ~25 GB on disk, more than half this machine's
memory: the page cache is dropped before each of its rows, which needs root, so they read from the disk) and `1.5b-fp32` (two fp32 checkpoints, 12 GB: the
extrapolate and cp -r rows only). `--add` keeps the rows already in the JSON and adds these series'
(a series too large to sit beside another on the disk is measured in a run of its own).

Rows per series (plots off where a command draws them: `--no-plots`; the page cache is warmed, untimed,
before each row of a series that fits it, every row's writes are synced, untimed, before the next, and
its output folder, like cp's destination, is removed untimed before it runs): `analyze weights`,
`backtest --methods two-point,lsq`, `extrapolate` (the two
newest checkpoints to a later step), `watch --once`, `analyze merge` (of two `--shard` halves made
beforehand), and the floors: `cat` of every weight file to /dev/null and `cp -r` of one checkpoint.
Start-up rows: `rlextra --help` and every `rlextra <command> --help`. The numba cache row: the tiny
analysis right after the on-disk cache of rlextra's compiled passes is emptied (a first run after
install), then again (cached).

Usage (repository root): .venv/bin/python bench/bench_whole_commands.py [--series tiny,135m,135m-fp32]
    [--repeats 3] [--write-results] [--add]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RX = str(ROOT / ".venv" / "bin" / "rlextra")
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

SERIES = {"tiny": ("float32", "tiny"), "135m": ("bfloat16", "smollm2-135m"),
          "135m-fp32": ("float32", "smollm2-135m"), "1.5b": ("bfloat16", "qwen2.5-1.5b"),
          "1.5b-fp32": ("float32", "qwen2.5-1.5b")}
STEPS = [100 * i for i in range(8)]
# the fp32 1.5B shape only for extrapolate's fp32 row: its two checkpoints (12 GB), not eight (50 GB)
SERIES_STEPS = {"1.5b-fp32": STEPS[-2:]}
PAIR_ONLY = ("extrapolate", "cp -r (copy floor)")
# the targets the table is read against: seconds (help, tiny) and ratios (the rest)
TARGETS = {"help": 0.5, "tiny": 1.0, "analysis over tiny / cat": 4, "backtest / analysis": 3, "extrapolate / cp": 3}


def ensure(work: Path, name: str) -> Path:
    """The series (generated once; every row warms or drops the page cache itself)."""
    dtype, shape = SERIES[name]
    steps = SERIES_STEPS.get(name, STEPS)
    run = work / f"series-{name}"
    if len(list(run.glob("checkpoint-*"))) != len(steps):
        from synthetic import tiny_llama_config, write_synthetic_series

        shutil.rmtree(run, ignore_errors=True)
        if shape == "tiny":
            config = tiny_llama_config()
        else:
            from bench_decoding import shape_config

            config = shape_config(shape)
        print(f"generating {name} ...", flush=True)
        write_synthetic_series(run, config, steps, drift=4e-3, noise=5e-4, dtype=dtype)
    return run


def fits_page_cache(run: Path) -> bool:
    """Whether the series can stay in the page cache: at most half the machine's memory."""
    size = sum(f.stat().st_size for f in run.rglob("*.safetensors"))
    return size <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def drop_page_cache() -> None:
    """Empty the page cache (root only), so that a series larger than it is read from the disk on every
    row, as a run's older checkpoints are: partly cached leftovers of earlier rows are not a state a
    user can reproduce."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"/proc/sys/vm/drop_caches: cannot drop the page cache ({exc.strerror}); the rows of a "
                         "series larger than half the memory need it (run as root)") from None


def warm(run: Path) -> None:
    """Read the series once so that a row starts from a warm page cache (only for a series that fits
    it: a larger one's rows read from the disk, as a user's would; ``drop_page_cache``)."""
    for f in run.rglob("*.safetensors"):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return wall


def user_env() -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MKL_NUM_THREADS", None)
    return env


def series_rows(work: Path, run: Path, pair_only: bool = False) -> dict[str, list[str]]:
    """The rows of one series (``pair_only``: extrapolate and cp -r alone, for a series of 2)."""
    ckpts = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    files = [str(f) for f in sorted(run.rglob("*.safetensors"))]
    out = work / "out"
    shards = [work / f"shard{i}" for i in range(2)]
    for i, s in enumerate(shards):  # the halves that analyze merge adds up (made once, not timed)
        if not pair_only and not (s / "weights.json").is_file():
            subprocess.run([RX, "analyze", "weights", str(run), "--shard", f"{i}/2", "-o", str(s), "--no-plots",
                            "-q", "--overwrite"], check=True, stdout=subprocess.DEVNULL, env=user_env())
    rows = {
        "analyze weights": [RX, "analyze", "weights", str(run), "-o", str(out / "a"), "--no-plots", "-q", "--overwrite"],
        "backtest two-point,lsq": [RX, "backtest", str(run), "--methods", "two-point,lsq", "-o", str(out / "b"),
                                   "--no-plots", "--overwrite"],
        "extrapolate": [RX, "extrapolate", str(ckpts[-2]), str(ckpts[-1]), "--to-step", "1000", "-o",
                        str(out / "x"), "--overwrite"],
        "watch --once": [RX, "watch", str(run), "-o", str(out / "w"), "--once", "--no-plots", "--overwrite"],
        "analyze merge": [RX, "analyze", "merge", *map(str, shards), "-o", str(out / "m"), "--no-plots", "--overwrite"],
        "cat (read floor)": ["cat", *files],
        "cp -r (copy floor)": ["cp", "-r", str(ckpts[-1]), str(out / "cp")],
    }
    return {k: v for k, v in rows.items() if k in PAIR_ONLY} if pair_only else rows


def command_paths(parser, prefix: tuple = ()) -> list[tuple]:
    """Every command and sub-command of the CLI (``analyze weights`` as well as ``analyze``)."""
    import argparse

    out = []
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its sub-commands here only
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in sorted(action.choices.items()):
                out.append(prefix + (name,))
                out.extend(command_paths(sub, prefix + (name,)))
    return out


def numba_cache_row(run: Path, work: Path) -> dict:
    """A first analysis after install (no compiled functions on disk) and the next one."""
    import rlextra.fused as fused

    cache = Path(fused.__file__).parent / "__pycache__"
    for f in list(cache.glob("fused.*.nb[ic]")):
        f.unlink()
    cmd = [RX, "analyze", "weights", str(run), "-o", str(work / "out" / "n"), "--no-plots", "-q", "--overwrite"]
    first = timed(cmd, user_env())
    second = timed(cmd, user_env())
    return {"first_s": round(first, 3), "cached_s": round(second, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "whole")
    ap.add_argument("--series", default="tiny,135m,135m-fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--add", action="store_true",
                    help="keep the rows of bench/results/whole_commands.json and add these series' rows to them")
    a = ap.parse_args()
    names = a.series.split(",")
    a.work.mkdir(parents=True, exist_ok=True)
    runs = {n: ensure(a.work, n) for n in names}
    from rlextra.cli import build_parser

    rows: dict[str, list[str]] = {}
    if not a.add:  # the start-up rows belong to the first run; --add measures series only
        rows["rlextra --help"] = [RX, "--help"]
        rows.update({f"rlextra {' '.join(c)} --help": [RX, *c, "--help"] for c in command_paths(build_parser())})
    row_series: dict[str, str] = {}
    for n in names:
        for k, cmd in series_rows(a.work / n, runs[n], pair_only=n in SERIES_STEPS).items():
            rows[f"{n}: {k}"] = cmd
            row_series[f"{n}: {k}"] = n
    cold = [n for n in names if not fits_page_cache(runs[n])]
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.repeats):
        for k, cmd in rows.items():
            # untimed, as cp's destination: every command writes into a fresh folder (--overwrite would
            # otherwise time the removal of the previous run's output as well)
            if k.endswith("cp -r (copy floor)"):
                shutil.rmtree(cmd[-1], ignore_errors=True)
            elif "-o" in cmd:
                shutil.rmtree(cmd[cmd.index("-o") + 1], ignore_errors=True)
            if k in row_series and row_series[k] in cold:
                drop_page_cache()  # untimed: every row of a series too large to cache starts cold
            elif k in row_series:
                warm(runs[row_series[k]])  # untimed: a larger series' row may have pushed this one out
            times[k].append(timed(cmd, user_env()))
            os.sync()  # untimed: a row's written files reach the disk before the next row starts
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    numba = numba_cache_row(runs[names[0]], a.work / names[0]) if names[0] == "tiny" else None
    result = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "python": platform.python_version(), "repeats": a.repeats, "series": names, "cold_series": cold,
              "median_s": med, "runs_s": times, "numba_cache": numba}
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / "whole_commands.json"
    if a.add:  # rows of more series, measured in another run (say so in RESULTS): kept beside the earlier ones
        old = json.loads(path.read_text())
        for key in ("median_s", "runs_s"):
            old[key].update(result[key])
        old["series"] = old["series"] + [n for n in names if n not in old["series"]]
        old["cold_series"] = sorted(set(old.get("cold_series", [])) | set(cold))
        old.setdefault("added", []).append({"series": names, "date": result["date"], "repeats": a.repeats})
        result = old
    path.write_text(json.dumps(result, indent=1) + "\n")
    text = render(result, result["series"])
    print(text)
    if a.write_results:
        append_to_results(text)


COLUMNS = ("analyze weights", "backtest two-point,lsq", "extrapolate", "watch --once", "analyze merge",
           "cat (read floor)", "cp -r (copy floor)")


def render(res: dict, names: list[str]) -> str:
    med = res["median_s"]
    helps = {k: v for k, v in med.items() if k.endswith("--help")}
    worst = max(helps, key=helps.get)
    cold = res.get("cold_series", [])

    def cell(n: str, k: str) -> str:
        v = med.get(f"{n}: {k}")
        return "-" if v is None else f"{v:.2f}"

    lines = [f"\n## What a user waits for: whole commands ({res['date']})\n",
             f"Machine: {res['machine']}, Python {res['python']}; `OMP_NUM_THREADS` unset; each row a fresh process, "
             f"rows interleaved, median of {res['repeats']}; page cache warm before each row, writes synced after it, outputs removed before it"
             + (f"; except {', '.join(cold)}: larger than half the memory, so the page cache is dropped before each of "
                "its rows (read from the disk)" if cold else "") + ".",
             "Command: `.venv/bin/python bench/bench_whole_commands.py --write-results`"
             + "".join(f"; then `--series {','.join(x['series'])} --add` ({x['date']}, median of {x['repeats']})"
                       for x in res.get("added", [])) + "\n",
             f"Start-up: `rlextra --help` {med['rlextra --help']:.2f} s; the slowest `<command> --help` is "
             f"`{worst}` at {helps[worst]:.2f} s (target {TARGETS['help']} s each; all {len(helps)} in "
             "`bench/results/whole_commands.json`).\n",
             "| series | " + " | ".join(COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(cell(n, k) for k in COLUMNS) + " |")
    lines.append("")
    lines.append("| ratio | value | target |")
    lines.append("|---|---|---|")
    if "tiny" in names:
        slowest = max(med[f"tiny: {k}"] for k in COLUMNS[:5])
        lines.append(f"| slowest command on the tiny series, s | {slowest:.2f} | <= {TARGETS['tiny']} |")
    for n in names:
        if n == "tiny":
            continue
        if "tiny" in names and f"{n}: analyze weights" in med:
            over = med[f"{n}: analyze weights"] - med["tiny: analyze weights"]
            lines.append(f"| {n}: (analyze weights - the same on tiny) / cat | {over / med[f'{n}: cat (read floor)']:.2f} "
                         f"| <= {TARGETS['analysis over tiny / cat']} |")
        if f"{n}: backtest two-point,lsq" in med:
            lines.append(f"| {n}: backtest / analyze weights | "
                         f"{med[f'{n}: backtest two-point,lsq'] / med[f'{n}: analyze weights']:.2f} | <= {TARGETS['backtest / analysis']} |")
        lines.append(f"| {n}: extrapolate / cp -r | {med[f'{n}: extrapolate'] / med[f'{n}: cp -r (copy floor)']:.2f} "
                     f"| <= {TARGETS['extrapolate / cp']} |")
    if res.get("numba_cache"):
        nc = res["numba_cache"]
        lines.append(f"\nnumba's on-disk cache: the tiny analysis took {nc['first_s']:.2f} s right after the cache "
                     f"was emptied (a first run after install: every compiled pass built), {nc['cached_s']:.2f} s "
                     "on the next run.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
