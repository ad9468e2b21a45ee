"""Trainer callbacks that make a GRPO run a checkpoint series: checkpoint-0, metrics.jsonl, a reward bar.

Module-level and given what they need, so they plug into any transformers/TRL trainer.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from rlextra.io import append_run_log, truncate_run_log
from rlextra.rl.cycle_state import ANCHOR_FILE


class SeriesCallback(TrainerCallback):
    """Saves checkpoint-0 and appends one metrics.jsonl line per checkpoint (mean reward, the lr the
    last step ran at, training seconds).

    ``heldout(model) -> accuracy`` adds a held-out accuracy to each line; ``rl_extra`` (an
    RLExtraCallback) adds the effective step, counting the steps its jumps skipped. ``keep_optimizer``
    "last" deletes the optimizer and scheduler files of every older checkpoint after each save: the
    analyses read weights only, and Adam's state is twice the model (1 GB at 135M parameters, fp32).
    """

    def __init__(self, run: str | Path, tokenizer, *, rl_extra=None,
                 heldout: Callable[[Any], float] | None = None, keep_optimizer: str = "every") -> None:
        self.run = Path(run)
        self.keep_optimizer = keep_optimizer
        self.tokenizer = tokenizer
        self.rl_extra = rl_extra
        self.heldout = heldout
        self.rewards: list[float] = []
        self.learning_rate: float | None = None
        self.t0 = time.perf_counter()

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        if optimizer is not None:  # what this step will run at (warm-up, schedule, --lr-auto included)
            self.learning_rate = float(optimizer.param_groups[0]["lr"])

    def _log(self, step: int, model) -> None:
        row = {"step": step,
               "mean_reward": sum(self.rewards) / len(self.rewards) if self.rewards else None}
        if self.rl_extra is not None:
            row["effective_step"] = step + self.rl_extra.extra_steps
        row["learning_rate"] = self.learning_rate  # the lr the last step ran at (None at step 0: none ran)
        row["train_seconds"] = round(time.perf_counter() - self.t0, 3)  # this process, since start
        if self.heldout is not None:
            row["heldout_accuracy"] = self.heldout(model)
        append_run_log(self.run / "metrics.jsonl", row)
        self.rewards = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        if state.is_world_process_zero:  # rows of a stopped run past the checkpoint resumed from go
            truncate_run_log(self.run / "metrics.jsonl", state.global_step)
        base = self.run / "checkpoint-0"
        if state.global_step == 0 and not (base / "trainer_state.json").is_file():
            tmp = self.run / ".checkpoint-0.tmp"
            shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftover (train holds the run's lock)
            try:
                model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
                (tmp / "trainer_state.json").write_text(json.dumps({"global_step": 0}))
                tmp.rename(base)
            except BaseException:  # disk full, Ctrl-C: no half-written checkpoint is left behind
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._log(0, model)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "reward" in logs:
            self.rewards.append(float(logs["reward"]))

    def on_save(self, args, state, control, model=None, **kw):
        self._log(state.global_step, model)
        if self.keep_optimizer == "last" and state.is_world_process_zero:
            prune_optimizer_state(self.run, keep_step=state.global_step)


OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", ANCHOR_FILE)  # what only a resume reads


def prune_optimizer_state(run: Path, keep_step: int) -> None:
    """Delete the optimizer and scheduler files, and RL-Extra's anchor snapshots, of every checkpoint
    before ``keep_step`` (the newest, which a resume reads); weights, trainer state and RNG state stay.
    Steps compare as numbers: checkpoint-90 is older than checkpoint-120 (a copy of this in a shell
    script, sorting by text, once kept Adam's state in the wrong checkpoint)."""
    for ckpt in Path(run).glob("checkpoint-*"):
        step = ckpt.name.rpartition("-")[2]
        if step.isdigit() and int(step) < keep_step:
            for name in OPTIMIZER_FILES:
                (ckpt / name).unlink(missing_ok=True)


class RewardProgressCallback(TrainerCallback):
    """One progress bar with the latest mean reward (and, with the monitor, window R^2 and in-flight
    weight error), instead of a dict printed per step."""

    def __init__(self) -> None:
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kw):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="GRPO", unit="step")

    def on_step_end(self, args, state, control, **kw):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "reward" in logs:
            self.postfix["reward"] = f"{float(logs['reward']):.3f}"
        for key, short in (("linearity/mean_r2", "R2"), ("backtest/two-point/weight_error", "err")):
            if logs and key in logs:  # the linearity monitor's latest row (it logs first)
                self.postfix[short] = f"{float(logs[key]):.3f}"
        if self.postfix:
            self.bar.set_postfix(self.postfix)

    def on_train_end(self, args, state, control, **kw):
        self.bar.close()
