"""What a GRPO run is configured by: ``TrainConfig`` (one field per ``rlextra train`` option, with
its help) and the one check of an RL-Extra cycle. Light to import: the CLI derives its options here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rlextra.errors import RLExtraError
from rlextra.extrapolate.registry import ALIASES, METHODS, NORMS, canonical
from rlextra.sampling import check_seed
from rlextra.fields import option
from rlextra.linefit import MAX_ALPHA
from rlextra.tasks import TaskSpec


# rlextra's default for --rl-extra-auto-threshold: chosen on a selection seed (bench/RESULTS.md, "Adaptive RL-Extra")
AUTO_THRESHOLD = 0.8
# rlextra's default for --rl-extra-safe-tolerance: the mean-reward drop a safe-mode jump may cause
SAFE_TOLERANCE = 0.02


# rlextra's defaults for --lr-auto (fixed before the learning-rate sweeps that judge it)
LR_AUTO_MAX = 16.0
LR_AUTO_MIN = 0.25
LR_AUTO_EVERY = 10


def check_lr_auto(every: int, min_multiplier: float, max_multiplier: float) -> None:
    """The one check of --lr-auto's options (config, CLI and callback)."""
    if isinstance(every, bool) or not (isinstance(every, int) and every >= 2):
        raise RLExtraError(f"--lr-auto-every {every}: must be an integer >= 2")
    if not (math.isfinite(max_multiplier) and max_multiplier >= 1):
        raise RLExtraError(f"--lr-auto-max {max_multiplier}: must be a finite number >= 1")
    if not (math.isfinite(min_multiplier) and 0 < min_multiplier <= 1):
        raise RLExtraError(f"--lr-auto-min {min_multiplier}: must be in (0, 1]")


def check_monitor(every: int | None, window: int, sample: float, seed: int) -> None:
    """The one check of the monitor's options (every: None when off): TrainConfig and LinearityMonitor."""
    if every is not None and (isinstance(every, bool) or not (isinstance(every, int) and every >= 1)):
        raise RLExtraError(f"--monitor-every {every}: must be an integer >= 1")
    if isinstance(window, bool) or not (isinstance(window, int) and window >= 3):
        raise RLExtraError(f"--monitor-window {window}: must be an integer >= 3 (a line and a point to check)")
    if isinstance(sample, bool) or not (isinstance(sample, (int, float)) and math.isfinite(sample) and 0 < sample <= 1):
        raise RLExtraError(f"--monitor-sample {sample}: must be in (0, 1]")
    check_seed(seed, "--monitor-seed")


def check_cycle(m: int, n: int) -> None:
    """The one check of an RL-Extra cycle's m (real steps) and n (extrapolated steps): callback, loop, CLI."""
    if isinstance(m, bool) or isinstance(n, bool) or int(m) != m or int(n) != n or m < 1 or n < 0:
        raise RLExtraError(f"--rl-extra {m},{n}: RL-Extra needs M >= 1 real steps and N >= 0 extrapolated "
                           f"steps (m >= 1, n >= 0)")
    if (m + n) / m > MAX_ALPHA:
        raise RLExtraError(f"--rl-extra {m},{n}: a jump to alpha (M + N) / M = {(m + n) / m:.3g}; rlextra's bound is "
                           f"{MAX_ALPHA:g}, as for --alpha")



