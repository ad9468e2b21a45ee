"""``rlextra watch``: the linearity monitor for trainers that run as separate programs (verl).

It follows a run folder as checkpoints appear (TRL ``checkpoint-N``, verl
``global_step_N/actor/huggingface``, any step-named folder), takes a checkpoint only once it is
complete, reads the sampled entries of each new checkpoint once (``rlextra.sampling``: the entries
``analyze weights --sample F --seed S`` reads), and after each one replaces the report folder
atomically with:

* ``weights.json`` (and the rest of ``analyze weights``' files): the sampled analysis of every
  checkpoint so far, the same report ``analyze weights RUN --sample F --seed S`` writes;
* ``linearity.jsonl``: one row per checkpoint, the in-flight row of the monitor
  (``rlextra.extrapolate.inflight``) over the last ``window`` checkpoints, with its
  ``lr_headroom`` (``rlextra.extrapolate.headroom``, rlextra's heuristic: the learning-rate
  multiplier the path has room for, and its evidence);
* ``backtest.json``: every in-flight prediction (method, alpha, b, s, target, weight error) and,
  per method, the largest alpha whose errors all stayed below 1;
* ``linearity_vs_step.png``: window R^2, in-flight weight error and lr headroom against the step.

Memory: the sampled entries of every checkpoint, 4 bytes each per checkpoint (8 for float64
checkpoints); at the default 0.1% sample a 7B model is about 7 M entries, 28 MB per checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rlextra.checkpoints.chunks import DEFAULT_CHUNK_SIZE, read_values
from rlextra.checkpoints.fsdp_shards import checkpoint_saved
from rlextra.checkpoints.series import (Checkpoint, CheckpointSeries, index_model_dir, resolve_model_dir,
                                        step_from_name, validate_series)
from rlextra.errors import RLExtraError
from rlextra.extrapolate.headroom import describe
from rlextra.extrapolate.inflight import DEFAULT_ALPHAS, INFLIGHT_METHODS, InflightWindow
from rlextra.io import atomic_output_dir, check_output, check_signal, interruptible
from rlextra.sampling import check_seed, pick_chunks, sample_indices

TRAINER_MARKER = "trainer_state.json"  # written last by the HF/TRL Trainer's checkpoint save


def complete_checkpoints(run: Path, *, allow_pickle: bool = False,
                         skipped: dict[str, str] | None = None) -> list[Checkpoint]:
    """The checkpoints in ``run`` that are complete now, by step; ``skipped`` (when given) receives the
    others, folder -> why.

    Complete: the weights' headers and sizes check out (every shard of an index present, no
    truncated tensor), ``config.json`` is there, and a Trainer checkpoint has its
    ``trainer_state.json`` (the Trainer writes it after the weights), unless no checkpoint of the run
    has one (folders written by ``save_pretrained``). A checkpoint still being written fails one of
    these and is taken on a later look.
    """
    if not run.is_dir():
        raise RLExtraError(f"{run}: no such run folder")
    skipped = {} if skipped is None else skipped
    candidates = []
    for child in sorted(run.iterdir()):
        step = step_from_name(child) if child.is_dir() else None
        if step is None:
            continue
        try:
            candidates.append((step, child, *resolve_model_dir(child)))
        except RLExtraError as exc:
            skipped[str(child)] = str(exc)
    marked = any(layout == "trainer" and (folder / TRAINER_MARKER).is_file() for _, _, folder, layout in candidates)
    found = []
    for step, child, folder, layout in candidates:
        if layout == "verl-fsdp":
            waiting = checkpoint_saved(folder, run, step)
        else:
            waiting = None if (folder / "config.json").is_file() else "waiting for config.json"
        if waiting:
            skipped[str(child)] = waiting
            continue
        if marked and layout == "trainer" and not (folder / TRAINER_MARKER).is_file():
            skipped[str(child)] = f"waiting for {TRAINER_MARKER} (the Trainer writes it last)"
            continue
        try:
            tensors = index_model_dir(folder, allow_pickle=allow_pickle)
        except RLExtraError as exc:
            skipped[str(child)] = str(exc)
            continue
        if tensors:
            found.append(Checkpoint(step, folder, tensors, layout))
        else:
            skipped[str(child)] = "no weights"
    return sorted(found, key=lambda c: c.step)


@dataclass
class WatchState:
    """What watch keeps between checkpoints: the processed checkpoints and their sampled entries."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    index: dict[str, np.ndarray] = field(default_factory=dict)  # name -> sorted sampled flat indices
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> one vector per checkpoint
    window: InflightWindow = field(default_factory=lambda: InflightWindow(8))  # the monitor's window class
    skipped: dict[str, str] = field(default_factory=dict)  # folder -> why it is not in the report (newest look)

    @property
    def rows(self) -> list[dict]:
        return self.window.rows

    def series(self) -> CheckpointSeries:
        return CheckpointSeries(list(self.checkpoints))


