"""RL-Extra inside the trainer: m real optimizer steps, then a jump of n extrapolated steps, repeat.

At the start of a cycle (real step c) the callback keeps an anchor copy of the trainable weights
(CPU, fp32). After m optimizer steps it predicts the weights at step c + m + n from the snapshots
of the cycle and writes them in place, then starts the next cycle from there.

**The paper's procedure** (the default): the jump is the paper's two-point weight extrapolation
with b = c, s = c + m, T = c + m + n (the K = 2 line of ``rlextra.linefit``), and the optimizer
state is cleared after each jump. The paper's published script restarts its RL framework each
cycle, so Adam's moments start fresh after every jump; clearing the state reproduces that inside
one trainer (the learning-rate schedule and data order are not restarted: use a constant
learning rate).

**rlextra's options** (not in the paper):

* ``optimizer="keep"``: keep Adam's moments across the jump.
* ``method="lsq"`` or ``"low-rank"``: the jump uses ``rlextra.extrapolate.methods`` over
  ``snapshots`` evenly spaced snapshots of the cycle (the anchor, the current weights and
  ``snapshots - 2`` in between), each held in CPU memory as fp32 (``snapshots - 1`` copies of the
  trainable weights, whatever m is). ``lsq`` fits each coordinate's line; ``low-rank`` moves only the
  top-``rank`` singular directions of each matrix's update (see that module).
* **Safe mode** (``safe=SafeMode(scorer)``): before and after each jump, ``scorer(model)`` gives the
  mean reward of a fixed mini-batch of prompts (same prompts, sampler and seed both times). If the
  jumped weights score more than ``tolerance`` below the pre-jump weights, they are rolled back
  (the optimizer is then left alone) and n is multiplied by ``shrink`` (halved by default; at 0 no
  more jumps happen). The cost is two scorer calls per jump (with ``rlextra train``: 2 x prompts x
  samples generations) and one more CPU copy of the trainable weights during the check.

**Adaptive RL-Extra** (``auto=AutoJump(monitor)``, rlextra's, not in the paper): at each cycle end a
``LinearityMonitor`` (``rlextra.rl.monitor``) supplies the evidence. Each n on the ladder (m/4, m/2,
m, 2m, 5m, capped by the current n) is a horizon alpha = (m + n) / m; its evidence is the mean
in-flight weight error at that alpha over the monitor's last ``rows`` rows since the last jump
(the jump's own method: two-point or lsq). The largest n whose evidence is below ``threshold`` is
taken; when none is, no jump happens and the optimizer is left alone. Every decision, with its
evidence, goes to ``rl_extra.jsonl``; accepted jumps restart the monitor's window.

A jump does not advance the step counter or the learning-rate scheduler. Norm weights follow the
same policy as ``rlextra extrapolate`` (not moved by default). Every jump and every safe-mode
decision goes to ``OUTPUT/rl_extra.jsonl``; each checkpoint stores the snapshots and the cycle
state (``rl_extra_anchor.safetensors``, ``rl_extra_state.json``), so a resumed run continues the
same schedule with the same (possibly shrunk) n.

Where the update happens: the tensor each process owns. Single process and DDP: the full
parameter (every replica applies the same jump to the same weights; a safe-mode scorer must then
give the same number on every rank, e.g. generation with a fixed seed). FSDP: the local shard
(``DTensor.to_local()`` or FSDP1's flat-parameter view); two-point and lsq are elementwise, so
shards need no communication, while low-rank needs whole matrices and is refused on sharded
parameters. DeepSpeed ZeRO-3: the local fp32 master partition through
``deepspeed.utils.safe_get/set_local_fp32_param``. ZeRO-1/2 is refused (its fp32 master copy,
held by the optimizer, would overwrite the jump). With TRL + vLLM, the jump lands in on_step_end,
before the next step's generation, and TRL re-syncs weights whenever the global step has changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from rlextra.errors import RLExtraError
from rlextra.io import append_run_log, restore_run_log, truncate_run_log
from rlextra.extrapolate.headroom import alpha_errors
from rlextra.extrapolate.methods import predict_tensor
from rlextra.extrapolate.registry import NORMS, REGISTRY, method as registry_entry
from rlextra.rl.cycle_state import (ANCHOR_FILE, STATE_FILE, load_snapshots,  # noqa: F401 (file names re-exported)
                                    read_cycle_state, save_cycle_state)
from rlextra.rl.config import (AUTO_THRESHOLD, SAFE_TOLERANCE,  # check_cycle re-exported: rlextra.rl.rl_extra
                               check_cycle)
from rlextra.rl.monitor import broadcast_from_rank0
from rlextra.rl.params import ParameterAccess, is_sharded, is_zero3

OPTIMIZER_POLICIES = ("reset", "keep")
JUMP_LOG = "rl_extra.jsonl"


@dataclass
class SafeMode:
    """Score before and after each jump; roll back and shrink n when the jump loses reward."""

    scorer: Callable[[object], float]  # model -> mean reward on a fixed mini-batch
    tolerance: float = SAFE_TOLERANCE
    shrink: float = 0.5

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise RLExtraError(f"safe-mode tolerance must be a finite number >= 0, got {self.tolerance}")
        if not 0 <= self.shrink < 1:
            raise RLExtraError(f"safe-mode shrink factor must be in [0, 1), got {self.shrink}")


LADDER = (0.25, 0.5, 1.0, 2.0, 5.0)  # auto's candidate n, as fractions of m


@dataclass
class AutoJump:
    """Adaptive n from the in-flight backtest: the largest ladder n whose weight error stays below threshold."""

    monitor: object  # a LinearityMonitor
    threshold: float = AUTO_THRESHOLD
    ladder: tuple = LADDER
    rows: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise RLExtraError(f"--rl-extra-auto-threshold {self.threshold}: must be a finite number > 0")
        if not (isinstance(self.rows, int) and self.rows >= 1):
            raise RLExtraError(f"auto evidence rows must be an integer >= 1, got {self.rows}")

    def candidates(self, m: int, cap: int) -> list[int]:
        """The ladder's n for cycles of m real steps, at most cap, largest first."""
        return sorted({int(f * m) for f in self.ladder if 1 <= int(f * m) <= cap}, reverse=True)

    def alphas(self, m: int, cap: int) -> list[float]:
        return [(m + n) / m for n in self.candidates(m, cap)]

    def choose(self, m: int, cap: int, method: str) -> tuple[int, dict]:
        """(n, evidence): evidence maps each candidate n to its mean in-flight weight error (None: not measured)."""
        rows = self.monitor.segment_rows()[-self.rows:]
        errors = alpha_errors(rows, method)  # mean error per measured alpha (the lr headroom's reading too)
        evidence = {n: next((e for a, e in errors.items() if math.isclose(a, (m + n) / m)), None)
                    for n in self.candidates(m, cap)}
        chosen = max((n for n, err in evidence.items() if err is not None and err < self.threshold), default=0)
        return chosen, {"threshold": self.threshold, "method": method, "rows": [r["step"] for r in rows],
                        "weight_error": {str(n): err for n, err in evidence.items()}, "chosen_n": chosen}


