"""Backtest: how far ahead can a run be extrapolated, and with which method? Measured on the run's
own later checkpoints.

For a run with K real checkpoints at steps t_0 < ... < t_{K-1}:

* two-point predicts from every window (b, s) of two checkpoints (``pairs='all'``; or only
  b = t_0 with ``pairs='first'``); lsq and low-rank from all the checkpoints up to s (t_0 ... s; lsq
  needs 3, low-rank 2). Each prediction is read at every later real checkpoint T, with
  alpha = (T - b) / (s - b), b being the window's first step.
* ``weight_error = ||W_pred - W_T|| / ||W_T - W_s||`` over all float tensors (norms copied from s
  by default, as ``extrapolate`` does), and per module type (attention, mlp, embeddings, norms,
  other). 1.0 means no better than stopping at s; below 1 the extrapolation helps.
* With a task: held-out avg@k of each prediction, of the real checkpoints, and of logits
  extrapolation of (b, s) to T (method ``logits``), all with the same sampler and seed.
* The recommendation, per method: the largest alpha such that every row with alpha up to it has
  weight error below 1 (and accuracy at least the real s's, when measured); "not safe" when even
  the smallest alpha fails. RL-Extra's jump of n steps after m real ones is alpha = (m + n) / m,
  so the safe n/m is that alpha minus 1.

The weight pass streams each tensor chunk by chunk from all K checkpoints. Two-point and lsq: by
default every row is a fixed combination of checkpoints (a prediction is linear in them), so one
compiled float64 pass per chunk (``fused.combo_sq_sums``, numba) sums all rows' squared errors, with
tensors on every core; with ``device``, without numba, or with lsq's ``min_r2`` gate, the rows are
predicted in fp32 torch chunk by chunk instead. low-rank reads whole tensors (K fp32 copies) and
takes its SVD once per window and tensor. Nothing is written into the run's folders; the
output folder is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra import fused
from rlextra.checkpoints.chunks import BlockReader, auto_chunk_size, chunk_ranges, raise_nonfinite, read_tensor
from rlextra.checkpoints.reader import to_torch
from rlextra.checkpoints.series import CheckpointSeries, load_series
from rlextra.errors import RLExtraError
from rlextra.extrapolate.methods import METHODS, MIN_CHECKPOINTS, WindowPredictor, check_device, check_method
from rlextra.extrapolate.registry import NORMS, REGISTRY, canonical
from rlextra.hf import is_norm_weight
from rlextra.io import atomic_output_dir
from rlextra.linefit import line_weights
from rlextra.shards import assign_shards, available_cores, parse_shard
from rlextra.tasks import task_inputs

# elements of one tensor read from each checkpoint at a time: K chunks of fp32 are in memory at once
BACKTEST_CHUNK_SIZE = 1 << 20

MODULE_TYPES = ("attention", "mlp", "embeddings", "norms", "other")
_EMBED = re.compile(r"embed|(^|\.)wte\.|(^|\.)wpe\.|lm_head|embed_out|word_embeddings", re.IGNORECASE)
_ATTN = re.compile(r"attn|attention|(^|\.|_)(q|k|v|o|qkv|query|key|value)(_proj)?\.", re.IGNORECASE)
_MLP = re.compile(r"mlp|ffn|feed_forward|(gate|up|down)_proj|(^|\.)(fc\d|c_fc|c_proj|w[123])\.",
                  re.IGNORECASE)


def module_type(name: str) -> str:
    """attention, mlp, embeddings, norms or other, from a parameter's name."""
    if is_norm_weight(name):
        return "norms"
    for kind, pattern in (("embeddings", _EMBED), ("attention", _ATTN), ("mlp", _MLP)):
        if pattern.search(name):
            return kind
    return "other"


@dataclass(frozen=True)
class Window:
    """One prediction source: a method and the indices of the checkpoints it reads."""

    method: str
    idx: tuple[int, ...]


