"""Side-by-side benchmark: weight analysis and weight extrapolation on a 135M-parameter series.

Series: >= 8 checkpoints of the SmolLM2-135M architecture, bf16 (default) or fp32 (``--dtype``;
random init, planted drift plus noise; tests/synthetic.py). Every method runs in its own fresh process, one after another, and
reports wall time and peak RSS minus the RSS right after its imports (torch, transformers and
the method's own modules are imported first in every process, so baselines are comparable).

Methods
- analysis: rlextra full coverage; rlextra --sample 0.001; the published scripts' method
  (every checkpoint loaded fully with from_pretrained, 0.1% of each tensor sampled, >= 50, fit).
  Compared without plots on both sides (the reimplemented reference does not plot); the full
  run with rlextra's three PNGs is listed as rlextra_full_plots.
- extrapolation (two-point, bf16 out): rlextra; the published method (two from_pretrained loads
  in fp32, edit, save_pretrained); mergekit task_arithmetic with the same formula; `cp -r` floor.
- backtest: two-point over every pair and lsq, weight errors only (streamed chunk by chunk),
  beside the full analysis of the same series.
- floors: `cat` of every file of the series to /dev/null (the read floor of an analysis) and
  `cp -r` of one checkpoint (the floor of an extrapolation).
- rlextra_full_t1: the full analysis on one thread (the default uses every core this process may);
  baseline_full, baseline_sample, baseline_extrapolate: the same methods from another checkout
  (``--baseline-src its/src``), side by side.

Usage: python bench/bench_checkpoints.py [--checkpoints 8] [--work bench/_work] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import gc
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
sys.path.insert(0, str(HERE.parent / "tests"))  # synthetic.py: the planted-drift series fixture


def status_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in kB. ru_maxrss is not used: on Linux it
    survives exec, so a worker would inherit its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


# ----------------------------------------------------------------------------- workers
def worker(method: str, work: Path, run: Path, device: str | None = None) -> dict:
    import numpy as np
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM

    import matplotlib.pyplot  # noqa: F401  (the published scripts plot too; import cost outside timing)

    import rlextra.analysis  # noqa: F401
    import rlextra.extrapolate  # noqa: F401

    try:
        import numba  # noqa: F401  (imported on first use by rlextra: its import cost stays outside timing, as torch's)
    except ImportError:
        pass

    if method == "mergekit":
        import mergekit.merge  # noqa: F401
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
    torch.set_num_threads(1)
    series = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    base_rss = status_kb("VmRSS")
    out = work / f"out-{method}"
    shutil.rmtree(out, ignore_errors=True)
    # collect the imports' garbage now: else the method's first allocations trigger a full collection
    # of torch's, transformers' and matplotlib's objects (about 0.09 s), charged to whichever method runs
    gc.collect()
    t0 = time.perf_counter()
    info: dict = {}
    if method == "rlextra_full":
        on = {"device": device} if device else {}  # (an older checkout's analysis has no device)
        rep = rlextra.analysis.analyze_weights(series, out, progress=False, plots=False, **on)
        info = {"params_fitted": rep["n_params_fitted"], "mean_r2": rep["global"]["mean_r2"]}
    elif method == "rlextra_full_t1":
        rep = rlextra.analysis.analyze_weights(series, out, progress=False, plots=False, threads=1)
        info = {"params_fitted": rep["n_params_fitted"], "mean_r2": rep["global"]["mean_r2"]}
    elif method == "rlextra_sample":
        rep = rlextra.analysis.analyze_weights(series, out, sample=0.001, progress=False, plots=False)
        info = {"params_fitted": rep["n_params_fitted"], "mean_r2": rep["global"]["mean_r2"]}
    elif method == "rlextra_full_plots":
        rep = rlextra.analysis.analyze_weights(series, out, progress=False)
        info = {"params_fitted": rep["n_params_fitted"], "mean_r2": rep["global"]["mean_r2"]}
    elif method == "reference_analysis":
        info = reference_analysis(series, AutoModelForCausalLM, torch, np)
    elif method == "rlextra_extrapolate":
        rlextra.extrapolate.extrapolate_weights(series[:2], out, alpha=2.0, progress=False,
                                                **({"device": device} if device else {}))
    elif method == "rlextra_extrapolate_chunk256k":  # the chunk size extrapolation had before (the analysis's)
        rlextra.extrapolate.extrapolate_weights(series[:2], out, alpha=2.0, chunk_size=1 << 18, progress=False)
    elif method == "rlextra_backtest":  # two-point (every pair) and lsq, streamed chunk by chunk
        import rlextra.extrapolate.backtest as bt

        res = bt.backtest(series, out, methods=("two-point", "lsq"), plots=False, progress=False,
                          **({"device": device} if device else {}))
        info = {"rows": len(res["rows"])}
    elif method == "reference_extrapolate":
        reference_extrapolate(series[:2], out, AutoModelForCausalLM, torch)
    elif method == "mergekit":
        cfg = MergeConfiguration.model_validate({
            "merge_method": "task_arithmetic", "base_model": str(series[0]),
            "models": [{"model": str(series[1]), "parameters": {"weight": 2.0}}],
            "parameters": {"normalize": False}, "dtype": "float32", "out_dtype": "bfloat16"})
        run_merge(cfg, str(out), options=MergeOptions(lazy_unpickle=True, copy_tokenizer=False))
    else:
        raise SystemExit(f"unknown method {method}")
    wall = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "wall_s": wall, "mem_mb": (peak - base_rss) / 1024, **info}


def reference_analysis(series, auto_model, torch, np) -> dict:
    """The published scripts' approach (reimplemented): all checkpoints fully in RAM, 0.1% sample."""
    states = []
    for p in series:
        m = auto_model.from_pretrained(p, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
        states.append(m.state_dict())
        del m
    steps = torch.tensor([int(p.name.split("-")[1]) for p in series], dtype=torch.float64)
    tc = steps - steps.mean()
    g = torch.Generator().manual_seed(42)
    r2_all, n = [], 0
    for name, w in states[0].items():
        if not w.is_floating_point():
            continue
        numel = w.numel()
        k = min(numel, max(50, int(numel * 0.001)))
        idx = torch.randperm(numel, generator=g)[:k]
        y = torch.stack([sd[name].reshape(-1)[idx] for sd in states]).double()
        yc = y - y.mean(0)
        r2 = (tc @ yc) ** 2 / ((tc @ tc) * (yc * yc).sum(0))
        r2_all.append(r2[torch.isfinite(r2)])
        n += k
    r2 = torch.cat(r2_all)
    return {"params_fitted": n, "mean_r2": float(r2.mean())}


def reference_extrapolate(pair, out, auto_model, torch) -> None:
    """The published script's approach (reimplemented): two fp32 loads, edit, save_pretrained."""
    m0 = auto_model.from_pretrained(pair[0], torch_dtype=torch.float32, low_cpu_mem_usage=True)
    sd1 = auto_model.from_pretrained(pair[1], torch_dtype=torch.float32, low_cpu_mem_usage=True).state_dict()
    sd0 = m0.state_dict()
    new = {}
    with torch.no_grad():
        for k, w0 in sd0.items():
            w1 = sd1[k]
            new[k] = (w1 if "norm" in k.lower() else w0 + 2.0 * (w1 - w0)).to(torch.bfloat16)
    m0 = m0.to(torch.bfloat16)
    m0.load_state_dict(new)
    m0.save_pretrained(out)


# ----------------------------------------------------------------------------- driver
def series_dir(work: Path, dtype: str, shape: str = "smollm2-135m") -> Path:
    return work / ("run" + ("" if dtype == "bfloat16" else f"-{dtype}") + ("" if shape == "smollm2-135m" else f"-{shape}"))


def ensure_series(work: Path, checkpoints: int, dtype: str = "bfloat16", shape: str = "smollm2-135m") -> Path:
    """The series of that architecture in work/run[-dtype][-shape] (generated once), page cache warmed."""
    run = series_dir(work, dtype, shape)
    steps = [100 * i for i in range(checkpoints)]
    if len(sorted(run.glob("checkpoint-*"))) != checkpoints:
        import torch

        from bench_decoding import shape_config
        from synthetic import write_synthetic_series

        shutil.rmtree(run, ignore_errors=True)
        print(f"generating {checkpoints} {dtype} checkpoints of {shape} (random init) ...", flush=True)
        write_synthetic_series(run, shape_config(shape), steps, drift=4e-3, noise=5e-4,
                               dtype=dtype)
    # warm the page cache so every method reads from memory, not disk
    for f in run.rglob("*.safetensors"):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    return run


def run_worker(method: str, work: Path, run: Path, baseline_src: Path | None = None,
               device: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    name = method
    if method.startswith("baseline_"):  # the same worker, importing rlextra from the other checkout
        if baseline_src is None:
            return {"method": name, "error": f"{method} needs --baseline-src"}
        env["PYTHONPATH"] = str(baseline_src)
        method = "rlextra_" + method.removeprefix("baseline_")
    r = subprocess.run([sys.executable, __file__, "--worker", method, "--work", str(work), "--run", str(run)]
                       + (["--device", device] if device else []),
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"method": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "method": name}


def cat_floor(run: Path) -> dict:
    files = sorted(str(f) for f in run.rglob("*.safetensors"))
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["cat", *files], check=True, stdout=sink)
    return {"method": "cat_floor", "wall_s": time.perf_counter() - t0}


def cp_floor(work: Path, run: Path) -> dict:
    src = sorted(run.glob("checkpoint-*"))[0]
    dst = work / "out-cp"
    shutil.rmtree(dst, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(dst)
    return {"method": "cp_floor", "wall_s": wall}


METHODS = ["reference_analysis", "rlextra_full", "rlextra_full_t1", "baseline_full", "rlextra_sample", "baseline_sample",
           "rlextra_full_plots", "reference_extrapolate", "mergekit", "rlextra_extrapolate",
           "baseline_extrapolate", "rlextra_extrapolate_chunk256k", "rlextra_backtest", "cat_floor", "cp_floor"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / "_work")
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--worker")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # a worker's series folder
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--shape", default="smollm2-135m", choices=("smollm2-135m", "qwen2.5-1.5b"),
                    help="architecture of the random-init series")
    ap.add_argument("--device", help="--device of the analysis, backtest and extrapolation (e.g. cuda)")
    ap.add_argument("--baseline-src", type=Path, help="src/ of another checkout, for the baseline_* methods")
    ap.add_argument("--name", help="of the JSON written by --write-results (default: checkpoints-DTYPE)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (default: all)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each method, interleaved; the table reports the median wall time")
    ap.add_argument("--write-results", action="store_true", help="append a section to bench/RESULTS.md")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.work, a.run, a.device)))
        return
    run = ensure_series(a.work, a.checkpoints, a.dtype, a.shape)
    runs: dict[str, list[dict]] = {}
    for i in range(a.repeats):  # interleaved, so a burst of load on the machine hits every method alike
        for method in [m for m in METHODS if m in a.methods.split(",")]:
            print(f"running {method} ({i + 1}/{a.repeats}) ...", flush=True)
            os.sync()  # the last run's output is not written back to disk during this one (it cost up to 0.5 s)
            r = cp_floor(a.work, run) if method == "cp_floor" else cat_floor(run) if method == "cat_floor" \
                else run_worker(method, a.work, run, a.baseline_src, a.device)
            runs.setdefault(method, []).append(r)
            print("  ", r, flush=True)
    results = {m: _median_run(rs) for m, rs in runs.items()}
    table = render(results, a)
    print(table)
    if a.write_results:
        append_to_results(table + "\n")
        curve = HERE / "results" / f"{a.name or 'checkpoints-' + a.dtype}-{datetime.date.today()}.json"
        curve.write_text(json.dumps({"command": sys.argv, "cpus": os.cpu_count(), "runs": runs}, indent=1) + "\n")


