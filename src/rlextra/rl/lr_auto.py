"""``AdaptiveLR`` (``--lr-auto``, rlextra's, not in the paper): set the learning rate from the run's own path.

Every ``every`` real steps (after the lr warm-up) it reads the ``LinearityMonitor``'s newest rows
since the last change and decides, by rules fixed before the sweeps that judge them
(bench/RESULTS.md, "Which learning rate?"):

* **cut** (x0.5, not below ``min_multiplier``) when the training reward of the last interval fell
  below the interval before by more than max(0.02, 2 standard errors of the difference), or when no
  horizon of the monitor's ladder has an in-flight weight error below the threshold (the path bends
  or is all noise at this step size: ``lr_headroom`` 1);
* **raise** (x2, not above ``max_multiplier``) when the headroom is at least 2: the path stays
  straight over twice the window's horizon, which is what twice the step would cover;
* **keep** otherwise, or while the segment has fewer than 3 monitor rows.

A change restarts the monitor's window (a new segment: the path turns at a new step size, and no
window may straddle the turn). Each decision goes to ``OUTPUT/lr_auto.jsonl`` (step, lr, the
multiplier before and after, the decision, its evidence) and to the trainer's log
(``lr_auto/multiplier``); the state is saved with each checkpoint (``lr_auto_state.json``) and a
resumed run continues it exactly.

How the lr moves: the scheduler's base rates are scaled (transformers' LambdaLR multiplies them by
its schedule at each step) and so are the optimizer's current rates, so the warm-up and schedule
keep their shape. Under DDP / FSDP2 every rank runs the monitor; rank 0 decides and the decision is
broadcast, so every rank steps with the same lr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from rlextra.errors import RLExtraError
from rlextra.io import append_run_log, read_json, restore_run_log, truncate_run_log
from rlextra.extrapolate.headroom import HEADROOM_ROWS, HEADROOM_THRESHOLD, lr_headroom
from rlextra.rl.config import LR_AUTO_EVERY, LR_AUTO_MAX, LR_AUTO_MIN, check_lr_auto
from rlextra.rl.monitor import broadcast_from_rank0

LOG_FILE = "lr_auto.jsonl"
STATE_FILE = "lr_auto_state.json"
MIN_REWARD_DROP = 0.02


def reward_drop(previous: list[float], last: list[float]) -> dict | None:
    """How far the mean reward fell from one interval to the next, and the bar it must pass (None:
    too few rewards to say)."""
    if len(previous) < 2 or len(last) < 2:
        return None

    def mean_var(x):
        m = sum(x) / len(x)
        return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)

    (m0, v0), (m1, v1) = mean_var(previous), mean_var(last)
    se = math.sqrt(v0 / len(previous) + v1 / len(last))
    return {"previous": round(m0, 4), "last": round(m1, 4), "drop": round(m0 - m1, 4),
            "bar": round(max(MIN_REWARD_DROP, 2 * se), 4), "fell": m0 - m1 > max(MIN_REWARD_DROP, 2 * se)}


def decide(headroom: dict, reward: dict | None) -> str:
    """'cut', 'raise' or 'keep' (module docstring)."""
    if (reward is not None and reward["fell"]) or headroom["multiplier"] <= 1:
        return "cut"
    return "raise" if headroom["multiplier"] >= 2 else "keep"


class AdaptiveLR(TrainerCallback):
    """Raise the lr while the path stays straight, cut it when it bends (see module docstring)."""

    def __init__(self, monitor, *, every: int = LR_AUTO_EVERY, max_multiplier: float = LR_AUTO_MAX,
                 min_multiplier: float = LR_AUTO_MIN, threshold: float = HEADROOM_THRESHOLD,
                 warmup_steps: int = 0) -> None:
        check_lr_auto(every, min_multiplier, max_multiplier)
        if monitor is None:
            raise RLExtraError("AdaptiveLR needs a LinearityMonitor (its evidence)")
        self.monitor, self.every, self.threshold, self.warmup_steps = monitor, every, threshold, warmup_steps
        self.max_multiplier, self.min_multiplier = float(max_multiplier), float(min_multiplier)
        self.multiplier = 1.0
        self.base_lrs: list[float] | None = None  # the scheduler's base rates at multiplier 1
        self.rewards: list[tuple[int, float]] = []  # (step, mean training reward) since the last two decisions
        self.decisions: list[dict] = []
        self.monitor.lr_multiplier = self.multiplier

    # -- the lr
    def _apply(self, optimizer, lr_scheduler, ratio: float) -> None:
        sched = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
        if sched is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs = [b * self.multiplier for b in self.base_lrs]
        if optimizer is not None:
            for g in optimizer.param_groups:
                g["lr"] = g["lr"] * ratio
            if sched is not None and hasattr(sched, "_last_lr"):
                sched._last_lr = [g["lr"] for g in optimizer.param_groups]  # what the trainer logs next

    def current_lr(self, optimizer) -> float | None:
        return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None

    # -- Trainer events
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        sched = getattr(lr_scheduler, "scheduler", lr_scheduler)
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.global_step > 0 and (ckpt / STATE_FILE).is_file():
            st = read_json(ckpt / STATE_FILE, "lr-auto state")
            if (st["every"], st["max"], st["min"]) != (self.every, self.max_multiplier, self.min_multiplier):
                raise RLExtraError(f"{ckpt / STATE_FILE}: saved with --lr-auto-every {st['every']}, --lr-auto-max "
                                   f"{st['max']:g}, --lr-auto-min {st['min']:g}; resumed with {self.every}, "
                                   f"{self.max_multiplier:g}, {self.min_multiplier:g}")
            self.multiplier, self.base_lrs = st["multiplier"], st["base_lrs"]
            self.rewards, self.decisions = [tuple(r) for r in st["rewards"]], st["decisions"]
            if state.is_world_process_zero:  # decisions logged after this checkpoint by the stopped run go
                restore_run_log(Path(args.output_dir) / LOG_FILE, self.decisions)
            if sched is not None and hasattr(sched, "base_lrs"):  # the scheduler's state holds them already
                sched.base_lrs = [b * self.multiplier for b in self.base_lrs]
        else:
            self.base_lrs = list(sched.base_lrs) if sched is not None and hasattr(sched, "base_lrs") \
                else [float(args.learning_rate)]
            if state.is_world_process_zero:  # a stopped run's decisions past this step go
                truncate_run_log(Path(args.output_dir) / LOG_FILE, state.global_step)
        self.monitor.lr_multiplier = self.multiplier

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None:
            return
        if "reward" in logs:
            self.rewards.append((state.global_step, float(logs["reward"])))
        logs["lr_auto/multiplier"] = self.multiplier

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        step = state.global_step
        if self.warmup_steps and step == self.warmup_steps:  # the warm-up's ramp is not the path at this lr
            self.monitor.observe(model, step)
            self.monitor.restart_window(model, step, "lr_warmup_end")
            return
        if step < self.warmup_steps + self.every or step % self.every:
            return
        self.monitor.observe(model, step)  # this step's row, whichever callback runs first
        rows = self.monitor.segment_rows()[-HEADROOM_ROWS:]
        record = None
        if len(rows) >= HEADROOM_ROWS:
            headroom = lr_headroom(rows, self.threshold)
            last = [r for s, r in self.rewards if step - self.every < s <= step]
            previous = [r for s, r in self.rewards if step - 2 * self.every < s <= step - self.every]
            reward = reward_drop(previous, last)
            decision = decide(headroom, reward)
            new = {"cut": max(self.multiplier / 2, self.min_multiplier), "keep": self.multiplier,
                   "raise": min(self.multiplier * 2, self.max_multiplier)}[decision]
            record = {"step": step, "decision": decision, "multiplier_before": self.multiplier, "multiplier": new,
                      "headroom": headroom, "reward": reward}
        record = broadcast_from_rank0(record)  # every rank steps with rank 0's decision
        self.rewards = [(s, r) for s, r in self.rewards if s > step - self.every]
        if record is None:
            return
        ratio = record["multiplier"] / self.multiplier
        self.multiplier = record["multiplier"]
        self.monitor.lr_multiplier = self.multiplier
        if ratio != 1:
            self._apply(optimizer, lr_scheduler, ratio)
            self.monitor.restart_window(model, step, "lr_change", lr_multiplier=self.multiplier)
        record["lr"] = self.current_lr(optimizer)
        self.decisions.append(record)
        if state.is_world_process_zero:
            append_run_log(Path(args.output_dir) / LOG_FILE, record)

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / STATE_FILE).write_text(json.dumps({
            "every": self.every, "max": self.max_multiplier, "min": self.min_multiplier,
            "multiplier": self.multiplier, "base_lrs": self.base_lrs, "rewards": self.rewards,
            "decisions": self.decisions}, indent=1) + "\n")
