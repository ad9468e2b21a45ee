"""Weight-space linearity: R^2 of each scalar parameter's line over training steps.

Exact over every parameter by default, streamed tensor by tensor and chunk by chunk through the
line-fit kernel. Sampling, the paper's filters (min-change: max - min > 1e-4, min-distinct: at
least 4 distinct values) and ``only_weights`` (only tensors named ``*.weight``, as the paper's
script selects them: biases are left out) are opt-in and recorded in the report. ``--shard i/N`` analyses a disjoint, size-balanced subset of tensors;
``merge_weight_reports`` combines shards into the same report a single run writes.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra import fused
from rlextra.analysis.report import FINE_BINS, finalize_report, tensor_summary, write_weight_files
from rlextra.shards import assign_shards, available_cores, parse_shard  # noqa: F401 (re-exported)
from rlextra.checkpoints.chunks import (DEFAULT_CHUNK_SIZE, BlockReader, as_float, auto_chunk_size, chunk_ranges,
                                        raise_nonfinite, read_values)
from rlextra.checkpoints.read_meter import ReadMeter
from rlextra.checkpoints.series import CheckpointSeries, load_series
from rlextra.checkpoints.writer import StreamingSafetensorsWriter, TensorSpec, parse_size
from rlextra.errors import RLExtraError
from rlextra.hf import resolve_device
from rlextra.io import atomic_output_dir, check_output
from rlextra.linefit import LineFit
from rlextra.sampling import check_seed, pick_chunks, sample_indices  # noqa: F401  (re-exported: rlextra.analysis.weights.sample_indices)

N_EXAMPLE_TENSORS = 6
N_CANDIDATES = 8


@dataclass
class _TensorStats:
    """Running sums for one tensor; exact (sums, counts) or binned at 1e-4 (histogram)."""

    n_fitted: int = 0
    n_constant: int = 0
    n_filtered: int = 0
    n_analyzed: int = 0
    sum_r2: float = 0.0
    n_above: int = 0
    sq_first: float = 0.0
    sq_delta: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(FINE_BINS, dtype=np.int64))

    def add(self, r2: np.ndarray, keep: np.ndarray, first: np.ndarray, last: np.ndarray) -> None:
        finite = np.isfinite(r2)
        self.n_fitted += r2.size
        self.n_constant += int((~finite).sum())
        use = finite & keep
        self.n_filtered += int((finite & ~keep).sum())
        vals = r2[use]
        self.n_analyzed += vals.size
        self.sum_r2 += float(vals.sum())
        self.n_above += int((vals > 0.7).sum())
        self.hist += fine_histogram(vals)
        self.sq_first += float(np.dot(first, first))
        delta = last - first
        self.sq_delta += float(np.dot(delta, delta))


def fine_histogram(r2: np.ndarray) -> np.ndarray:
    """Counts of r2 values in FINE_BINS equal bins over [0, 1] (1.0 falls in the last bin)."""
    idx = np.minimum((r2 * FINE_BINS).astype(np.int64), FINE_BINS - 1)
    return np.bincount(idx, minlength=FINE_BINS)


def example_tensors(names: Sequence[str]) -> list[str]:
    """Evenly spaced tensors over the whole model, whichever shard runs them."""
    if not names:
        return []
    picks = np.linspace(0, len(names) - 1, min(N_EXAMPLE_TENSORS, len(names))).round().astype(int)
    return [names[i] for i in sorted(set(picks.tolist()))]


def analyze_weights(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                    out_dir: str | Path | None = None, *, steps: Sequence[int] | None = None,
                    sample: float | None = None, seed: int = 0, min_change: float | None = None,
                    min_distinct: int | None = None, chunk_size: int | None = None,
                    shard: tuple[int, int] | str | None = "auto", plots: bool = True,
                    progress: bool = True, overwrite: bool = False, allow_pickle: bool = False,
                    allow_mixed_dtypes: bool = False, save_maps: bool = False, only_weights: bool = False,
                    threads: int | None = None, device: str | None = None) -> dict:
    """Fit a line to every scalar parameter over the series; return (and write) weights.json.

    With out_dir, writes weights.json, weights.csv, accumulators.json (for merging shards) and
    PNG plots into it, atomically. ``save_maps`` adds every parameter's own R^2 and slope (per
    step) as ``r2.safetensors`` and ``slope.safetensors`` (float32, the model's tensor names and
    shapes; R^2 is NaN where a parameter never moved), streamed like the analysis itself.
    ``shard``: (i, N) or 'i/N' analyses shard i of N (tensors split by size); 'auto' (the default)
    takes it from RANK/WORLD_SIZE when launched by torchrun/accelerate with more than one process,
    each rank then writing into ``out_dir/shard-IIIII-of-NNNNN`` (merge them with
    ``merge_weight_reports``); None analyses everything.
    ``chunk_size``: elements per tensor and checkpoint read at a time; default sized so that one
    chunk of all K checkpoints (float64) stays in a core's cache (``auto_chunk_size``). With
    ``sample``: sampled entries per read (default 262144, a whole tensor at 0.1% for most models).
    ``threads``: tensors analysed at once (default: every core; with ``sample``, one).
    ``device`` ('cpu', 'cuda', 'cuda:N'): the chunk arithmetic runs there in float64 torch (reads
    stay streamed on the CPU); default: numpy on the CPU.
    Returns the report dict, with 'output': the folder written (None without out_dir).
    """
    if shard == "auto":
        shard = parse_shard(None)
        if shard is not None and out_dir is not None:  # one folder per rank
            out_dir = Path(out_dir) / f"shard-{shard[0]:05d}-of-{shard[1]:05d}"
    elif isinstance(shard, str):
        shard = parse_shard(shard)
    series = load_series(checkpoints, steps, allow_pickle=allow_pickle, allow_mixed_dtypes=allow_mixed_dtypes,
                         min_checkpoints=3)
    inputs = series.input_folders
    if out_dir is not None:
        check_output(out_dir, inputs=inputs, overwrite=overwrite)
    check_seed(seed)
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise RLExtraError(f"--threads {threads}: must be an integer >= 1")
    if sample is not None and not 0 < sample <= 1:
        raise RLExtraError(f"--sample must be in (0, 1], got {sample}")
    if min_change is not None and not (math.isfinite(min_change) and min_change >= 0):
        raise RLExtraError(f"--min-change must be a finite number >= 0, got {min_change}")
    if min_distinct is not None and not 2 <= min_distinct <= len(series):
        raise RLExtraError(f"--min-distinct must be between 2 and the number of checkpoints "
                           f"({len(series)}), got {min_distinct}")
    if chunk_size is not None and chunk_size < 1:
        raise RLExtraError(f"--chunk-size must be at least 1, got {chunk_size}")
    where = None if device is None else resolve_device(device)
    if chunk_size is None:
        accelerator = where if where is not None and where.type != "cpu" else None
        chunk_size = DEFAULT_CHUNK_SIZE if sample is not None else auto_chunk_size(len(series), accelerator)
    if save_maps and (out_dir is None or sample is not None):
        raise RLExtraError("--save-maps needs an output folder and full coverage (no --sample)")
    newest = series.newest.tensors
    wanted = [n for n in series.names if n.endswith(".weight")] if only_weights else list(series.names)
    float_names = [n for n in wanted if newest[n].is_float]
    skipped = [n for n in series.names if n not in set(float_names)]  # non-float, or not *.weight
    if not float_names:
        raise RLExtraError(f"{series.newest.path}: no floating-point tensors to analyse"
                           + (" (only *.weight)" if only_weights else ""))
    mine = float_names
    if shard is not None and shard[1] > 1:
        owner = assign_shards({n: newest[n].numel for n in float_names}, shard[1])
        mine = [n for n in float_names if owner[n] == shard[0]]
    options = {"sample": sample, "seed": seed, "min_change": min_change, "min_distinct": min_distinct,
               "only_weights": only_weights, "chunk_size": chunk_size}
    maps_specs = [TensorSpec(n, "F32", newest[n].shape, newest[n].numel * 4) for n in mine]
    writing = atomic_output_dir(out_dir, inputs=inputs, overwrite=overwrite) if out_dir is not None \
        else contextlib.nullcontext(None)
    with writing as tmp:  # the maps stream straight into the folder being built
        with MapsWriter(tmp, maps_specs) if save_maps else contextlib.nullcontext() as maps:
            stats = stream_weight_stats(series, mine, sample=sample, seed=seed, min_change=min_change,
                                        min_distinct=min_distinct, chunk_size=chunk_size,
                                        example_names=example_tensors(float_names),
                                        on_fit=maps.write if maps is not None else None, progress=progress,
                                        threads=_default_threads(sample) if threads is None else threads,
                                        device=where)
            if maps is not None:
                maps.finish()
        report, accumulators = weight_report(series, stats, options, shard=shard, skipped=skipped)
        if tmp is not None:
            write_weight_files(report, accumulators, tmp, plots=plots)
    return {**report, "output": None if out_dir is None else str(out_dir)}


def _default_threads(sample: float | None) -> int:
    """Every core for full coverage; one for a sampled analysis, which reads its picks through memory
    maps: mapping and unmapping on several threads of one process costs more than it gains (on the
    2-core machine, 0.53 s on two threads against 0.24 s on one; bench/RESULTS.md)."""
    return available_cores() if sample is None else 1


@dataclass
class WeightStats:
    """What the streaming pass returns: running sums per tensor and the example trajectories."""

    tensors: dict[str, _TensorStats]
    examples: list[dict]

    def histogram(self) -> np.ndarray:
        """The fine R^2 histogram over every tensor."""
        return sum((st.hist for st in self.tensors.values()), np.zeros(FINE_BINS, dtype=np.int64))


FitSink = Callable[[str, np.ndarray, np.ndarray], None]


def stream_weight_stats(series: CheckpointSeries, names: Sequence[str], *, sample: float | None = None,
                        seed: int = 0, min_change: float | None = None, min_distinct: int | None = None,
                        chunk_size: int = DEFAULT_CHUNK_SIZE, example_names: Sequence[str] = (),
                        on_fit: FitSink | None = None, progress: bool = False,
                        sampled: Callable[[str, int, int, int], np.ndarray] | None = None,
                        threads: int = 1, device=None) -> WeightStats:
    """The streaming pass: fit each named tensor chunk by chunk across the series; no file output.

    ``on_fit(name, r2, slope)`` receives every chunk's per-parameter fit in order (the maps
    writer); ``example_names`` are the tensors that contribute one example trajectory each.
    ``sampled(name, k, lo, hi)``, with ``sample``, serves sampled entries lo..hi of checkpoint k
    from memory instead of the files (``rlextra watch``, which has read each checkpoint once).
    ``threads`` analyses that many tensors at once (not with ``on_fit`` or ``sampled``, which need
    them in order); each tensor's sums are the same either way, so the report is too.
    ``device``: a torch device for the arithmetic of full-coverage chunks (None: numpy).
    """
    newest = series.newest.tensors
    examples_wanted = set(example_names)
    # the bar counts the bytes the pass covers (every checkpoint's copy of each entry), so its rate reads
    # against the disk's (`cat` of the series): at a glance, is rlextra or the disk the limit?
    # Its postfix says how fast the reads themselves went and what share of the time they took
    # (ReadMeter): "disk-bound" or "rlextra-bound" without a second tool.
    total = sum(newest[n].numel * sum(r.itemsize for r in series.refs(n)) for n in names)
    threaded = threads > 1 and on_fit is None and sampled is None and len(names) > 1
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="analyze weights",
              disable=not progress) as bar:
        meter = ReadMeter(threads if threaded else 1) if progress else None
        advance = _bar_advance(bar, meter)

        def one(name: str) -> tuple[_TensorStats, list[dict]]:
            return _tensor_stats(series, name, sample=sample, seed=seed, min_change=min_change,
                                 min_distinct=min_distinct, chunk_size=chunk_size,
                                 want_example=name in examples_wanted, on_fit=on_fit, sampled=sampled,
                                 advance=advance, meter=meter, device=device)

        if threaded:
            from concurrent.futures import ThreadPoolExecutor

            # tensors are independent, and numpy releases the GIL on the large array operations
            with ThreadPoolExecutor(max_workers=threads) as pool:
                done = list(pool.map(one, names))  # in the order of names: the report is the same
        else:  # the maps writer and watch's in-memory reads need the tensors in order
            done = [one(name) for name in names]
        if meter is not None and meter.bytes:
            bar.set_postfix_str(meter.summary(), refresh=False)  # the closing line keeps the final figures
    stats = {name: st for name, (st, _) in zip(names, done)}
    examples = [e for _, ex in done for e in ex]
    return WeightStats(stats, examples)


def _tensor_stats(series: CheckpointSeries, name: str, *, sample, seed: int, min_change, min_distinct,
                  chunk_size: int, want_example: bool, on_fit, sampled, advance: Callable[[int], None],
                  meter: ReadMeter | None = None, device=None) -> tuple[_TensorStats, list[dict]]:
    """One tensor's running sums across the series, chunk by chunk, and its example trajectory."""
    refs = series.refs(name)
    per_entry = sum(r.itemsize for r in refs)  # bytes of one entry across the series: the bar's unit
    st = _TensorStats()
    examples: list[dict] = []
    idx = sample_indices(name, refs[0].numel, sample, seed) if sample else None
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])  # same in any shard
    whole = idx is None and sampled is None  # every element: read all K checkpoints as one block
    width = min(chunk_size, max(refs[0].numel, 1))
    fused_ok = (whole and fused.AVAILABLE and device is None and min_change is None and min_distinct is None
                and on_fit is None)
    steps_fit = LineFit(series.steps, 0)  # the centred steps and Sxx, for the fused pass
    with (BlockReader(refs, width, device, compact=fused_ok, bf16_bits=fused_ok, meter=meter) if whole
          else contextlib.nullcontext()) as blocks:
        for start, stop, lo, hi, step in _chunks(refs[0].numel, idx, chunk_size):
            pick = None if idx is None else idx[lo:hi] - start
            n = stop - start if pick is None else len(pick)
            cand = rng.choice(n, size=min(N_CANDIDATES, n), replace=False) if want_example else None
            if fused_ok and cand is None:  # the common case: one compiled pass, no per-parameter arrays
                _fused_chunk(st, blocks.read(start, stop), steps_fit, refs, series.steps, start, stop)
                advance(step * per_entry)
                continue
            fit = LineFit(series.steps, n, track_range=min_change is not None, distinct_cap=min_distinct or 0)
            traj = []
            if blocks is not None:
                block = as_float(blocks.read(start, stop))
                if cand is not None:
                    traj = list(block[:, cand].numpy(force=True) if device is not None else block[:, cand])
                fit.add_block(block)
            else:
                for k, ref in enumerate(refs):
                    y = read_values(ref, start, stop, pick) if sampled is None else sampled(name, k, lo, hi)
                    fit.add(y)
                    if cand is not None:
                        traj.append(y[cand])
            _fold_chunk(st, examples, fit, refs, series.steps, name, start, stop, pick, cand, traj,
                        min_change=min_change, min_distinct=min_distinct, on_fit=on_fit)
            if examples:
                want_example = False
            advance(step * per_entry)
    return st, examples