def _median_run(rs: list[dict]) -> dict:
    """The run with the median wall time, with every run's wall time beside it."""
    ok = sorted((r for r in rs if "error" not in r), key=lambda r: r["wall_s"])
    if not ok:
        return rs[0]
    return {**ok[(len(ok) - 1) // 2], "walls": [round(r["wall_s"], 3) for r in rs if "error" not in r]}


RATIOS = [  # (label, numerator, denominator, key, target)
    ("full analysis time / read floor (cat)", "rlextra_full", "cat_floor", "wall_s", "<= 4 (goal 2)"),
    ("full analysis time, one thread / default threads", "rlextra_full_t1", "rlextra_full", "wall_s", ""),
    ("full analysis time / the baseline checkout's", "rlextra_full", "baseline_full", "wall_s", ""),
    ("sampled (0.1%) analysis time / read floor (cat)", "rlextra_sample", "cat_floor", "wall_s", "report"),
    ("sampled analysis time / the baseline checkout's", "rlextra_sample", "baseline_sample", "wall_s", ""),
    ("backtest time / full analysis time", "rlextra_backtest", "rlextra_full", "wall_s", "<= 3"),
    ("full analysis time / reference time", "rlextra_full", "reference_analysis", "wall_s", "<= 2"),
    ("full analysis memory / reference memory", "rlextra_full", "reference_analysis", "mem_mb", "<= 0.1"),
    ("reference time / sampled analysis time", "reference_analysis", "rlextra_sample", "wall_s", ">= 5"),
    ("extrapolate time / published time", "rlextra_extrapolate", "reference_extrapolate", "wall_s", "<= 0.5"),
    ("extrapolate memory / published memory", "rlextra_extrapolate", "reference_extrapolate", "mem_mb", "<= 0.25"),
    ("extrapolate time / mergekit time", "rlextra_extrapolate", "mergekit", "wall_s", "<= 0.5"),
    ("extrapolate memory / mergekit memory", "rlextra_extrapolate", "mergekit", "mem_mb", "<= 0.25"),
    ("extrapolate time / cp floor", "rlextra_extrapolate", "cp_floor", "wall_s", "<= 3"),
    ("extrapolate time / the baseline checkout's", "rlextra_extrapolate", "baseline_extrapolate", "wall_s", ""),
    ("extrapolate time, 1M-element chunks / 256K", "rlextra_extrapolate", "rlextra_extrapolate_chunk256k",
     "wall_s", "< 1"),
]


def render(res: dict, a) -> str:
    def ratio(x, y, key):
        try:
            return f"{res[x][key] / res[y][key]:.3f}"
        except (KeyError, ZeroDivisionError, TypeError):
            return "n/a"

    def row(m):
        r = res[m]
        if "error" in r:
            return f"| {m} | failed: {r['error'][:120]} | | |"
        mem = f"{r['mem_mb']:.0f}" if "mem_mb" in r else "n/a"
        extra = f"{r['params_fitted']:,} fitted, mean R² {r['mean_r2']:.4f}" if "params_fitted" in r else ""
        if len(r.get("walls", [])) > 1:
            extra = (extra + "; " if extra else "") + "runs " + ", ".join(f"{w:.2f}" for w in r["walls"])
        return f"| {m} | {r['wall_s']:.2f} | {mem} | {extra} |"

    cpu = platform.processor() or platform.machine()
    lines = [
        f"## Checkpoint analysis and extrapolation ({datetime.date.today()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, 1 torch/BLAS thread "
        f"per process (rlextra's analysis threads: its default, every core). "
        f"Series: {a.checkpoints} {a.dtype} checkpoints of the {a.shape} architecture (random init), page cache warm"
        + (f"; --device {a.device}." if a.device else "."),
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_checkpoints.py --checkpoints {a.checkpoints} "
        f"--repeats {a.repeats} --dtype {a.dtype} --shape {a.shape}" + (f" --device {a.device}" if a.device else "") + ("" if a.methods == ",".join(METHODS) else f" --methods {a.methods}")
        + (f" --baseline-src {a.baseline_src}" if a.baseline_src else "")
        + f" --write-results` (wall s: the median of {a.repeats} interleaved runs)",
        "",
        "| method | wall s | peak RSS - post-import RSS, MB | notes |",
        "|---|---|---|---|",
        *[row(m) for m in res],
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        *[f"| {label} | {ratio(x, y, key)} | {target} |" for label, x, y, key, target in RATIOS
          if x in res and y in res],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