def plan_windows(k: int, methods: Sequence[str], pairs: str = "all") -> list[Window]:
    """Windows with at least one later checkpoint to predict."""
    out = []
    for m in methods:
        for s in range(1, k - 1):
            if m == "two-point":
                bases = range(s) if pairs == "all" else [0]
                out += [Window(m, (b, s)) for b in bases]
            elif s + 1 >= MIN_CHECKPOINTS[m]:
                out.append(Window(m, tuple(range(s + 1))))
    return out


def backtest(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path], out_dir: str | Path, *,
             methods: Sequence[str] = METHODS, rank: int = 1, min_r2: float | None = None,
             norms: str = "copy", pairs: str = "all", device: str | None = None, task=None,
             sampling=None, steps: Sequence[int] | None = None, allow_pickle: bool = False,
             allow_mixed_dtypes: bool = False, overwrite: bool = False, plots: bool = True,
             progress: bool = True, backend: str = "rlextra", chunk_size: int | None = None,
             shard: tuple[int, int] | str | None = None) -> dict:
    """Run the grid, write ``out_dir`` (backtest.json, backtest.csv, plots), return the json's content.

    ``task`` (a TaskSpec or Task) adds the accuracy rows, sampled with ``sampling`` (a
    SamplingConfig) through rlextra's engine (``backend`` "hf" decodes single models with HF generate
    instead; logits rows are always the engine's), so every row is scored by one decoder. Rows: {method, b, s, target, alpha, window, weight_error, per_module,
    accuracy}; ``recommendation``: per method, the largest safe alpha and the matching n/m.

    ``shard`` (i, N) or "i/N": only the tensors ``analyze weights --shard`` gives shard i, with each
    row's squared-error sums kept (``sums``) so that ``merge_backtests`` adds the shards exactly; a
    shard has no recommendation and no accuracy rows (those need the whole model).
    """
    methods = list(dict.fromkeys(canonical(m) for m in methods))
    for m in methods:
        if m not in METHODS:
            raise RLExtraError(f"unknown method '{m}' in --methods ({', '.join(METHODS)})")
        check_method(m, MIN_CHECKPOINTS[m], rank=rank, min_r2=min_r2 if m == "lsq" else None)
    if pairs not in ("all", "first"):
        raise RLExtraError(f"unknown --pairs '{pairs}' (all, first)")
    if norms not in NORMS:
        raise RLExtraError(f"unknown --norms '{norms}' (copy, extrapolate)")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise RLExtraError(f"--chunk-size {chunk_size}: must be at least 1")
    if backend not in ("rlextra", "hf"):
        raise RLExtraError(f"--backend {backend}: the backtest scores with rlextra (the default) or hf")
    dev = None if device is None else check_device(device)  # None: the CPU (and no torch import for it)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is not None and task is not None:
        raise RLExtraError("--shard with --task: accuracy rows need the whole model; shard the weight errors "
                           "only, merge them, and score accuracy in one run")
    items = [] if isinstance(checkpoints, CheckpointSeries) else \
        [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    given = [Path(str(c).split("=", 1)[-1]) for c in items]  # a run folder too: never written into
    series = checkpoints if isinstance(checkpoints, CheckpointSeries) else load_series(
        checkpoints, steps, allow_pickle=allow_pickle, allow_mixed_dtypes=allow_mixed_dtypes)
    k = len(series)
    if k < 3:
        raise RLExtraError(f"a backtest needs at least 3 checkpoints (2 to predict from, 1 to check), got {k}")
    windows = plan_windows(k, methods, pairs)
    if not windows:
        raise RLExtraError(f"no method of {methods} has a window on {k} checkpoints (lsq needs 4)")
    inputs = series.input_folders + [p for p in given if p.exists()] + task_inputs(task)
    with atomic_output_dir(Path(out_dir), inputs=inputs, overwrite=overwrite) as tmp:
        names = [n for n in series.names if series.newest.tensors[n].is_float]
        if shard is not None and shard[1] > 1:
            owner = assign_shards({n: series.newest.tensors[n].numel for n in names}, shard[1])
            names = [n for n in names if owner[n] == shard[0]]
        rows = _weight_rows(series, windows, rank, min_r2, norms, dev, progress,
                            chunk_size, names=names,
                            keep_sums=shard is not None)
        result = {"rlextra_version": rlextra.__version__, "steps": series.steps,
                  "inputs": [str(c.path.resolve()) for c in series.checkpoints],
                  "methods": methods, "options": {"rank": rank, "min_r2": min_r2, "norms": norms,
                                                  "pairs": pairs, "device": device}}
        if shard is not None:
            result["shard"] = {"index": shard[0], "count": shard[1],
                               "tensors": {n: series.newest.tensors[n].numel for n in names}}
        if task is not None:
            result["real_accuracy"] = _accuracy_rows(series, rows, task, sampling, rank, min_r2, norms,
                                                     device, progress, backend)
            result["sampling"] = (sampling.to_dict() if sampling is not None else None)
            result["backend"] = backend
        result["rows"] = rows
        result["recommendation"] = recommend(rows, result.get("real_accuracy")) if shard is None else None
        (tmp / "backtest.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        (tmp / "backtest.csv").write_text(rows_csv(rows))
        if plots:
            from rlextra.extrapolate.backtest_plots import plot_backtest_accuracy, plot_backtest_error

            plot_backtest_error(rows, tmp / "weight_error.png")
            if task is not None:
                plot_backtest_accuracy(rows, result["real_accuracy"], tmp / "accuracy.png")
    return result


def _weight_rows(series: CheckpointSeries, windows: list[Window], rank: int, min_r2: float | None,
                 norms: str, device, progress: bool, chunk_size: int | None = None,
                 names: Sequence[str] | None = None, keep_sums: bool = False) -> list[dict]:
    """One pass over the tensors; every window and later target accumulates squared errors.

    Two-point and lsq are elementwise: each tensor streams chunk by chunk (K chunks in memory, all
    rows served by one read), so memory does not grow with the largest tensor. low-rank needs whole
    matrices: for its windows the tensor is read whole, once. torch is imported only for the paths
    that run in it (low-rank, --device, no numba): the compiled CPU pass needs none."""
    steps = series.steps
    k = len(steps)
    targets = {w: list(range(w.idx[-1] + 1, k)) for w in windows}
    n_rows = sum(len(t) for t in targets.values())
    num = {(w, t): dict.fromkeys(MODULE_TYPES, 0.0) for w in windows for t in targets[w]}
    den = {(w, t): dict.fromkeys(MODULE_TYPES, 0.0) for w in windows for t in targets[w]}
    if names is None:
        names = [n for n in series.names if series.newest.tensors[n].is_float]

    def accumulate(name, kind, ws, vals, start=None, stop=None):
        """Squared errors of every window in ws on these values (a chunk, or the whole tensor)."""
        import torch

        dist: dict[tuple[int, int], float] = {}  # ||W_t - W_s||^2, once per (s, t)
        for w in ws:
            copy = norms == "copy" and is_norm_weight(name)
            wp = None if copy else WindowPredictor(
                w.method, [steps[i] for i in w.idx], [vals[i] for i in w.idx], rank=rank,
                min_r2=min_r2 if w.method == "lsq" else None, check=False)
            s_idx = w.idx[-1]
            for t in targets[w]:
                pred = vals[s_idx] if wp is None else wp.at(steps[t])
                e = float(torch.linalg.vector_norm(pred - vals[t], dtype=torch.float64)) ** 2
                if (s_idx, t) not in dist:
                    dist[s_idx, t] = float(torch.linalg.vector_norm(vals[t] - vals[s_idx], dtype=torch.float64)) ** 2
                d = dist[s_idx, t]
                if not (math.isfinite(e) and math.isfinite(d)):  # NaN/Inf in an input, or overflow
                    refs = series.refs(name)
                    raise_nonfinite(refs, steps, start or 0, refs[0].numel if stop is None else stop,
                                    otherwise=f"values too large to fit (overflow) in the {w.method} prediction "
                                              f"of step {steps[t]}")
                num[w, t][kind] += e
                den[w, t][kind] += d

    streamed = [w for w in windows if REGISTRY[w.method].chunked]
    whole = [w for w in windows if not REGISTRY[w.method].chunked]
    compiled = (fused.AVAILABLE and device is None and bool(streamed)
                and (min_r2 is None or all(w.method != "lsq" for w in streamed)))
    in_torch = bool(whole) or not compiled
    if in_torch:
        import torch
    with tqdm(total=len(names) * n_rows, unit="pred", desc="backtest", disable=not progress) as bar, \
            (torch.no_grad() if in_torch else contextlib.nullcontext()):
        if compiled:  # every streamed row of every tensor, on all cores; summed in the order of names
            copied = {n: norms == "copy" and is_norm_weight(n) for n in names}  # from s, as extrapolate does
            tables = {copy: _combinations(steps, streamed, targets, copy) for copy in set(copied.values())}
            with ThreadPoolExecutor(max_workers=available_cores()) as pool:
                for name, sums in zip(names, pool.map(
                        lambda n: _combination_sums(series, n, tables[copied[n]], chunk_size), names)):
                    kind = module_type(name)
                    for (w, t), (q_num, q_den) in tables[copied[name]].keys.items():
                        num[w, t][kind] += float(sums[q_num])
                        den[w, t][kind] += float(sums[q_den])
                    if not whole:
                        bar.update(n_rows)
        if whole or not compiled:
            for name in names:
                kind = module_type(name)
                refs = series.refs(name)
                if streamed and not compiled:
                    for start, stop in chunk_ranges(refs[0].numel, chunk_size or BACKTEST_CHUNK_SIZE):
                        vals = [to_torch(r.read_raw(start, stop), r.dtype).to(device=device, dtype=torch.float32)
                                for r in refs]  # fp32 on --device (read on the CPU), as low-rank
                        accumulate(name, kind, streamed, vals, start, stop)
                if whole:
                    vals = [read_tensor(r, device, step) for r, step in zip(refs, steps)]
                    accumulate(name, kind, whole, vals)
                    del vals
                bar.update(n_rows)
    rows = []
    for w in windows:
        b, s = steps[w.idx[0]], steps[w.idx[-1]]
        for t in targets[w]:
            rows.append({"method": w.method, "b": b, "s": s, "target": steps[t], "alpha": (steps[t] - b) / (s - b),
                         "window": [steps[i] for i in w.idx], **_errors(num[w, t], den[w, t])})
            if keep_sums:
                rows[-1]["sums"] = {"num": num[w, t], "den": den[w, t]}
    return rows


@dataclass
class _Combinations:
    """Every streamed row of a backtest as fixed combinations of checkpoints, packed for
    ``fused.combo_sq_sums``: ``keys[(window, t)]`` = (q of prediction minus target, q of the
    distance from s to the target); combination q is sum_p coef[q, p] * checkpoint index[q, p]."""

    keys: dict
    index: np.ndarray
    coef: np.ndarray
    counts: np.ndarray


def _combinations(steps: Sequence[float], windows: list[Window], targets: dict, copy: bool) -> _Combinations:
    """Each row's prediction is linear in the checkpoints (two-point: 1 - alpha and alpha; lsq: the
    line's weights; a copied norm: the window's last), so its error and its distance are fixed
    combinations; the same for every tensor of one kind (norms copied or not), so built once."""
    combos: dict[tuple, int] = {}
    rows: list[dict[int, float]] = []

    def combo(weights: dict[int, float]) -> int:
        key = tuple(sorted((i, round(c, 15)) for i, c in weights.items() if c != 0.0))
        if key not in combos:
            combos[key] = len(rows)
            rows.append({i: c for i, c in weights.items() if c != 0.0})
        return combos[key]

    keys = {}
    for w in windows:
        s_idx = w.idx[-1]
        for t in targets[w]:
            if copy:
                pred = {s_idx: 1.0}
            elif w.method == "two-point":
                b = w.idx[0]
                alpha = (steps[t] - steps[b]) / (steps[s_idx] - steps[b])
                pred = {b: 1.0 - alpha, s_idx: alpha}
            else:  # lsq: the line through the window, read at t
                pred = dict(zip(w.idx, line_weights([steps[i] for i in w.idx], steps[t]).tolist()))
            err = dict(pred)
            err[t] = err.get(t, 0.0) - 1.0
            keys[w, t] = (combo(err), combo({t: 1.0, s_idx: -1.0}))
    width = max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    coef = np.zeros((len(rows), width))
    for q, r in enumerate(rows):
        index[q, :len(r)] = list(r)
        coef[q, :len(r)] = list(r.values())
    return _Combinations(keys, index, coef, np.array([len(r) for r in rows], dtype=np.int64))


def _combination_sums(series: CheckpointSeries, name: str, table: _Combinations,
                      chunk_size: int | None = None) -> np.ndarray:
    """One tensor's sum of squares of every combination of ``table``, one compiled float64 pass per chunk."""
    refs = series.refs(name)
    numel = refs[0].numel
    sums = np.zeros(len(table.counts))
    chunk = chunk_size or auto_chunk_size(len(series.steps))
    with BlockReader(refs, max(1, min(chunk, numel)), compact=True, bf16_bits=True) as blocks:
        for start, stop in chunk_ranges(numel, chunk):
            fused.combo_sq_sums(blocks.read(start, stop), table.index, table.coef, table.counts, sums)
    if not np.isfinite(sums).all():  # NaN/Inf in an input, or overflow
        raise_nonfinite(refs, series.steps, 0, numel, otherwise="values too large to fit (overflow) in a prediction")
    return sums


def _errors(n: dict, d: dict) -> dict:
    """A row's weight error, overall and per module type, from its squared-error sums."""
    return {"weight_error": _ratio(sum(n.values()), sum(d.values())),
            "per_module": {m: _ratio(n[m], d[m]) for m in MODULE_TYPES if d[m] > 0 or n[m] > 0}}


def merge_backtests(shard_dirs: Sequence[str | Path], out_dir: str | Path, *, plots: bool = True,
                    overwrite: bool = False) -> dict:
    """Add the squared-error sums of ``backtest --shard i/N`` outputs into the backtest of one run:
    the same rows, recommendation and files. The shards must be one split of one series: the same
    steps, inputs, methods and options, every index once, disjoint tensors, each where ``--shard``
    puts it."""
    from rlextra.io import read_json

    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise RLExtraError("no shard folders given")
    parts = []
    for d in dirs:
        res = read_json(d / "backtest.json", "backtest report")
        sh = res.get("shard") if isinstance(res, dict) else None
        if not (isinstance(sh, dict) and isinstance(sh.get("index"), int) and isinstance(sh.get("count"), int)
                and isinstance(sh.get("tensors"), dict) and all("sums" in r for r in res.get("rows", []))):
            raise RLExtraError(f"{d}: not a 'backtest --shard' output (no shard, tensors or sums)")
        parts.append((d, res))
    first = parts[0][1]
    count = first["shard"]["count"]
    seen: dict[int, Path] = {}
    where: dict[str, Path] = {}
    for d, res in parts:
        for key in ("steps", "inputs", "methods", "options"):
            if res.get(key) != first.get(key):
                raise RLExtraError(f"{d}: '{key}' differs from {parts[0][0]}; not shards of one backtest")
        sh = res["shard"]
        if sh["count"] != count or not 0 <= sh["index"] < count:
            raise RLExtraError(f"{d}: shard {sh['index']}/{sh['count']} is not of the split into {count}")
        if sh["index"] in seen:
            raise RLExtraError(f"{d}: shard {sh['index']} given twice (also {seen[sh['index']]})")
        seen[sh["index"]] = d
        if [(r["method"], r["window"], r["target"]) for r in res["rows"]] != \
                [(r["method"], r["window"], r["target"]) for r in first["rows"]]:
            raise RLExtraError(f"{d}: its rows differ from {parts[0][0]}'s")
        for name in sh["tensors"]:
            if name in where:
                raise RLExtraError(f"{d}: tensor '{name}' is also in {where[name]}; shards hold disjoint tensors")
            where[name] = d
        for r in res["rows"]:  # sums of squares: finite numbers >= 0 for every module type
            for part in ("num", "den"):
                got = (r["sums"].get(part) or {}) if isinstance(r["sums"], dict) else {}
                bad = next((m for m in MODULE_TYPES if not (isinstance(got.get(m), (int, float))
                                                            and not isinstance(got.get(m), bool)
                                                            and math.isfinite(got[m]) and got[m] >= 0)), None)
                if bad is not None:
                    raise RLExtraError(f"{d / 'backtest.json'}: row {r['method']} {r['window']} -> {r['target']}: "
                                       f"sums.{part}.{bad} is {got.get(bad)!r}, not a sum of squares (a finite "
                                       "number >= 0)")
    if len(seen) != count:
        first_missing = next(i for i in range(len(seen) + 1) if i not in seen)
        raise RLExtraError(f"shard {first_missing}/{count} is missing from the merge")
    sizes = {n: numel for _, res in parts for n, numel in res["shard"]["tensors"].items()}
    owner = assign_shards(sizes, count)
    for d, res in parts:
        for name in res["shard"]["tensors"]:
            if owner[name] != res["shard"]["index"]:
                raise RLExtraError(f"{d}: tensor '{name}' belongs to shard {owner[name]}/{count}; was it relabelled?")
    rows = []
    for i, row in enumerate(first["rows"]):
        num = {m: sum(res["rows"][i]["sums"]["num"][m] for _, res in parts) for m in MODULE_TYPES}
        den = {m: sum(res["rows"][i]["sums"]["den"][m] for _, res in parts) for m in MODULE_TYPES}
        rows.append({k: v for k, v in row.items() if k not in ("sums", "weight_error", "per_module")}
                    | _errors(num, den))
    result = {k: v for k, v in first.items() if k not in ("shard", "rows", "recommendation")}
    result |= {"merged_from": [str(d) for d in dirs], "rows": rows, "recommendation": recommend(rows)}
    with atomic_output_dir(Path(out_dir), inputs=dirs, overwrite=overwrite) as tmp:
        (tmp / "backtest.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        (tmp / "backtest.csv").write_text(rows_csv(rows))
        if plots:
            from rlextra.extrapolate.backtest_plots import plot_backtest_error

            plot_backtest_error(rows, tmp / "weight_error.png")
    return result


def _ratio(num: float, den: float) -> float | None:
    return float(np.sqrt(num / den)) if den > 0 else None


def _accuracy_rows(series: CheckpointSeries, rows: list[dict], task, sampling, rank: int,
                   min_r2: float | None, norms: str, device: str | None, progress: bool,
                   backend: str = "rlextra") -> dict:
    """avg@k of the real checkpoints, of each prediction, and of logits extrapolation for each
    two-point window. Every call into the evaluation code is here. A prediction is evaluated as
    ``extrapolate`` writes it (a temporary folder, in the newest input's dtype), so its accuracy
    is that of the checkpoint a user would get."""
    from rlextra.decoding import SamplingConfig, load_decoder
    from rlextra.evaluation import evaluate
    from rlextra.extrapolate.weights import extrapolate_weights
    from rlextra.tasks import TaskSpec, load_task

    sampling = sampling or SamplingConfig(k=4)
    task = load_task(task) if isinstance(task, TaskSpec) else task
    key = f"avg@{sampling.k}"
    by_step = {c.step: c for c in series.checkpoints}
    path = {c.step: c.path for c in series.checkpoints}

    def acc(models, **kw) -> float:
        """One folder through ``backend`` (rlextra's engine by default); several (with a target) through
        logits extrapolation, which is rlextra's engine: one decoder and seed for every row."""
        one = isinstance(models, (str, Path))
        return evaluate(load_decoder(models, backend=backend if one else "auto", **kw), task, sampling=sampling,
                        progress=False)["metrics"][key]

    two_point = [r for r in rows if r["method"] == "two-point"]
    total = len(path) + len(rows) + len(two_point)
    with tqdm(total=total, unit="eval", desc="backtest accuracy", disable=not progress) as bar, \
            tempfile.TemporaryDirectory(prefix="rlextra-backtest-") as scratch:
        real = {}
        for step, p in path.items():
            real[step] = acc(p)
            bar.update(1)
        for i, r in enumerate(rows):
            sub = CheckpointSeries([by_step[t] for t in r["window"]])
            out = extrapolate_weights(sub, Path(scratch) / f"p{i}", to_step=r["target"], method=r["method"],
                                      rank=rank, min_r2=min_r2 if r["method"] == "lsq" else None, norms=norms,
                                      device=device if not REGISTRY[r["method"]].chunked else None, progress=False).path
            r["accuracy"] = acc(out)
            r["accuracy_real_s"], r["accuracy_real_target"] = real[r["s"]], real[r["target"]]
            bar.update(1)
            shutil.rmtree(out, ignore_errors=True)
        for r in two_point:
            rows.append({"method": "logits", "b": r["b"], "s": r["s"], "target": r["target"], "alpha": r["alpha"],
                         "window": r["window"], "weight_error": None, "per_module": {},
                         "accuracy": acc([path[r["b"]], path[r["s"]]], to_step=r["target"],
                                         steps=[r["b"], r["s"]]),
                         "accuracy_real_s": real[r["s"]], "accuracy_real_target": real[r["target"]]})
            bar.update(1)
    return {"metric": key, "by_step": {str(s): a for s, a in real.items()}}


def recommend(rows: list[dict], real_accuracy: dict | None = None) -> dict:
    """Per method: the largest alpha up to which every row is safe (weight error < 1, and accuracy
    >= the real s's when measured); None and "not safe" when the smallest alpha already fails."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["alpha"])
        safe_alpha = None
        for alpha in sorted({r["alpha"] for r in mine}):
            if not all(_row_ok(r) for r in mine if r["alpha"] == alpha):
                break
            safe_alpha = alpha
        errors = [r["weight_error"] for r in mine if r["weight_error"] is not None]
        out[method] = {
            "max_safe_alpha": safe_alpha,
            "max_safe_n_over_m": None if safe_alpha is None else safe_alpha - 1.0,
            "verdict": "not safe" if safe_alpha is None else f"safe up to alpha {safe_alpha:.3g}",
            "rows": len(mine),
            "median_weight_error": float(np.median(errors)) if errors else None,
        }
    return out


def _row_ok(r: dict) -> bool:
    if r["weight_error"] is not None and not r["weight_error"] < 1.0:
        return False
    if r.get("accuracy") is not None and r["accuracy"] < r["accuracy_real_s"]:
        return False
    return True


CSV_FIELDS = ["method", "b", "s", "target", "alpha", "window", "weight_error"] + \
    [f"error_{m}" for m in MODULE_TYPES] + ["accuracy", "accuracy_real_s", "accuracy_real_target"]


def rows_csv(rows: list[dict]) -> str:
    """The rows as a CSV table (window as steps joined by spaces; empty cells where not measured)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        cells = {f: r.get(f) for f in CSV_FIELDS}
        cells["window"] = " ".join(str(s) for s in r["window"])
        for m in MODULE_TYPES:
            cells[f"error_{m}"] = r["per_module"].get(m)
        w.writerow({f: "" if v is None else v for f, v in cells.items()})
    return buf.getvalue()
