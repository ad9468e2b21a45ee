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

from rlextra.errors import RLExtraError
from rlextra.shards import assign_shards  # noqa: F401 (re-exported: rlextra.analysis.report.assign_shards)
from rlextra.io import atomic_output_dir, check_output, read_json

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
                        overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
    """The report files (``write_weight_files``) as a new folder, atomically."""
    with atomic_output_dir(out_dir, inputs=inputs, overwrite=overwrite) as tmp:
        write_weight_files(report, accumulators, tmp, plots=plots)


def write_weight_files(report: dict, accumulators: dict, tmp: Path, *, plots: bool = True) -> None:
    """weights.json, weights.csv, accumulators.json and PNG plots into a folder being built."""
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
    if not folder.is_dir():
        raise RLExtraError(f"{folder}: no such folder (an 'analyze weights --shard' output)")
    for name in ("weights.json", "accumulators.json"):
        if not (folder / name).is_file():
            raise RLExtraError(f"{folder / name}: missing; is {folder} an 'analyze weights' output?")
    report, acc = read_json(folder / "weights.json"), read_json(folder / "accumulators.json")
    problem = _shard_problem(report, acc)
    if problem:
        raise RLExtraError(f"{folder}: malformed shard report ({problem})")
    return report, acc


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _shard_problem(report, acc) -> str | None:
    """What is wrong with a shard's weights.json/accumulators.json, or None (the fields merge reads)."""
    if not isinstance(report, dict) or not isinstance(acc, dict):
        return "weights.json and accumulators.json must hold JSON objects"
    sh = report.get("shard")
    if not (isinstance(sh, dict) and isinstance(sh.get("index"), int) and isinstance(sh.get("count"), int)):
        return "weights.json: 'shard' must be {index, count}; was it written with --shard?"
    if not (isinstance(report.get("steps"), list) and all(_num(t) for t in report["steps"])):
        return "weights.json: 'steps' must be a list of numbers"
    opts = report.get("options")
    if not (isinstance(opts, dict) and "min_change" in opts and "min_distinct" in opts):
        return "weights.json: 'options' lacks min_change/min_distinct"
    rows = report.get("tensors")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                             and all(f in r for f in CSV_FIELDS) for r in rows):
        return f"weights.json: 'tensors' must be a list of rows with {', '.join(CSV_FIELDS)}"
    for key in ("n_fitted", "n_analyzed", "n_constant", "n_filtered", "numel"):
        if not all(isinstance(r[key], int) for r in rows):
            return f"weights.json: tensor field '{key}' must be an integer"
    hist = acc.get("hist_fine")
    if not (isinstance(hist, list) and len(hist) == FINE_BINS and all(isinstance(h, int) and h >= 0 for h in hist)):
        return f"accumulators.json: 'hist_fine' must be {FINE_BINS} non-negative integers"
    sums = acc.get("tensors")
    if not (isinstance(sums, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                           and _num(t.get("sum_r2")) and isinstance(t.get("n_above"), int)
                                           for t in sums)):
        return "accumulators.json: 'tensors' must be a list of {name, sum_r2, n_above}"
    missing = {r["name"] for r in rows} - {t["name"] for t in sums}
    if missing:
        return f"accumulators.json lacks tensor '{sorted(missing)[0]}'"
    analysed = {r["name"]: r["n_analyzed"] for r in rows}
    for t in sums:  # each entry's R^2 is in [0, 1]: a tensor's sums lie within its count
        n = analysed.get(t["name"])
        if n is None:
            continue
        if not (math.isfinite(t["sum_r2"]) and -1e-9 <= t["sum_r2"] <= n + 1e-9 * max(1, n)):
            return (f"accumulators.json: tensor '{t['name']}': sum_r2 {t['sum_r2']} is outside [0, {n}] "
                    f"(its {n} analysed entries' R^2 lie in [0, 1])")
        if not 0 <= t["n_above"] <= n:
            return f"accumulators.json: tensor '{t['name']}': n_above {t['n_above']} is outside [0, {n}]"
    ex = acc.get("examples")
    if not (isinstance(ex, list) and all(isinstance(e, dict) and isinstance(e.get("tensor"), str)
                                         and _num(e.get("r2")) and isinstance(e.get("values"), list)
                                         and all(_num(v) for v in e["values"]) for e in ex)):
        return "accumulators.json: 'examples' must be a list of {tensor, r2, values}"
    return None


def _check_cover(loaded: list[tuple[Path, dict, dict]], count: int) -> None:
    """The shards hold disjoint tensors, each in the shard that ``--shard i/N`` gives it, with counts
    consistent with its size and the shard's histogram: a relabelled or edited shard is refused,
    not counted twice."""
    where: dict[str, tuple[Path, int, int]] = {}
    for folder, rep, acc in loaded:
        for r in rep["tensors"]:
            name = r["name"]
            if name in where:
                raise RLExtraError(f"{folder}: tensor '{name}' is also in {where[name][0]}; the shards of one split "
                                   "hold disjoint tensors")
            fitted = r["n_constant"] + r["n_filtered"] + r["n_analyzed"]
            if not (r["numel"] >= 1 and min(r["n_constant"], r["n_filtered"], r["n_analyzed"]) >= 0
                    and r["n_fitted"] == fitted <= r["numel"]):
                raise RLExtraError(f"{folder}: tensor '{name}': counts do not add up (numel {r['numel']}, fitted "
                                   f"{r['n_fitted']}, constant + filtered + analysed {fitted})")
            where[name] = (folder, rep["shard"]["index"], r["numel"])
        analysed = sum(r["n_analyzed"] for r in rep["tensors"])
        if sum(acc["hist_fine"]) != analysed:
            raise RLExtraError(f"{folder}: accumulators.json's histogram counts {sum(acc['hist_fine'])} values, "
                               f"weights.json {analysed}; the two files are not of one run")
    owner = assign_shards({n: numel for n, (_, _, numel) in where.items()}, count)
    for name, (folder, index, _) in where.items():
        if owner[name] != index:
            raise RLExtraError(f"{folder}: tensor '{name}' belongs to shard {owner[name]}/{count}, not "
                               f"{index}/{count}; was this folder relabelled?")


def merge_weight_reports(shard_dirs: Sequence[str | Path], out_dir: str | Path | None = None, *,
                         plots: bool = True, overwrite: bool = False) -> dict:
    """Combine the reports of ``--shard i/N`` runs into the report of one full run."""
    if out_dir is not None:
        check_output(out_dir, inputs=shard_dirs, overwrite=overwrite)
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
    bad = next((f for i, f in seen.items() if not 0 <= i < count), None)
    if bad is not None:
        raise RLExtraError(f"{bad}: shard index outside its split of {count}")
    if count != len(seen):  # never range(count): a shard may claim any count
        first_missing = next(i for i in range(len(seen) + 1) if i not in seen)
        raise RLExtraError(f"shard {first_missing}/{count} is missing from the merge ({len(seen)} of {count} "
                           f"shards given)")
    _check_cover(loaded, count)
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
