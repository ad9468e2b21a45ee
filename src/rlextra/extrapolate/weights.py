"""Weight extrapolation: a checkpoint at step T from checkpoints at earlier steps, without training.

Two-point (the paper's method): W_T = W_b + alpha (W_s - W_b), alpha = (T - b) / (s - b).
Least squares over K >= 3 checkpoints: each parameter's fitted line evaluated at T, optionally
gated by that parameter's own R^2. Both are the line-fit kernel's ``value_at`` (two-point is the
K = 2 line). Two-point arithmetic is fp32 (as the paper), least squares float64; results are
saved in the newest input's dtype; normalisation weights and
non-float tensors are copied from the newest checkpoint by default, as in the paper.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra.checkpoints.chunks import DEFAULT_CHUNK_SIZE, chunk_ranges, raise_nonfinite, read_values
from rlextra.checkpoints.reader import decoded_is_finite, from_float64, from_torch, to_torch
from rlextra.checkpoints.series import CheckpointSeries, load_series
from rlextra.checkpoints.writer import (StreamingSafetensorsWriter, TensorSpec, atomic_output_dir,
                                        copy_side_files, parse_size)
from rlextra.errors import RLExtraError
from rlextra.linefit import LineFit, two_point

_NORM = re.compile(r"norm|(^|\.)ln(_\w*)?\.", re.IGNORECASE)


def is_norm_weight(name: str) -> bool:
    """LayerNorm/RMSNorm parameters by name (input_layernorm, model.norm, ln_f, q_norm, ...)."""
    return bool(_NORM.search(name))


def resolve_target(steps: Sequence[int], to_step: float | None, alpha: float | None) -> tuple[float, float]:
    """(T, alpha) from either; alpha is relative to the first and last steps (b, s)."""
    b, s = steps[0], steps[-1]
    if (to_step is None) == (alpha is None):
        raise RLExtraError("give exactly one of --to-step T or --alpha A")
    if to_step is not None:
        return float(to_step), (float(to_step) - b) / (s - b)
    return b + float(alpha) * (s - b), float(alpha)


def extrapolate_weights(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                        out_dir: str | Path, *, to_step: float | None = None,
                        alpha: float | None = None, fit: str = "auto", min_r2: float | None = None,
                        norms: str = "copy", max_shard_size: str | int = "5GB",
                        overwrite: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
                        steps: Sequence[int] | None = None, allow_pickle: bool = False,
                        allow_mixed_dtypes: bool = False, progress: bool = True) -> Path:
    """Write the model at step ``to_step`` (or at ``alpha``) as a new HF folder; return its path.

    ``fit``: 'two-point' (exactly 2 checkpoints), 'lsq' (3 or more), or 'auto' (by count).
    ``min_r2``: with lsq, a parameter whose own R^2 is below it keeps its newest value.
    ``norms``: 'copy' (from the newest checkpoint, the paper's choice) or 'extrapolate'.
    """
    series = checkpoints if isinstance(checkpoints, CheckpointSeries) else load_series(
        checkpoints, steps, allow_pickle=allow_pickle, allow_mixed_dtypes=allow_mixed_dtypes)
    k = len(series)
    if k < 2:
        raise RLExtraError(f"extrapolation needs at least 2 checkpoints, got {k}")
    if fit == "auto":
        fit = "two-point" if k == 2 else "lsq"
    if fit == "two-point" and k != 2:
        raise RLExtraError(f"--fit two-point takes exactly 2 checkpoints, got {k}; use --fit lsq")
    if fit == "lsq" and k < 3:
        raise RLExtraError("--fit lsq needs at least 3 checkpoints (with 2 it is two-point)")
    if fit not in ("two-point", "lsq"):
        raise RLExtraError(f"unknown --fit '{fit}' (two-point, lsq)")
    if min_r2 is not None and fit != "lsq":
        raise RLExtraError("--min-r2 needs --fit lsq (a two-point line always has R^2 = 1)")
    if norms not in ("copy", "extrapolate"):
        raise RLExtraError(f"unknown --norms '{norms}' (copy, extrapolate)")
    target, alpha = resolve_target(series.steps, to_step, alpha)
    if not np.isfinite(target):
        raise RLExtraError(f"target step {target} is not finite")

    newest = series.newest
    specs = [TensorSpec(n, newest.tensors[n].dtype, newest.tensors[n].shape, newest.tensors[n].nbytes)
             for n in series.names]
    counts = {"extrapolated": 0, "copied_norm": 0, "copied_non_float": 0, "kept_low_r2": 0}
    inputs = [c.path for c in series.checkpoints]
    with atomic_output_dir(Path(out_dir), inputs=inputs, overwrite=overwrite) as tmp:
        writer = StreamingSafetensorsWriter(tmp, specs, parse_size(max_shard_size))
        total = sum(newest.tensors[s.name].numel for s in specs)
        with tqdm(total=total, unit="param", unit_scale=True, desc="extrapolate",
                  disable=not progress) as bar:
            for spec in specs:
                ref = newest.tensors[spec.name]
                copy = not ref.is_float or (norms == "copy" and is_norm_weight(spec.name))
                for start, stop in chunk_ranges(ref.numel, chunk_size):
                    if copy:
                        writer.write(spec.name, ref.read_raw(start, stop))
                    else:
                        writer.write(spec.name, _extrapolate_chunk(series, spec, start, stop, target,
                                                                   alpha, fit, min_r2, counts))
                    bar.update(stop - start)
                key = "extrapolated" if not copy else ("copied_non_float" if not ref.is_float else "copied_norm")
                counts[key] += 1
        writer.close()
        copied = copy_side_files([c.path for c in reversed(series.checkpoints)], tmp)
        formula = ("W_T = W_b + alpha * (W_s - W_b)" if fit == "two-point" else
                   "W_T = a + b*T, per-parameter least-squares line over K checkpoints")
        provenance = {
            "rlextra_version": rlextra.__version__,
            "created_by": "rlextra extrapolate",
            "inputs": [{"step": c.step, "path": str(c.path.resolve())} for c in series.checkpoints],
            "steps": series.steps,
            "target_step": target,
            "alpha": alpha,
            "fit": fit,
            "formula": formula,
            "options": {"min_r2": min_r2, "norms": norms, "max_shard_size": str(max_shard_size),
                        "chunk_size": chunk_size, "dtype_source": str(newest.path)},
            "tensors": {"extrapolated": counts["extrapolated"], "copied_norm": counts["copied_norm"],
                        "copied_non_float": counts["copied_non_float"]},
            "params_kept_low_r2": counts["kept_low_r2"],
            "side_files": copied,
        }
        (tmp / "rlextra.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return Path(out_dir)


def _extrapolate_chunk(series: CheckpointSeries, spec: TensorSpec, start: int, stop: int,
                       target: float, alpha: float, fit: str, min_r2: float | None,
                       counts: dict) -> np.ndarray:
    """One chunk of one tensor at the target step, encoded in the output dtype and checked finite.

    Two-point: fp32 (fp64 for fp64 inputs) lerp in torch, the paper's arithmetic. Least squares:
    the float64 streaming kernel. NaN/Inf in inputs propagates to the result, so only the
    encoded result is checked, and the inputs are scanned to name the culprit when it is not finite.
    """
    import torch

    refs = series.refs(spec.name)
    if fit == "two-point":
        y_b, y_s = (to_torch(r.read_raw(start, stop), r.dtype) for r in refs)
        if not (refs[0].dtype == refs[1].dtype == spec.dtype and spec.dtype in ("BF16", "F16")):
            compute = torch.float64 if spec.dtype == "F64" else torch.float32
            y_b, y_s = y_b.to(compute), y_s.to(compute)
        # torch's bf16/fp16 lerp computes in fp32 and rounds once: the same result as the
        # fp32 path (tested), without materialising fp32 copies
        raw = from_torch(two_point(y_b, y_s, alpha), spec.dtype)
    else:
        lf = LineFit(series.steps, stop - start)
        for ref in refs:
            lf.add(read_values(ref, start, stop))
        res = lf.result()
        values = res.value_at(target)
        if min_r2 is not None:
            low = res.r2() < min_r2  # NaN (constant parameter) compares False: its line is flat anyway
            values[low] = lf.last[low]
            counts["kept_low_r2"] += int(low.sum())
        raw = from_float64(values, spec.dtype)
    if not decoded_is_finite(raw, spec.dtype):  # NaN, Inf and overflow all survive the cast
        raise_nonfinite(refs, series.steps, start, stop,
                        otherwise=f"extrapolated value is NaN/Inf in {spec.dtype} at step {target:g} "
                                  "(alpha too large?); nothing written")
    return raw