def read_checkpoint(state: WatchState, cp: Checkpoint, sample: float, seed: int, chunk_size: int) -> None:
    """Read the sampled entries of one new checkpoint (once) and append them to the state."""
    if not state.checkpoints:
        state.names = sorted(n for n, t in cp.tensors.items() if t.is_float)
        if not state.names:
            raise RLExtraError(f"{cp.path}: no floating-point tensors to analyse")
        state.index = {n: sample_indices(n, cp.tensors[n].numel, sample, seed) for n in state.names}
    trial = CheckpointSeries(state.checkpoints[-1:] + [cp])
    validate_series(trial, allow_mixed_dtypes=True)  # names and shapes as the first checkpoint's
    for name in state.names:
        ref, idx = cp.tensors[name], state.index[name]
        parts = [read_values(ref, start, stop, idx[lo:hi] - start)
                 for start, stop, lo, hi in pick_chunks(idx, chunk_size)]
        vec = np.concatenate(parts) if parts else np.zeros(0)
        if not np.isfinite(vec).all():
            raise RLExtraError(f"{ref.file}: tensor '{name}' (step {cp.step}) contains NaN or Inf")
        keep = np.float64 if ref.dtype == "F64" else np.float32  # exact for every other float dtype
        state.values.setdefault(name, []).append(vec.astype(keep))
    state.checkpoints.append(cp)


def inflight_row(state: WatchState) -> dict | None:
    """The newest checkpoint's sample into the window, and the window's row (None before 3)."""
    cp = state.checkpoints[-1]
    state.window.add(cp.step, {n: v[-1] for n, v in state.values.items()})  # the same arrays, not copies
    if not state.window.ready():
        return None
    row = state.window.row()
    state.window.record(row)
    return row


def backtest_summary(rows: Sequence[dict]) -> dict:
    """Every in-flight prediction, and per method the largest alpha whose errors all stayed below 1."""
    preds = [{"method": m, "target": r["step"], **{k: e[k] for k in ("alpha", "b", "s", "weight_error")}}
             for r in rows for m, entries in r["backtest_ladder"].items() for e in entries]
    recommendation = {}
    for method in INFLIGHT_METHODS:
        mine = [p for p in preds if p["method"] == method and p["weight_error"] is not None]
        safe = None
        for alpha in sorted({p["alpha"] for p in mine}):
            if all(p["weight_error"] < 1 for p in mine if p["alpha"] <= alpha):
                safe = alpha
            else:
                break
        recommendation[method] = {"alpha": safe, "n_over_m": None if safe is None else safe - 1,
                                  "n_predictions": len(mine)}
    return {"predictions": preds, "recommendation": recommendation}


