"""``LinearityMonitor``: how linear the run is, measured while it trains.

Every ``every`` optimizer steps the callback copies a fixed, seeded sample of the trainable
entries (``rlextra.sampling``: the entries ``analyze weights --sample F --seed S`` reads) into CPU
fp32, keeps the last ``window`` snapshots, and computes ``rlextra.extrapolate.inflight``'s row: the
window's R^2 (globally and per module type) and the in-flight backtest (two-point and lsq predict
the newest snapshot from older ones at the jump horizons ``alphas``). Rows go to the trainer's own
log (console, TensorBoard, W&B: keys ``linearity/...`` and ``backtest/<method>/weight_error``) and
to ``OUTPUT/linearity.jsonl``.

Each row also carries ``lr_headroom`` (``rlextra.extrapolate.headroom``, rlextra's heuristic): the
largest horizon whose in-flight error over the segment's newest rows stays below the threshold,
read as the learning-rate multiplier the path has room for, with its evidence; and, when an
``AdaptiveLR`` drives the run, ``lr_multiplier``, the multiplier the run was at.

A jump of RL-Extra (or anything that moves the weights off the trained path) is marked with
``mark_jump``: the window restarts from the jumped weights, so no window straddles a jump; every
row carries its ``segment`` and the jump itself is a row ``{"step", "event": "jump"}``. A rolled
back jump leaves the window as it was (the weights are restored) and is marked as an event too.

Memory: ``window`` x the sampled entries x 4 bytes (CPU). Each checkpoint stores the window
(``linearity_window.safetensors``, ``linearity_state.json``) and a resumed run continues it.

Multi-process: under DDP every rank holds the same weights and samples the same global entries;
rank 0 computes and logs. Under FSDP2 (``fully_shard``, parameters sharded on dim 0) each rank
samples the global entries that fall in its shard, the ranks add their sums (one all-reduce) and
rank 0 logs the row a single process would. FSDP1 flat parameters and DeepSpeed ZeRO-3 partitions
are refused with an error.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from transformers import TrainerCallback

from rlextra.errors import RLExtraError
from rlextra.io import append_run_log, read_json, restore_run_log, truncate_run_log
from rlextra.extrapolate.inflight import DEFAULT_ALPHAS, INFLIGHT_METHODS, InflightWindow, flat_metrics
from rlextra.rl.config import check_monitor
from rlextra.rl.params import is_sharded, is_zero3
from rlextra.sampling import sample_indices

LOG_FILE = "linearity.jsonl"
WINDOW_FILE = "linearity_window.safetensors"
WINDOW_STATE = "linearity_state.json"


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def broadcast_from_rank0(obj):
    """``obj`` as rank 0 has it, on every rank (itself without torch.distributed): decisions taken on
    the monitor's rows, which rank 0 alone computes, reach every rank."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _local_range(data) -> tuple[object, int]:
    """(local tensor, flat offset of its first entry in the full parameter)."""
    if not hasattr(data, "to_local"):
        return data, 0
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = tuple(data.placements)
    if any(isinstance(p, Shard) and p.dim != 0 for p in placements):
        raise RLExtraError("LinearityMonitor: parameters sharded on a dimension other than 0 are not supported")
    local = data.to_local()
    _, offset = compute_local_shape_and_global_offset(data.shape, data.device_mesh, placements)
    row = math.prod(data.shape[1:]) if len(data.shape) > 1 else 1
    return local, int(offset[0]) * row if len(offset) else 0


