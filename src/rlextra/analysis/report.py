"""The weights report: its schema, its files (json, csv, plots), and the merge of shard reports.

A single run and a merge of shards both go through ``finalize_report``, and global figures are
formed from per-tensor sums with ``math.fsum`` (order-independent), so a merge of shards gives
exactly the weights.json of a single run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rlextra.checkpoints.writer import atomic_output_dir
from rlextra.errors import RLExtraError

FINE_BINS = 10_000  # medians are read off this histogram: resolution 1e-4
REPORT_BINS = 20
CSV_FIELDS = ["name", "numel", "n_fitted", "n_analyzed", "n_constant", "n_filtered", "mean_r2",
              "median_r2", "frac_r2_above_0.7", "rel_change"]


def median_from_hist(hist: np.ndarray) -> float | None:
    """The median with each value read as its fine bin's midpoint (within 5e-5 of the exact one)."""
    n = int(hist.sum())
    if n == 0:
        return None
    cum = np.cumsum(hist)
    lo, hi = np.searchsorted(cum, [(n - 1) // 2 + 1, n // 2 + 1])  # bins of the middle value(s)
    return (int(lo) + int(hi) + 1.0) / (2 * FINE_BINS)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def r2_summary(r2: np.ndarray) -> dict:
    """mean/median/fraction above 0.7/histogram of in-memory R^2 values (NaN excluded), exact."""
    r2 = np.asarray(r2, dtype=np.float64)
    r2 = r2[np.isfinite(r2)]
    counts = np.histogram(r2, bins=REPORT_BINS, range=(0.0, 1.0))[0]
    return {"n_analyzed": int(r2.size),
            "mean_r2": float(r2.mean()) if r2.size else None,
            "median_r2": float(np.median(r2)) if r2.size else None,
            "frac_r2_above_0.7": float((r2 > 0.7).mean()) if r2.size else None,
            "histogram": {"edges": np.linspace(0, 1, REPORT_BINS + 1).round(6).tolist(),
                          "counts": counts.tolist()}}


def tensor_summary(name: str, numel: int, st) -> tuple[dict, dict]:
    """Public per-tensor row, and the exact sums a merge needs."""
    row = {
        "name": name, "numel": numel, "n_fitted": st.n_fitted, "n_analyzed": st.n_analyzed,
        "n_constant": st.n_constant, "n_filtered": st.n_filtered,
        "mean_r2": _ratio(st.sum_r2, st.n_analyzed), "median_r2": median_from_hist(st.hist),
        "frac_r2_above_0.7": _ratio(st.n_above, st.n_analyzed),
        "rel_change": math.sqrt(st.sq_delta / st.sq_first) if st.sq_first > 0 else None,
    }
    return row, {"name": name, "sum_r2": st.sum_r2, "n_above": st.n_above}


def finalize_report(meta: dict, summaries: Sequence[tuple[dict, dict]], hist: np.ndarray,
                    examples: list[dict]) -> tuple[dict, dict]:
    """Assemble weights.json (report) and accumulators.json from per-tensor pieces."""
    summaries = sorted(summaries, key=lambda s: s[0]["name"])
    rows = [s[0] for s in summaries]
    n_analyzed = sum(r["n_analyzed"] for r in rows)
    coarse = hist.reshape(REPORT_BINS, -1).sum(axis=1)
    opts = meta["options"]
    n_filtered = sum(r["n_filtered"] for r in rows)
    filters = None
    if opts["min_change"] is not None or opts["min_distinct"] is not None:
        filters = {"min_change": opts["min_change"], "min_distinct": opts["min_distinct"],
                   "n_params_filtered": n_filtered}
    report = dict(meta)
    report.update({
        "n_tensors": len(rows),
        "n_params": sum(r["numel"] for r in rows),
        "n_params_fitted": sum(r["n_fitted"] for r in rows),
        "n_params_constant": sum(r["n_constant"] for r in rows),
        "n_params_analyzed": n_analyzed,
        "filters": filters,
        "global": {
            "mean_r2": _ratio(math.fsum(s[1]["sum_r2"] for s in summaries), n_analyzed),
            "median_r2": median_from_hist(hist),
            "frac_r2_above_0.7": _ratio(sum(s[1]["n_above"] for s in summaries), n_analyzed),
            "histogram": {"edges": np.linspace(0, 1, REPORT_BINS + 1).round(6).tolist(),
                          "counts": coarse.tolist()},
        },
        "tensors": rows,
    })
    accumulators = {"hist_fine": hist.tolist(), "tensors": [s[1] for s in summaries],
                    "examples": sorted(examples, key=lambda e: e["tensor"])}
    return report, accumulators


def write_weight_report(report: dict, accumulators: dict, out_dir: Path, *, plots: bool = True,
                        overwrite: bool = False, inputs: Sequence[Path] = (),
                        staged: Path | None = None) -> None:
    """weights.json, weights.csv, accumulators.json and PNG plots, written atomically (plus the
    files already written into ``staged``, moved in before the rename)."""
    with atomic_output_dir(out_dir, inputs=inputs, overwrite=overwrite) as tmp:
        for f in sorted(staged.iterdir()) if staged is not None else []:
            f.rename(tmp / f.name)
        (tmp / "weights.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "accumulators.json").write_text(json.dumps(accumulators) + "\n")
        with open(tmp / "weights.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in report["tensors"]:
                writer.writerow({k: row[k] for k in CSV_FIELDS})
        if plots:
            from rlextra.analysis import plots as P

            P.plot_r2_histogram(report["global"], tmp / "r2_histogram.png")
            P.plot_r2_heatmap(report, tmp / "r2_heatmap.png")
            P.plot_trajectories(report["steps"], accumulators["examples"], tmp / "trajectories.png")


def _load_shard(folder: Path) -> tuple[dict, dict]:
    try:
        report = json.loads((folder / "weights.json").read_text())
        acc = json.loads((folder / "accumulators.json").read_text())
    except FileNotFoundError as exc:
        raise RLExtraError(f"{exc.filename}: missing; is {folder} an 'analyze weights' output?") from None
    except ValueError as exc:
        raise RLExtraError(f"{folder}: unreadable report ({exc})") from None
    return report, acc


def merge_weight_reports(shard_dirs: Sequence[str | Path], out_dir: str | Path | None = None, *,
                         plots: bool = True, overwrite: bool = False) -> dict:
    """Combine the reports of ``--shard i/N`` runs into the report of one full run."""
    loaded = [(Path(d), *_load_shard(Path(d))) for d in shard_dirs]
    if not loaded:
        raise RLExtraError("no shard folders given")
    first = loaded[0][1]
    same = ("steps", "checkpoints", "options", "skipped_tensors", "rlextra_version")
    seen: dict[int, Path] = {}
    for folder, rep, _ in loaded:
        for key in same:
            if rep.get(key) != first.get(key):
                raise RLExtraError(f"{folder}: '{key}' differs from {loaded[0][0]}; not shards of one run")
        sh = rep.get("shard")
        if sh is None or sh["count"] != (first.get("shard") or {}).get("count"):
            raise RLExtraError(f"{folder}: not a shard of the same --shard i/N split")
        if sh["index"] in seen:
            raise RLExtraError(f"{folder}: shard {sh['index']} given twice (also {seen[sh['index']]})")
        seen[sh["index"]] = folder
    count = first["shard"]["count"]
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise RLExtraError(f"shard {missing[0]}/{count} is missing from the merge")
    meta = {k: first[k] for k in ("rlextra_version", "kind", "steps", "checkpoints", "options")}
    meta["shard"] = None
    meta["skipped_tensors"] = first["skipped_tensors"]
    sums = {t["name"]: t for _, _, acc in loaded for t in acc["tensors"]}
    summaries = [(row, sums[row["name"]]) for _, rep, _ in loaded for row in rep["tensors"]]
    hist = sum((np.asarray(acc["hist_fine"], dtype=np.int64) for _, _, acc in loaded))
    examples = [e for _, _, acc in loaded for e in acc["examples"]]
    report, accumulators = finalize_report(meta, summaries, hist, examples)
    if out_dir is not None:
        write_weight_report(report, accumulators, Path(out_dir), plots=plots, overwrite=overwrite,
                            inputs=[d for d, _, _ in loaded])
    return report