def write_report(state: WatchState, out: Path, *, sample: float, seed: int, chunk_size: int, plots: bool,
                 inputs: Sequence[Path], overwrite: bool) -> dict:
    """Replace ``out`` atomically with the report of every checkpoint processed so far."""
    from rlextra.analysis.report import write_weight_files
    from rlextra.analysis.weights import example_tensors, stream_weight_stats, weight_report

    series = state.series()
    options = {"sample": sample, "seed": seed, "min_change": None, "min_distinct": None,
               "only_weights": False, "chunk_size": chunk_size}
    report = None
    if len(series) >= 3:
        stats = stream_weight_stats(series, state.names, sample=sample, seed=seed, chunk_size=chunk_size,
                                    example_names=example_tensors(state.names),
                                    sampled=lambda name, k, lo, hi: state.values[name][k][lo:hi].astype(np.float64))
        skipped = [n for n in series.names if n not in set(state.names)]
        report, accumulators = weight_report(series, stats, options, skipped=skipped)
    with atomic_output_dir(out, inputs=inputs, overwrite=overwrite) as tmp:
        if report is not None:
            write_weight_files(report, accumulators, tmp, plots=plots)
        (tmp / "linearity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state.rows))
        (tmp / "backtest.json").write_text(json.dumps(backtest_summary(state.rows), indent=1) + "\n")
        (tmp / "watch.json").write_text(json.dumps({
            "steps": series.steps, "checkpoints": [str(c.path) for c in series.checkpoints],
            "sample": sample, "seed": seed, "n_sampled": int(sum(len(i) for i in state.index.values())),
            "lr_headroom": state.rows[-1]["lr_headroom"] if state.rows else None,
            "skipped": [{"path": k, "why": v} for k, v in sorted(state.skipped.items())]},
            indent=1) + "\n")
        if plots and state.rows:
            from rlextra.analysis.plots import plot_linearity_vs_step

            plot_linearity_vs_step(state.rows, tmp / "linearity_vs_step.png")
    return report or {}


def watch(run: str | Path, out_dir: str | Path, *, sample: float = 0.001, seed: int = 0, window: int = 8,
          alphas: Sequence[float] = DEFAULT_ALPHAS, once: bool = False, until_step: int | None = None,
          poll_seconds: float = 30.0, chunk_size: int = DEFAULT_CHUNK_SIZE, plots: bool = True,
          progress: bool = True, overwrite: bool = False, allow_pickle: bool = False,
          max_polls: int | None = None) -> dict:
    """Follow ``run``, updating ``out_dir`` after each new complete checkpoint; return the last watch.json.

    ``once`` processes what is there and returns; ``until_step`` returns after the first checkpoint
    at a step >= N; otherwise it looks every ``poll_seconds`` until interrupted (Ctrl-C or SIGTERM
    leave the last complete report). ``max_polls`` bounds the number of looks (tests).
    """
    run = Path(run)
    if not (0 < sample <= 1):
        raise RLExtraError(f"--sample must be in (0, 1], got {sample}")
    check_seed(seed)
    if not (isinstance(window, int) and window >= 3):
        raise RLExtraError(f"--window {window}: must be an integer >= 3")
    if not (math.isfinite(poll_seconds) and poll_seconds > 0):
        raise RLExtraError(f"--poll-seconds {poll_seconds}: must be a number > 0")
    if until_step is not None and until_step < 0:
        raise RLExtraError(f"--until-step {until_step}: must be >= 0")
    if chunk_size < 1:
        raise RLExtraError(f"--chunk-size must be at least 1, got {chunk_size}")
    if not run.is_dir():
        raise RLExtraError(f"{run}: no such run folder")
    out = check_output(out_dir, inputs=[run], overwrite=overwrite)
    state = WatchState(window=InflightWindow(window, alphas))
    written = False
    polls = 0
    said: dict[str, str] = {}
    from tqdm.auto import tqdm

    with interruptible(), tqdm(desc="watch", unit="ckpt", disable=not progress) as bar:
        while True:  # Ctrl-C / SIGTERM unwind from here; the last report written stays (atomic)
            skipped: dict[str, str] = {}
            ready = complete_checkpoints(run, allow_pickle=allow_pickle, skipped=skipped)
            last = state.checkpoints[-1].step if state.checkpoints else None
            taken = {x.path for x in state.checkpoints}
            for c in ready:
                if last is not None and c.step < last and c.path not in taken:
                    skipped[str(c.path)] = f"step {c.step} appeared after step {last} was processed; watch takes " \
                                           "steps in order (analyze weights reads the whole series)"
            for path, why in skipped.items():
                if said.get(path) != why:  # each folder and reason once, on stderr and in the report
                    print(f"rlextra watch: skipped {path}: {why}", file=sys.stderr)
            said.update(skipped)
            state.skipped = {p: w for p, w in said.items() if p in skipped}
            new = [c for c in ready if last is None or c.step > last]
            for cp in new:
                read_checkpoint(state, cp, sample, seed, chunk_size)
                row = inflight_row(state)
                write_report(state, out, sample=sample, seed=seed, chunk_size=chunk_size, plots=plots,
                             inputs=[run], overwrite=overwrite or written)
                written = True
                bar.update(1)
                bar.set_postfix(step=cp.step, **({"mean_r2": f"{row['mean_r2']:.3f}",
                                                  "headroom": describe(row["lr_headroom"])} if row else {}))
                if until_step is not None and cp.step >= until_step:
                    return _summary(state, out)
            polls += 1
            check_signal()  # a Ctrl-C whose exception Python swallowed stops the watch here
            if once or (max_polls is not None and polls >= max_polls):
                if not state.checkpoints:
                    raise RLExtraError(f"{run}: no complete checkpoint found")
                return _summary(state, out)
            time.sleep(poll_seconds)


def _summary(state: WatchState, out: Path) -> dict:
    return {"output": str(out), "steps": [c.step for c in state.checkpoints], "rows": state.rows}