class RLExtraCallback(TrainerCallback):
    """Interleave m real steps with jumps of n extrapolated steps (see module docstring)."""

    def __init__(self, m: int, n: int, *, warmup_steps: int = 0, optimizer: str = "reset",
                 method: str = "two-point", snapshots: int | None = None, rank: int = 1,
                 safe: SafeMode | None = None, norms: str = "copy", include: str | None = None,
                 exclude: str | None = None, auto: AutoJump | None = None, monitor=None) -> None:
        check_cycle(m, n)
        if optimizer not in OPTIMIZER_POLICIES:
            raise RLExtraError(f"RL-Extra optimizer policy must be 'reset' (the paper's) or 'keep', got {optimizer!r}")
        method = registry_entry(method, "RL-Extra jump method").name  # an older name resolves to the current one
        snapshots = (2 if method == "two-point" else 3) if snapshots is None else snapshots
        if method == "two-point" and snapshots != 2:
            raise RLExtraError("the two-point jump uses exactly 2 snapshots (cycle start and now)")
        if method == "lsq" and snapshots < 3:
            raise RLExtraError(f"the lsq jump needs at least 3 snapshots per cycle, got {snapshots}")
        if snapshots < 2 or snapshots > m + 1:
            raise RLExtraError(f"RL-Extra snapshots must be 2..m+1 ({m + 1}), got {snapshots}")
        if norms not in NORMS:
            raise RLExtraError(f"norms must be 'copy' or 'extrapolate', got {norms!r}")
        if warmup_steps < 0:
            raise RLExtraError(f"RL-Extra warm-up must be >= 0 steps, got {warmup_steps}")
        self.m, self.n, self.n_initial = m, n, n
        self.warmup_steps = warmup_steps
        self.optimizer = optimizer
        self.method, self.n_snapshots, self.rank = method, snapshots, rank
        self.safe = safe
        self.norms = norms
        self.params = ParameterAccess(norms, include, exclude)
        if auto is not None and method == "low-rank":
            raise RLExtraError("auto RL-Extra judges two-point and lsq jumps; the in-flight backtest has no low-rank")
        self.auto = auto
        self.monitor = auto.monitor if auto is not None else monitor  # told of every jump and rollback
        if auto is not None:  # the monitor must measure every horizon on the ladder
            self.monitor.alphas = tuple(sorted(set(self.monitor.alphas) | set(auto.alphas(m, n))))
        self.snapshots: list[tuple[int, dict]] = []  # (step, {name: fp32 CPU tensor}); [0] is the anchor
        self.cycle_start: int | None = None
        self.extra_steps = 0
        self.jumps: list[dict] = []

    @property
    def anchor(self) -> dict | None:
        return self.snapshots[0][1] if self.snapshots else None

    def snapshot_offsets(self) -> list[int]:
        """Steps after the cycle start at which snapshots are kept (the last one is the jump)."""
        k = self.n_snapshots - 1
        return sorted({round(i * self.m / k) for i in range(k + 1)})

    def selected(self, model) -> list[tuple[str, object]]:
        """The parameters a jump moves (``rlextra.rl.params``)."""
        return self.params.selected(model)

    def take_anchor(self, model, step: int) -> None:
        self.snapshots = [(step, self.params.copy(model))]
        self.cycle_start = step

    def jump(self, model, optimizer=None, step: int = 0, n: int | None = None) -> dict:
        """Move the selected parameters to their predicted value at step + n (default: the current n);
        returns the record."""
        import torch

        sharded = any(is_sharded(p) for _, p in self.selected(model))
        if not REGISTRY[self.method].chunked and sharded:
            raise RLExtraError("the low-rank jump needs whole matrices; sharded parameters (FSDP, ZeRO-3) "
                               "support the two-point and lsq jumps only")
        n = self.n if n is None else n
        record = {"real_step": step, "m": self.m, "n": n, "method": self.method}
        pre_score = self.safe.scorer(model) if self.safe else None
        before = self.params.copy(model) if self.safe else None
        steps = [s for s, _ in self.snapshots] + [step]
        sq_delta = sq_w = 0.0
        with torch.no_grad():
            for name, p in self.selected(model):
                cur = self.params.read(p).float()
                values = [snap[name].to(cur.device) for _, snap in self.snapshots] + [cur]
                new = predict_tensor(self.method, steps, values, step + n, rank=self.rank)
                sq_delta += float(((new - cur) ** 2).sum())
                sq_w += float((cur ** 2).sum())
                self.params.write(p, new)
        record.update(jump_norm=math.sqrt(sq_delta), relative_jump=math.sqrt(sq_delta / sq_w) if sq_w else None)
        accepted = True
        if self.safe:
            post_score = self.safe.scorer(model)
            accepted = post_score >= pre_score - self.safe.tolerance
            record.update(score_before=pre_score, score_after=post_score, tolerance=self.safe.tolerance)
            if not accepted:
                self.params.restore(model, before)
                self.n = int(n * self.safe.shrink)
            record.update(decision="accepted" if accepted else "rolled back", next_n=self.n)
        if accepted:
            if self.optimizer == "reset" and optimizer is not None:
                optimizer.state.clear()
            self.extra_steps += n
        record["effective_step"] = step + self.extra_steps
        if self.monitor is not None:
            if accepted:
                self.monitor.mark_jump(model, step, n=n, effective_step=record["effective_step"])
            else:
                self.monitor.mark_rollback(step, n=n)
        self.jumps.append(record)
        return record

    # -- Trainer events
    def on_train_begin(self, args, state, control, model=None, **kw):
        if getattr(args, "deepspeed", None) and not any(is_zero3(p) for p in model.parameters()):
            raise RLExtraError("RL-Extra under DeepSpeed ZeRO-1/2 is not supported: the fp32 master weights "
                               "live in the optimizer and would overwrite the jump; use ZeRO-3, FSDP or DDP")
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        log = Path(args.output_dir) / JUMP_LOG
        if state.global_step > 0 and (ckpt / STATE_FILE).is_file():
            self._restore(ckpt)
            if state.is_world_process_zero:  # the records up to the checkpoint, as saved with it
                restore_run_log(log, self.jumps)
        else:
            if state.is_world_process_zero:  # a stopped run's records past this step go
                truncate_run_log(log, state.global_step, key="real_step")
            if state.global_step >= self.warmup_steps:
                self.take_anchor(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        step = state.global_step
        if self.anchor is None:
            if step >= self.warmup_steps:
                self.take_anchor(model, step)
            return
        offset = step - self.cycle_start
        if offset < self.m:
            if offset in self.snapshot_offsets() and offset > self.snapshots[-1][0] - self.cycle_start:
                self.snapshots.append((step, self.params.copy(model)))
            return
        record = None
        if self.monitor is not None:  # the pre-jump weights are observed, whichever callback runs first
            self.monitor.observe(model, step)
        if self.auto is not None and self.n > 0:
            # rank 0 alone holds the monitor's rows: its choice is every rank's (DDP, FSDP)
            n, evidence = broadcast_from_rank0(self.auto.choose(self.m, self.n, "lsq" if self.method == "lsq"
                                                                else "two-point"))
            if n > 0:
                record = self.jump(model, optimizer, step, n=n)
            else:
                record = {"real_step": step, "m": self.m, "n": 0, "method": self.method,
                          "decision": "no jump (auto)", "effective_step": step + self.extra_steps}
                self.jumps.append(record)
            record["auto"] = evidence
        elif self.n > 0:
            record = self.jump(model, optimizer, step)
        elif self.n_initial == 0 and self.optimizer == "reset":
            # the control run (m, 0): the paper's trainer restart every m steps, without a jump
            if optimizer is not None:
                optimizer.state.clear()
            record = {"real_step": step, "m": self.m, "n": 0, "method": None, "decision": "optimizer reset only",
                      "effective_step": step + self.extra_steps}
            self.jumps.append(record)
        if record is not None and state.is_world_process_zero:
            append_run_log(Path(args.output_dir) / JUMP_LOG, record)
        self.take_anchor(model, step)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is not None:
            logs["rl_extra/real_step"] = state.global_step
            logs["rl_extra/effective_step"] = state.global_step + self.extra_steps

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero or self.anchor is None:
            return
        save_cycle_state(Path(args.output_dir) / f"checkpoint-{state.global_step}", {
            "m": self.m, "n": self.n_initial, "n_current": self.n, "method": self.method,
            "snapshots": self.n_snapshots, "cycle_start": self.cycle_start, "extra_steps": self.extra_steps,
            "warmup_steps": self.warmup_steps, "optimizer": self.optimizer, "jumps": self.jumps}, self.snapshots)

    def check_resume(self, ckpt: Path) -> dict | None:
        """The cycle state saved in ``ckpt`` (None when it has none), or a one-line error when it was
        saved with another schedule: a resume must continue the same cycles."""
        st = read_cycle_state(ckpt)
        if st is None:
            return None
        saved = (st["m"], st["n"], st.get("method", "two-point"), st.get("snapshots", 2))
        if saved != (self.m, self.n_initial, self.method, self.n_snapshots):
            raise RLExtraError(f"{Path(ckpt) / STATE_FILE}: saved with m={saved[0]}, n={saved[1]}, method {saved[2]}, "
                               f"{saved[3]} snapshots; resumed with m={self.m}, n={self.n_initial}, "
                               f"method {self.method}, {self.n_snapshots} snapshots")
        return st

    def _restore(self, ckpt: Path) -> None:
        st = self.check_resume(ckpt)
        self.cycle_start, self.extra_steps, self.jumps = st["cycle_start"], st["extra_steps"], st["jumps"]
        self.n = st.get("n_current", st["n"])
        self.snapshots = load_snapshots(ckpt, st)