class LinearityMonitor(TrainerCallback):
    """Window R^2 and in-flight backtest every ``every`` steps (see module docstring)."""

    def __init__(self, every: int = 10, *, sample: float = 0.001, seed: int = 0, window: int = 8,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, primary_alpha: float | None = 2.0,
                 methods: Sequence[str] = INFLIGHT_METHODS, output_dir: str | Path | None = None) -> None:
        check_monitor(every, window, sample, seed)
        if not alphas or not all(math.isfinite(a) and a > 1 for a in alphas):
            raise RLExtraError(f"monitor horizons must be alphas > 1, got {list(alphas)}")
        for m in methods:
            if m not in INFLIGHT_METHODS:
                raise RLExtraError(f"unknown in-flight backtest method '{m}' ({', '.join(INFLIGHT_METHODS)})")
        self.every, self.sample, self.seed, self.window = every, float(sample), seed, window
        self.win = InflightWindow(window, alphas, methods, primary_alpha)  # snapshots, segments, rows
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self._pending: dict[str, float] = {}
        self._index: dict[str, tuple[np.ndarray, int]] | None = None  # name -> (local positions, global numel)
        self._sharded = False
        self.seconds = 0.0  # time spent snapshotting and computing, this process
        self.lr_multiplier: float | None = None  # set by an AdaptiveLR; logged with each row

    # the window's state, under the names the monitor has always had
    @property
    def snapshots(self) -> list:
        return self.win.snapshots

    @property
    def segment(self) -> int:
        return self.win.segment

    @property
    def rows(self) -> list[dict]:
        return self.win.rows  # every row and event of this process's run, oldest first

    @property
    def alphas(self) -> tuple:
        return self.win.alphas

    @alphas.setter
    def alphas(self, value) -> None:  # adaptive RL-Extra widens the ladder to its own horizons
        self.win.alphas = tuple(sorted(set(float(a) for a in value)))

    def attach(self, trainer) -> "LinearityMonitor":
        """Add to ``trainer`` as its first callback, so TensorBoard / W&B receive the values it logs."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    # -- sampling
    def _params(self, model):
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def _build_index(self, model) -> None:
        index = {}
        for name, p in self._params(model):
            if is_zero3(p):
                raise RLExtraError("LinearityMonitor does not read DeepSpeed ZeRO-3 partitions; use DDP or FSDP2")
            if getattr(p, "_is_flat_param", False):
                raise RLExtraError("LinearityMonitor does not read FSDP1 flat parameters; use FSDP2 (fully_shard)")
            local, start = _local_range(p.data)
            self._sharded |= is_sharded(p)
            full = p.numel()
            idx = sample_indices(name, full, self.sample, self.seed)
            lo, hi = np.searchsorted(idx, [start, start + local.numel()])
            index[name] = (idx[lo:hi] - start, full)
        self._index = index

    def read_sample(self, model) -> dict[str, np.ndarray]:
        """The sampled entries this process owns, as CPU fp32 vectors (name -> values)."""
        import torch

        if self._index is None:
            self._build_index(model)
        out = {}
        with torch.no_grad():
            for name, p in self._params(model):
                pos, _ = self._index[name]
                local, _ = _local_range(p.data)
                flat = local.detach().reshape(-1)
                picked = flat[torch.as_tensor(pos, device=flat.device)] if len(pos) < flat.numel() else flat
                out[name] = picked.float().cpu().numpy().copy()
        return out

    # -- the window
    def observe(self, model, step: int, *, force: bool = False) -> dict | None:
        """Snapshot at ``step`` when due (every ``every`` steps, once per step); return the row logged."""
        if self.snapshots and self.snapshots[-1][0] == step:
            return None
        if not force and step % self.every:
            return None
        t0 = time.perf_counter()
        self.win.add(step, self.read_sample(model))
        row = self._emit(step, t0) if self.win.ready() else None
        self.seconds += time.perf_counter() - t0
        return row

    def _emit(self, step: int, t0: float) -> dict | None:
        sums = self.win.sums()
        dist = _dist()
        if dist is not None and self._sharded:
            sums = _all_reduce_sums(dist, sums)
        if dist is not None and dist.get_rank() != 0:
            return None
        row = self.win.row(sums)
        if self.lr_multiplier is not None:
            row["lr_multiplier"] = self.lr_multiplier
        row["monitor_seconds"] = round(self.seconds + time.perf_counter() - t0, 4)  # this process, so far
        self._record(row)
        self._pending.update(flat_metrics(row))
        return row

    def mark_jump(self, model, step: int, **info) -> None:
        """The weights left the trained path at ``step``: restart the window from where they are now."""
        self.restart_window(model, step, "jump", **info)

    def restart_window(self, model, step: int, event: str, **info) -> None:
        """The path changed at ``step`` (a jump, a new learning rate): a new segment, whose window starts
        from the weights as they are now, so no window straddles the change."""
        self._write(self.win.restart(step, self.read_sample(model), event, **info))

    def mark_rollback(self, step: int, **info) -> None:
        """A jump was undone (weights restored): the window goes on as before."""
        self._record({"step": step, "event": "rollback", "segment": self.segment, **info})

    def _record(self, row: dict) -> None:
        self.win.record(row)
        self._write(row)

    def _write(self, row: dict) -> None:
        dist = _dist()
        if self.output_dir is not None and (dist is None or dist.get_rank() == 0):
            self.output_dir.mkdir(parents=True, exist_ok=True)
            append_run_log(self.output_dir / LOG_FILE, row)

    def segment_rows(self) -> list[dict]:
        """The rows (not events) of the current segment, oldest first."""
        return self.win.segment_rows()

    def _go_first(self) -> None:
        """Passed in ``callbacks=[...]``, the monitor sits after the reporting integrations (TensorBoard,
        W&B), which would then log before it adds its values; found through the caller's callback
        handler, it moves itself first, as ``attach`` does. Moving it while the handler iterates keeps
        every other callback's place in the iteration (one removed before, one inserted before)."""
        import sys

        frame = sys._getframe(1)
        for _ in range(6):
            if frame is None:
                return
            handler = frame.f_locals.get("self")
            callbacks = getattr(handler, "callbacks", None)
            if isinstance(callbacks, list) and any(cb is self for cb in callbacks):
                at = next(i for i, cb in enumerate(callbacks) if cb is self)
                if any(type(cb).__module__.startswith("transformers.integrations") for cb in callbacks[:at]):
                    callbacks.pop(at)
                    callbacks.insert(0, self)
                return
            frame = frame.f_back

    # -- Trainer events
    def on_train_begin(self, args, state, control, model=None, **kw):
        self._go_first()
        if self.output_dir is None:
            self.output_dir = Path(args.output_dir)
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.global_step > 0 and (ckpt / WINDOW_STATE).is_file():
            self._restore(ckpt, state.global_step)
        else:
            dist = _dist()
            if dist is None or dist.get_rank() == 0:  # a stopped run's rows past this step go
                truncate_run_log(self.output_dir / LOG_FILE, state.global_step)
            self.observe(model, state.global_step, force=True)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.observe(model, state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is not None and self._pending:
            logs.update(self._pending)
            self._pending = {}

    def on_save(self, args, state, control, **kw):
        from safetensors.torch import save_file
        import torch

        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        dist = _dist()
        suffix = "" if dist is None or not self._sharded else f".rank{dist.get_rank()}"
        if dist is not None and not self._sharded and dist.get_rank() != 0:
            return
        ckpt.mkdir(parents=True, exist_ok=True)
        tensors = {k: torch.from_numpy(v) for k, v in self.win.tensors().items()}
        save_file(tensors, str(ckpt / (WINDOW_FILE + suffix)))
        if dist is None or dist.get_rank() == 0:
            (ckpt / WINDOW_STATE).write_text(json.dumps({
                "every": self.every, "sample": self.sample, "seed": self.seed, "window": self.window,
                **self.win.state()}, indent=1) + "\n")

    def _restore(self, ckpt: Path, step: int) -> None:
        from safetensors.torch import load_file

        st = read_json(ckpt / WINDOW_STATE, "monitor state")
        keys = ("every", "sample", "seed", "window", "snapshot_steps", "segment", "rows")
        if not isinstance(st, dict) or any(k not in st for k in keys) or not isinstance(st["snapshot_steps"], list):
            raise RLExtraError(f"{ckpt / WINDOW_STATE}: not a monitor state (needs {', '.join(keys)}); remove this "
                               "checkpoint folder to resume from the one before")
        saved = (st["every"], st["sample"], st["seed"], st["window"])
        if saved != (self.every, self.sample, self.seed, self.window):
            raise RLExtraError(f"{ckpt / WINDOW_STATE}: saved with monitor every {saved[0]}, sample {saved[1]}, "
                               f"seed {saved[2]}, window {saved[3]}; resumed with {self.every}, {self.sample}, "
                               f"{self.seed}, {self.window}")
        dist = _dist()
        name = WINDOW_FILE + (f".rank{dist.get_rank()}" if dist is not None and (ckpt / f"{WINDOW_FILE}.rank0").exists()
                              else "")
        try:
            flat = load_file(str(ckpt / name))
        except Exception as exc:  # truncated, not safetensors, missing
            raise RLExtraError(f"{ckpt / name}: the monitor's window cannot be read ({type(exc).__name__}); remove "
                               "this checkpoint folder to resume from the one before") from None
        self.win.load(st, {k: v.numpy() for k, v in flat.items()}, str(ckpt / name))
        # rows logged after this checkpoint by the run that stopped are replayed by this one
        if self.output_dir is not None and (dist is None or dist.get_rank() == 0):
            restore_run_log(self.output_dir / LOG_FILE, self.rows)


def _all_reduce_sums(dist, sums: dict) -> dict:
    """Add the shards' sums (keys ending in b/s are steps, equal on every rank, and kept)."""
    import torch

    keys = sorted(sums)
    names = [None] * dist.get_world_size()
    dist.all_gather_object(names, keys)
    keys = sorted(set().union(*names))
    additive = [k for k in keys if not k.endswith(("/b", "/s"))]
    vec = torch.tensor([sums.get(k, 0.0) for k in additive], dtype=torch.float64)
    dist.all_reduce(vec)
    out = dict(zip(additive, vec.tolist()))
    steps = [None] * dist.get_world_size()
    dist.all_gather_object(steps, {k: v for k, v in sums.items() if k.endswith(("/b", "/s"))})
    for d in steps:
        out.update(d)
    return out