@dataclass
class TrainConfig:
    model: str
    output_dir: str
    task: TaskSpec = field(default_factory=TaskSpec)
    max_steps: int = option(100, "optimizer steps", flag="--steps")
    save_every: int = option(10, "checkpoint every k steps")
    learning_rate: float = option(1e-6, "learning rate: linear warm-up over --lr-warmup-steps, then constant",
                                  flag="--lr")
    warmup_steps: int = option(0, "steps of linear lr warm-up (a jump or extrapolation never moves the lr)",
                               flag="--lr-warmup-steps")
    prompts_per_step: int = option(8, "prompts per optimizer step")
    num_generations: int = option(8, "samples per prompt (the GRPO group)")
    max_completion_length: int = option(512, "new tokens per sample at most")
    temperature: float = option(1.0, "sampling temperature of the rollouts")
    top_p: float = option(1.0, "nucleus threshold of the rollouts")
    beta: float = option(0.0, "KL coefficient (0 as in the paper)")
    seed: int = option(0, "training seed")
    keep_optimizer: str = option(
        "every", "Adam's state (and RL-Extra's anchor) in every checkpoint (every), or only in the newest one, which a "
        "resume reads (last: saves about twice the model's size per older checkpoint, three times with RL-Extra)",
        choices=("every", "last"))
    resume_without_optimizer: bool = option(
        False, "resume from a checkpoint whose Adam state was deleted, with Adam's moments started afresh (without "
        "this flag such a resume is refused: the trainer would restart them silently)")
    eval_problems: int = option(200, "held-out problems graded greedily at each checkpoint (0: off)")
    rl_extra: tuple[int, int] | None = option(
        None, "RL-Extra: after every M real steps jump N extrapolated steps (use a constant lr); M,0 with the "
        "reset policy is the control run: the optimizer restarts every M steps, no jump", metavar="M,N")
    rl_extra_warmup: int = option(0, "real steps before the first RL-Extra cycle")
    rl_extra_replay: bool = option(
        False, "the paper's data order: every cycle trains on the same first M batches of prompts, in the same "
        "order (its scripts restart the trainer, and so the seeded sampler, each cycle); default: the data "
        "order runs on as in GRPO")
    rl_extra_optimizer: str = option(
        "reset", "after each jump: reset the optimizer state (the paper's procedure, which restarts its trainer "
        "each cycle) or keep Adam's moments (rlextra's option)", choices=("reset", "keep"))
    rl_extra_method: str = option(
        "two-point", "jump: two-point (the paper's), or lsq / low-rank over snapshots of the cycle (rlextra's)",
        choices=(*METHODS, *ALIASES))
    rl_extra_snapshots: int | None = option(None, "snapshots per cycle kept in CPU memory for lsq/low-rank (default 3)")
    rl_extra_rank: int = option(1, "rank of the low-rank jump")
    rl_extra_norms: str = option("copy", "norm weights at a jump: kept (copy, as the paper) or extrapolated",
                                 choices=NORMS)
    rl_extra_include: str | None = option(None, "jump only parameters whose name matches this regex", metavar="REGEX")
    rl_extra_exclude: str | None = option(None, "leave parameters whose name matches this regex where they are",
                                          metavar="REGEX")
    rl_extra_safe: bool = option(False, "safe mode (rlextra's): score each jump on a fixed set-aside batch of "
                                        "training prompts; roll back and halve N when the mean reward drops by "
                                        "more than the tolerance")
    rl_extra_safe_prompts: int = option(32, "training prompts set aside for the safe-mode check")
    rl_extra_safe_samples: int = option(4, "samples per prompt in the safe-mode check")
    rl_extra_safe_tolerance: float = option(SAFE_TOLERANCE, "allowed drop of mean reward before a rollback")
    rl_extra_auto: bool = option(False, "adaptive RL-Extra (rlextra's): at each cycle end the linearity monitor's "
                                        "in-flight backtest picks n, the largest of m/4, m/2, m, 2m, 5m (capped by N) "
                                        "whose weight error stays below the threshold; 0 (no jump) when none does")
    rl_extra_auto_threshold: float = option(AUTO_THRESHOLD, "largest in-flight weight error at which --rl-extra-auto "
                                                            "jumps")
    lr_auto: bool = option(False, "adaptive learning rate (rlextra's heuristic): every --lr-auto-every steps the "
                                  "linearity monitor's lr headroom raises the lr x2 while the path stays straight "
                                  "at twice the horizon, and cuts it x0.5 when it bends or the reward falls")
    lr_auto_every: int = option(LR_AUTO_EVERY, "real steps between --lr-auto decisions")
    lr_auto_max: float = option(LR_AUTO_MAX, "largest lr multiplier --lr-auto may reach")
    lr_auto_min: float = option(LR_AUTO_MIN, "smallest lr multiplier --lr-auto may reach")
    vllm: bool = option(False, "generate with vLLM inside the trainer's process (TRL's colocate mode), weights synced "
                               "in place after every step (needs vLLM: pip install vllm, or scripts/setup-vllm.sh "
                               "on a CPU)")
    optimizer: str = option("adamw", "adamw (the trainer's default), or prodigy (prodigyopt, learning-rate free: "
                                     "--lr scales its own step estimate; its authors recommend --lr 1.0)",
                            choices=("adamw", "prodigy"))
    monitor_every: int | None = option(None, "linearity monitor: snapshot a sample of the weights every K optimizer "
                                             "steps and log the window's R^2 and in-flight backtest (default off; "
                                             "on with --rl-extra-auto: every max(1, M/10) steps)", metavar="K")
    monitor_sample: float = option(0.001, "fraction of each tensor the monitor samples (at least 50 entries; 1 = all)")
    monitor_seed: int = option(0, "seed of the monitor's sample (the same entries as analyze weights --seed)")
    monitor_window: int = option(8, "snapshots in the monitor's sliding window")
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # more GRPOConfig fields, passed through

    def __post_init__(self) -> None:
        self.rl_extra_method = canonical(self.rl_extra_method)  # an older name resumes as the current one
        ints = [("--steps", self.max_steps, 1), ("--save-every", self.save_every, 1),
                ("--prompts-per-step", self.prompts_per_step, 1),
                ("--num-generations", self.num_generations, 2),  # GRPO's advantage needs a group
                ("--max-completion-length", self.max_completion_length, 1),
                ("--lr-warmup-steps", self.warmup_steps, 0), ("--eval-problems", self.eval_problems, 0),
                ("--rl-extra-warmup", self.rl_extra_warmup, 0)]
        check_seed(self.seed)
        for option, value, low in ints:
            if not (isinstance(value, int) and value >= low):
                raise RLExtraError(f"{option} {value}: must be an integer >= {low}")
        floats = [("--lr", self.learning_rate, 0.0, False), ("--temperature", self.temperature, 0.0, False),
                  ("--beta", self.beta, 0.0, True)]
        for option, value, low, inclusive in floats:
            if not (math.isfinite(value) and (value >= low if inclusive else value > low)):
                raise RLExtraError(f"{option} {value}: must be a finite number {'>=' if inclusive else '>'} {low:g}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise RLExtraError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.rl_extra is not None:
            check_cycle(*self.rl_extra)
        for option, value, low in (("--rl-extra-rank", self.rl_extra_rank, 1),
                                   ("--rl-extra-safe-prompts", self.rl_extra_safe_prompts, 1),
                                   ("--rl-extra-safe-samples", self.rl_extra_safe_samples, 1)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= low):
                raise RLExtraError(f"{option} {value}: must be an integer >= {low}")
        if self.rl_extra_snapshots is not None and not (isinstance(self.rl_extra_snapshots, int)
                                                        and self.rl_extra_snapshots >= 2):
            raise RLExtraError(f"--rl-extra-snapshots {self.rl_extra_snapshots}: must be an integer >= 2")
        if not (math.isfinite(self.rl_extra_safe_tolerance) and self.rl_extra_safe_tolerance >= 0):
            raise RLExtraError(f"--rl-extra-safe-tolerance {self.rl_extra_safe_tolerance}: "
                               "must be a finite number >= 0")
        for flag, on in (("--rl-extra-safe", self.rl_extra_safe),
                         ("--rl-extra-method", self.rl_extra_method != "two-point"),
                         ("--rl-extra-warmup", self.rl_extra_warmup > 0)):
            if on and self.rl_extra is None:
                raise RLExtraError(f"{flag} needs --rl-extra M,N (without it there is no RL-Extra to apply it to)")
        if self.rl_extra_replay and self.rl_extra is None:
            raise RLExtraError("--rl-extra-replay needs --rl-extra M,N (it replays the first M batches each cycle)")
        if self.rl_extra_replay and self.rl_extra_warmup:
            raise RLExtraError(f"--rl-extra-replay with --rl-extra-warmup {self.rl_extra_warmup}: the paper's "
                               "replay starts every cycle at the sampler's first batch; use no warm-up")
        if self.rl_extra_auto and self.rl_extra is None:
            raise RLExtraError("--rl-extra-auto needs --rl-extra M,N (N is the largest jump it may take)")
        if self.rl_extra_auto and self.rl_extra_method == "low-rank":
            raise RLExtraError("--rl-extra-auto judges two-point and lsq jumps; the in-flight backtest has no low-rank")
        if not (math.isfinite(self.rl_extra_auto_threshold) and self.rl_extra_auto_threshold > 0):
            raise RLExtraError(f"--rl-extra-auto-threshold {self.rl_extra_auto_threshold}: must be a finite number > 0")
        check_lr_auto(self.lr_auto_every, self.lr_auto_min, self.lr_auto_max)
        unused = [("--rl-extra-auto-threshold", self.rl_extra_auto_threshold, AUTO_THRESHOLD, self.rl_extra_auto,
                   "--rl-extra-auto"),
                  ("--lr-auto-every", self.lr_auto_every, LR_AUTO_EVERY, self.lr_auto, "--lr-auto"),
                  ("--lr-auto-max", self.lr_auto_max, LR_AUTO_MAX, self.lr_auto, "--lr-auto"),
                  ("--lr-auto-min", self.lr_auto_min, LR_AUTO_MIN, self.lr_auto, "--lr-auto"),
                  ("--monitor-sample", self.monitor_sample, 0.001, self.monitor_period() is not None,
                   "--monitor-every (or --rl-extra-auto, --lr-auto)"),
                  ("--monitor-window", self.monitor_window, 8, self.monitor_period() is not None,
                   "--monitor-every (or --rl-extra-auto, --lr-auto)"),
                  ("--monitor-seed", self.monitor_seed, 0, self.monitor_period() is not None,
                   "--monitor-every (or --rl-extra-auto, --lr-auto)")]
        for flag, value, default, on, needs in unused:
            if value != default and not on:
                raise RLExtraError(f"{flag} {value:g}: has no effect without {needs}; add it or leave {flag} out")
        if self.lr_auto and self.rl_extra is not None:
            raise RLExtraError("--lr-auto with --rl-extra: both set how far a step goes (lr or jump); use one")
        if self.lr_auto and self.optimizer == "prodigy":
            raise RLExtraError("--lr-auto with --optimizer prodigy: Prodigy sets its own step size; use one")
        if self.optimizer == "prodigy" and self.learning_rate < 0.1:
            raise RLExtraError(f"--optimizer prodigy with --lr {self.learning_rate:g}: Prodigy's lr scales its own "
                               "step estimate (its authors recommend 1.0); pass --lr 1.0")
        check_monitor(self.monitor_every, self.monitor_window, self.monitor_sample, self.monitor_seed)

    def monitor_period(self) -> int | None:
        """Steps between monitor snapshots: --monitor-every, else every max(1, M/10) under --rl-extra-auto
        and every max(1, K/5) under --lr-auto (K: --lr-auto-every)."""
        if self.monitor_every is not None:
            return self.monitor_every
        if self.lr_auto:
            return max(1, self.lr_auto_every // 5)
        return max(1, self.rl_extra[0] // 10) if self.rl_extra_auto else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["task"] = self.task.to_dict()
        d["rl_extra"] = list(self.rl_extra) if self.rl_extra else None
        return d