def _bar_advance(bar, meter: ReadMeter | None, every_s: float = 0.5) -> Callable[[int], None]:
    """``bar.update``, with the reads' summary in the postfix at most every ``every_s`` seconds."""
    if meter is None:
        return bar.update
    last = [0.0]

    def advance(n: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s and meter.bytes:  # sampled reads (memory maps) are not metered
            last[0] = now
            bar.set_postfix_str(meter.summary(), refresh=False)
        bar.update(n)

    return advance


def _chunks(numel: int, idx: np.ndarray | None, chunk_size: int):
    """(start, stop, lo, hi, advance) per chunk of a tensor: every entry in ranges of ``chunk_size``
    (lo, hi None), or the sampled entries ``idx`` in groups of ``chunk_size`` picks (``pick_chunks``);
    ``advance``: the entries the progress bar moves by, numel in all."""
    if idx is None:
        for start, stop in chunk_ranges(numel, chunk_size):
            yield start, stop, None, None, stop - start
        return
    covered = 0
    groups = list(pick_chunks(idx, chunk_size))
    for i, (start, stop, lo, hi) in enumerate(groups):
        end = numel if i == len(groups) - 1 else stop
        yield start, stop, lo, hi, end - covered
        covered = end


def _fused_chunk(st: _TensorStats, block: np.ndarray, steps_fit: LineFit, refs, steps, start: int,
                 stop: int) -> None:
    """One chunk's sums in one compiled pass (``fused``), the same numbers as ``_fold_chunk``'s."""
    finite, n_constant, n_above, sum_r2, sq_first, sq_delta = fused.chunk_stats(block, steps_fit.tc, steps_fit.sxx,
                                                                                  st.hist)
    if not finite:
        raise_nonfinite(refs, steps, start, stop)
    n = block.shape[1]
    st.n_fitted += n
    st.n_constant += n_constant
    st.n_analyzed += n - n_constant
    st.sum_r2 += sum_r2
    st.n_above += n_above
    st.sq_first += sq_first
    st.sq_delta += sq_delta


def _fold_chunk(st: _TensorStats, examples: list[dict], fit: LineFit, refs, steps, name: str, start: int,
                stop: int, pick, cand, traj, *, min_change, min_distinct, on_fit) -> None:
    """One chunk's fit into the tensor's sums, the maps writer and (once) the example trajectory."""
    if not fit.all_finite():
        raise_nonfinite(refs, steps, start, stop)
    res = fit.result()
    r2 = res.r2()
    if on_fit is not None:
        on_fit(name, r2, res.slope)
    keep = np.ones(r2.size, dtype=bool)
    if min_change is not None:
        keep &= fit.value_range() > min_change  # strict, as the paper's script
    if min_distinct is not None:
        keep &= fit.n_distinct_capped() >= min_distinct
    st.add(r2, keep, fit.y0, fit.last)
    if cand is not None:
        ok = [j for j, c in enumerate(cand) if np.isfinite(r2[c]) and keep[c]]
        if ok:
            j = ok[0]
            flat = int(start + (cand[j] if pick is None else pick[cand[j]]))
            examples.append({"tensor": name, "index": flat, "r2": float(r2[cand[j]]),
                             "values": [float(t[j]) for t in traj]})


def weight_report(series: CheckpointSeries, stats: WeightStats, options: dict, *,
                  shard: tuple[int, int] | None = None, skipped: Sequence[str] = ()) -> tuple[dict, dict]:
    """Finalise the streamed statistics into (report, accumulators), as weights.json/accumulators.json hold them."""
    newest = series.newest.tensors
    meta = {
        "rlextra_version": rlextra.__version__,
        "kind": "weights",
        "steps": series.steps,
        "checkpoints": [{"step": c.step, "path": str(c.path)} for c in series.checkpoints],
        "options": options,
        "shard": None if shard is None or shard[1] == 1 else {"index": shard[0], "count": shard[1]},
        "skipped_tensors": list(skipped),
    }
    summaries = [tensor_summary(name, newest[name].numel, st) for name, st in stats.tensors.items()]
    return finalize_report(meta, summaries, stats.histogram(), stats.examples)


class MapsWriter:
    """Streams every parameter's R^2 and slope (float32) into r2/slope safetensors in ``folder``.

    A context manager over the folder being built (the atomic output folder, so the maps appear
    with the report or not at all): ``finish()`` closes and validates both files; leaving the
    block early (an error) closes what is open, and the folder's owner removes it.
    """

    def __init__(self, folder: Path, specs: Sequence[TensorSpec]) -> None:
        self.folder = Path(folder)
        self.specs = list(specs)
        self._writers: dict[str, StreamingSafetensorsWriter] = {}

    def __enter__(self) -> "MapsWriter":
        self._writers = {k: StreamingSafetensorsWriter(self.folder, self.specs, parse_size("5GB"), prefix=k)
                         for k in ("r2", "slope")}
        return self

    def write(self, name: str, r2: np.ndarray, slope: np.ndarray) -> None:
        """The next chunk of tensor name's R^2 and slope (tensors in order)."""
        self._writers["r2"].write(name, r2.astype(np.float32))
        self._writers["slope"].write(name, slope.astype(np.float32))

    def finish(self) -> Path:
        """Close and validate both files; return the folder that holds them."""
        for w in self._writers.values():
            w.close()
        return self.folder

    def __exit__(self, *exc) -> None:
        for w in self._writers.values():
            w._close_handle()
