"""Weight extrapolation: a checkpoint at step T from checkpoints at earlier steps, without training.

Methods (``rlextra.extrapolate.methods``): two-point (the paper's), W_T = W_b + alpha (W_s - W_b),
alpha = (T - b) / (s - b); least squares over K >= 3 checkpoints, optionally gated by each
parameter's own R^2; low-rank (rank r), the top-r singular directions of the newest update moved
along their fitted line. Two-point and least squares stream chunk by chunk (two-point in fp32 as
the paper, least squares with the float64 kernel); low-rank reads one whole tensor from each of the K
checkpoints (its SVD needs the matrix), so its memory is the largest tensor times K in fp32.
Results are saved in the newest input's dtype; normalisation weights and non-float tensors are
copied from the newest checkpoint by default, as in the paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra import fused
from rlextra.checkpoints.chunks import chunk_ranges, raise_nonfinite, read_tensor, read_values
from rlextra.checkpoints.buffers import BufferPool
from rlextra.checkpoints.reader import STORAGE, decoded_is_finite, from_float64, from_torch, to_torch, torch_dtype
from rlextra.checkpoints.series import CheckpointSeries, load_series, side_files_dir
from rlextra.checkpoints.writer import StreamingSafetensorsWriter, TensorSpec, copy_side_files, parse_size
from rlextra.errors import RLExtraError
from rlextra.extrapolate.methods import WindowPredictor, check_device, check_method, line_at, line_r2
from rlextra.extrapolate.registry import FORMULAS, NORMS, REGISTRY, canonical
from rlextra.hf import is_norm_weight  # re-exported: rlextra.extrapolate.is_norm_weight
from rlextra.io import atomic_output_dir, check_output
from rlextra.linefit import LineFit, line_weights, resolve_target, two_point  # resolve_target: also re-exported
from rlextra.shards import available_cores

# elements per tensor chunk: memory only (the analysis's histograms are not involved); 1M elements
# read from each checkpoint at a time keeps per-chunk overhead small (bench/bench_checkpoints.py)
EXTRAPOLATE_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Extrapolation:
    """What ``extrapolate_weights`` wrote: the model folder and its provenance (rlextra.json)."""

    path: Path
    provenance: dict

    @property
    def method(self) -> str:
        return self.provenance["method"]

    @property
    def target_step(self) -> float:
        return self.provenance["target_step"]

    @property
    def alpha(self) -> float:
        return self.provenance["alpha"]




def extrapolate_weights(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                        out_dir: str | Path, *, to_step: float | None = None,
                        alpha: float | None = None, method: str = "auto", rank: int = 1,
                        min_r2: float | None = None, norms: str = "copy", device: str | None = None,
                        max_shard_size: str | int = "5GB", overwrite: bool = False,
                        chunk_size: int = EXTRAPOLATE_CHUNK_SIZE, steps: Sequence[int] | None = None,
                        allow_pickle: bool = False, allow_mixed_dtypes: bool = False,
                        progress: bool = True, fit: str | None = None, threads: int | None = None) -> Extrapolation:
    """Write the model at step ``to_step`` (or at ``alpha``) as a new HF folder.

    Returns an ``Extrapolation``: the folder (``.path``) and its provenance, as in rlextra.json.

    ``method``: 'two-point' (exactly 2 checkpoints), 'lsq' (3 or more), 'low-rank' (2 or more, with
    ``rank``), or 'auto' (two-point for 2, lsq for more). ``fit`` is its older name.
    ``min_r2``: with lsq, a parameter whose own R^2 is below it keeps its newest value.
    ``norms``: 'copy' (from the newest checkpoint, the paper's choice) or 'extrapolate'.
    ``device``: where the arithmetic runs (e.g. 'cuda'; default CPU): low-rank's SVD, or each streamed
    chunk's two-point or lsq arithmetic (read on the CPU, moved there and back).
    ``threads``: chunks computed at once, ahead of the writer (default: the cores this process may
    use); the output is the same bytes whatever the number.
    """
    if fit is not None:
        method = fit
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise RLExtraError(f"--threads {threads}: must be an integer >= 1")
    series = checkpoints if isinstance(checkpoints, CheckpointSeries) else load_series(
        checkpoints, steps, allow_pickle=allow_pickle, allow_mixed_dtypes=allow_mixed_dtypes)
    plan = _plan(series, out_dir, to_step=to_step, alpha=alpha, method=method, rank=rank, min_r2=min_r2,
                 norms=norms, device=device, max_shard_size=max_shard_size, overwrite=overwrite,
                 chunk_size=chunk_size)
    newest = series.newest
    specs = [TensorSpec(n, newest.tensors[n].dtype, newest.tensors[n].shape, newest.tensors[n].nbytes)
             for n in series.names]
    counts = {"extrapolated": 0, "copied_norm": 0, "copied_non_float": 0, "kept_low_r2": 0}
    method, target = plan["method"], plan["target"]
    with atomic_output_dir(Path(out_dir), inputs=plan["inputs"], overwrite=overwrite) as tmp:
        writer = StreamingSafetensorsWriter(tmp, specs, plan["max_shard_bytes"])
        total = sum(newest.tensors[s.name].numel for s in specs)
        pool = BufferPool(chunk_size)  # chunk buffers, reused once written (see BufferPool)
        with tqdm(total=total, unit="param", unit_scale=True, desc="extrapolate",
                  disable=not progress) as bar:
            def jobs():  # one callable per piece of output, in the order the writer takes them
                for spec in specs:
                    ref = newest.tensors[spec.name]
                    copy = not ref.is_float or (norms == "copy" and is_norm_weight(spec.name))
                    key = "extrapolated" if not copy else ("copied_non_float" if not ref.is_float else "copied_norm")
                    counts[key] += 1
                    if not copy and not REGISTRY[method].chunked:
                        yield partial(_whole_job, series, spec, target, rank, plan["device"])
                        continue
                    for start, stop in chunk_ranges(ref.numel, chunk_size):
                        if copy:
                            yield partial(_copy_job, ref, spec.name, start, stop, pool)
                        else:
                            yield partial(_chunk_job, series, spec, start, stop, target, plan["alpha"], method,
                                          min_r2, plan["device"], pool)

            # chunks are computed ahead on every core (torch and numpy release the GIL) and written in
            # order; low-rank reads whole tensors, so it goes one at a time to keep its memory bound
            ahead = 1 if not REGISTRY[method].chunked else available_cores() if threads is None else threads
            for name, raw, n, kept in in_order(jobs(), ahead):
                writer.write(name, raw)
                pool.give(raw)
                counts["kept_low_r2"] += kept
                bar.update(n)
        writer.close()
        copied = copy_side_files([side_files_dir(c) for c in reversed(series.checkpoints)], tmp)
        provenance = _provenance(series, plan, counts, copied, rank=rank, min_r2=min_r2, norms=norms,
                                 device=device, max_shard_size=max_shard_size, chunk_size=chunk_size)
        (tmp / "rlextra.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return Extrapolation(Path(out_dir), provenance)


def _copy_job(ref, name: str, start: int, stop: int, pool: BufferPool):
    return name, ref.read_into(start, pool.take(STORAGE[ref.dtype][0], stop - start)), stop - start, 0


def _chunk_job(series, spec, start, stop, target, alpha, method, min_r2, device, pool):
    counts = {"kept_low_r2": 0}
    raw = _extrapolate_chunk(series, spec, start, stop, target, alpha, method, min_r2, counts, device, pool)
    return spec.name, raw, stop - start, counts["kept_low_r2"]


def _whole_job(series, spec, target, rank, device):
    raw = _extrapolate_whole(series, spec, target, rank, device)
    return spec.name, raw, raw.size, 0


def in_order(jobs: Iterable[Callable], threads: int) -> Iterator:
    """The jobs' results in order, computed up to 2 x ``threads`` ahead on that many threads (so
    memory stays bounded by a few chunks); one thread: computed one by one, here."""
    if threads <= 1:
        for job in jobs:
            yield job()
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(job))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def _plan(series: CheckpointSeries, out_dir, *, to_step, alpha, method: str, rank: int, min_r2, norms: str,
          device, max_shard_size, overwrite: bool, chunk_size: int) -> dict:
    """Every check of an extrapolation, before anything is written: the output against the inputs,
    the method for this many checkpoints, the options, and the target (step and alpha)."""
    inputs = series.input_folders
    check_output(out_dir, inputs=inputs, overwrite=overwrite)
    k = len(series)
    if k < 2:
        raise RLExtraError(f"extrapolation needs at least 2 checkpoints, got {k}")
    method = canonical(method)
    if method == "auto":
        method = "two-point" if k == 2 else "lsq"
    check_method(method, k, rank=rank, min_r2=min_r2)
    if chunk_size < 1:
        raise RLExtraError(f"--chunk-size {chunk_size}: must be at least 1")
    max_shard_bytes = parse_size(max_shard_size)
    if norms not in NORMS:
        raise RLExtraError(f"unknown --norms '{norms}' (copy, extrapolate)")
    where = None if device is None else check_device(device)  # None: the CPU, without moving chunks
    target, alpha = resolve_target(series.steps, to_step, alpha)
    if not np.isfinite(target):
        raise RLExtraError(f"target step {target} is not finite")
    return {"inputs": inputs, "method": method, "max_shard_bytes": max_shard_bytes, "target": target, "alpha": alpha,
            "device": where}


def _provenance(series: CheckpointSeries, plan: dict, counts: dict, copied: list, *, rank: int, min_r2, norms: str,
                device, max_shard_size, chunk_size: int) -> dict:
    """rlextra.json: what was extrapolated from what, how, and what was copied as it was."""
    method = plan["method"]
    return {
        "rlextra_version": rlextra.__version__,
        "created_by": "rlextra extrapolate",
        "inputs": [{"step": c.step, "path": str(c.path.resolve())} for c in series.checkpoints],
        "steps": series.steps,
        "target_step": plan["target"],
        "alpha": plan["alpha"],
        "method": method,
        "method_params": {"rank": rank} if method == "low-rank" else {"min_r2": min_r2} if method == "lsq" else {},
        "formula": FORMULAS[method],
        "options": {"norms": norms, "device": device, "max_shard_size": str(max_shard_size),
                    "chunk_size": chunk_size, "dtype_source": str(series.newest.path)},
        "tensors": {"extrapolated": counts["extrapolated"], "copied_norm": counts["copied_norm"],
                    "copied_non_float": counts["copied_non_float"]},
        "params_kept_low_r2": counts["kept_low_r2"],
        "side_files": copied,
    }


def _extrapolate_whole(series: CheckpointSeries, spec: TensorSpec, target: float, rank: int,
                       device: str | None) -> np.ndarray:
    """One whole tensor by low-rank (1-D tensors: their own line), encoded and checked finite."""
    refs = series.refs(spec.name)
    values = [read_tensor(r, device, step) for r, step in zip(refs, series.steps)]
    pred = WindowPredictor("low-rank", series.steps, values, rank=rank, check=False).at(target)
    raw = from_torch(pred.reshape(-1).cpu(), spec.dtype)
    if not decoded_is_finite(raw, spec.dtype):
        raise_nonfinite(refs, series.steps, 0, refs[-1].numel,
                        otherwise=f"extrapolated value is NaN/Inf in {spec.dtype} at step {target:g} "
                                  "(alpha too large?); nothing written")
    return raw


def _extrapolate_chunk(series: CheckpointSeries, spec: TensorSpec, start: int, stop: int,
                       target: float, alpha: float, fit: str, min_r2: float | None,
                       counts: dict, device: str | None, pool: BufferPool) -> np.ndarray:
    """One chunk of one tensor at the target step, encoded in the output dtype and checked finite.

    Two-point: fp32 (fp64 for fp64 inputs) lerp, the paper's arithmetic: torch's, or on the CPU with
    numba its compiled twin (the same bytes, tested; torch is not imported). Least squares:
    the float64 streaming kernel. NaN/Inf in inputs propagates to the result, so only the
    encoded result is checked, and the inputs are scanned to name the culprit when it is not finite.
    ``device``: the chunk is read on the CPU and its arithmetic runs there (two-point: the same lerp;
    lsq: the same float64 line, as weights on the K values, see ``_lsq_on_device``).
    ``pool``: two-point reads into its buffers and, on the CPU, writes the result into one of them
    (given back by the caller once written).
    """
    refs = series.refs(spec.name)
    if fit == "two-point" and device is None and fused.AVAILABLE:
        raw = _two_point_compiled(refs, spec.dtype, start, stop, alpha, pool)
    elif fit == "two-point":
        import torch

        inputs = [r.read_into(start, pool.take(STORAGE[r.dtype][0], stop - start)) for r in refs]
        y_b, y_s = (to_torch(x, r.dtype) for x, r in zip(inputs, refs))
        # torch's bf16/fp16 lerp computes in fp32 and rounds once: the same result as the
        # fp32 path (tested), without materialising fp32 copies
        compute = y_b.dtype if refs[0].dtype == refs[1].dtype == spec.dtype and spec.dtype in ("BF16", "F16") \
            else torch.float64 if spec.dtype == "F64" else torch.float32
        y_b, y_s = y_b.to(device=device, dtype=compute), y_s.to(device=device, dtype=compute)
        if device is None and torch_dtype(spec.dtype) == compute:
            raw = pool.take(STORAGE[spec.dtype][0], stop - start)  # the line straight into the output
            two_point(y_b, y_s, alpha, out=to_torch(raw, spec.dtype))
        else:
            raw = from_torch(two_point(y_b, y_s, alpha).cpu(), spec.dtype)
        for x in inputs:
            pool.give(x)
    elif device is not None:
        raw = from_float64(_lsq_on_device(refs, series.steps, start, stop, target, min_r2, counts, device),
                           spec.dtype)
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


def _two_point_compiled(refs, dtype: str, start: int, stop: int, alpha: float, pool: BufferPool) -> np.ndarray:
    """One chunk of the two-point line on the CPU, without torch: the bytes torch's lerp gives. bf16
    in and out stays bf16 storage (widened and rounded in cache); otherwise the inputs are cast to
    the compute precision (float64 for an fp64 output, else float32) as the torch path casts them."""
    n = stop - start
    inputs = [r.read_into(start, pool.take(STORAGE[r.dtype][0], n)) for r in refs]
    if refs[0].dtype == refs[1].dtype == dtype == "BF16":
        raw = fused.lerp_bf16_into(inputs[0], inputs[1], alpha, pool.take(np.uint16, n))
    else:
        compute = np.float64 if dtype == "F64" else np.float32
        a, b = (_widened(x, r.dtype, compute) for x, r in zip(inputs, refs))
        if STORAGE[dtype][0] == compute:
            raw = fused.lerp_into(a, b, alpha, pool.take(compute, n))
        else:
            raw = from_float64(fused.lerp_into(a, b, alpha, np.empty(n, compute)), dtype)
    for x in inputs:
        pool.give(x)
    return raw


def _widened(raw: np.ndarray, dtype: str, compute) -> np.ndarray:
    """Raw float storage as ``compute`` values (rounded to nearest even when narrower, as torch's .to)."""
    if dtype == "BF16":
        out = np.empty(raw.shape, np.float32)
        fused.bf16_to_float32(raw, out)
        return out if compute == np.float32 else out.astype(compute)
    return raw if raw.dtype == compute else raw.astype(compute)


def _lsq_on_device(refs, steps, start: int, stop: int, target: float, min_r2: float | None, counts: dict,
                   device) -> np.ndarray:
    """The lsq line at ``target`` on ``device``, in float64: methods' line and R^2 kernels (the ones
    WindowPredictor runs in fp32) on the float64 values, so the same line as linefit's, to rounding."""
    import torch

    ys = [torch.from_numpy(read_values(r, start, stop)).to(device) for r in refs]
    values = line_at(ys, line_weights(steps, target))
    if min_r2 is not None:
        low = line_r2(ys, steps) < min_r2  # NaN (a constant parameter) compares False: its line is flat
        values = torch.where(low, ys[-1], values)
        counts["kept_low_r2"] += int(low.sum())
    return values.cpu().numpy()
