"""GRPO through TRL's GRPOTrainer, saving a checkpoint series that analyze/extrapolate read.

The run folder holds ``checkpoint-0`` (the starting model, so the series begins at step 0),
TRL's ``checkpoint-N`` every ``save_every`` steps, ``run.json`` (config, task, version) and
``metrics.jsonl`` (mean training reward and held-out accuracy per checkpoint). A second call on
the same folder resumes from its last checkpoint. On CPU the trainer runs with use_cpu and bf16
off; on GPUs every GRPOConfig field (vLLM, DeepSpeed, gradient checkpointing, ...) passes
through ``extra`` / ``--grpo-arg`` and accelerate's launcher, untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

import rlextra
from rlextra.errors import RLExtraError
from rlextra.evaluation import eval_mode, evaluate, heldout_accuracy
from rlextra.io import claim, write_atomic
from rlextra.rl.callbacks import RewardProgressCallback, SeriesCallback
from rlextra.rl.config import TrainConfig
from rlextra.tasks import Task, TaskSpec, load_task


def last_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint-N (N > 0) that TRL can resume from."""
    found = [(int(m.group(1)), p) for p in run.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and int(m.group(1)) > 0
             and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def finished_step(ckpt: Path) -> int:
    """The global step a Trainer checkpoint was saved at."""
    path = ckpt / "trainer_state.json"
    try:
        return int(json.loads(path.read_text())["global_step"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise RLExtraError(f"{path}: not a Trainer state with a global_step ({type(exc).__name__}); remove this "
                           "checkpoint folder to resume from the one before") from None


def has_optimizer_state(ckpt: Path) -> bool:
    """Whether a checkpoint holds the optimizer's state in a layout the Trainer resumes from: optimizer.pt
    (.bin), FSDP's optimizer folders, per-rank files, or DeepSpeed's global_step folder."""
    return any("optimizer" in p.name or p.name.startswith("global_step") for p in ckpt.iterdir())


def check_resume_optimizer(resume: Path | None, allowed: bool) -> None:
    """Refuse to resume from a checkpoint without Adam's state: transformers' Trainer then starts the
    moments afresh without a word, an optimizer reset the run never asked for."""
    if resume is not None and not allowed and not has_optimizer_state(resume):
        raise RLExtraError(f"{resume}: has no optimizer state (optimizer.pt was deleted), so resuming from it would "
                           "restart Adam's moments silently; restore it, remove this checkpoint folder to resume from "
                           "an earlier one that has it, or pass --resume-without-optimizer")


def split_safe_check(task: Task, n: int) -> tuple[Task, Task]:
    """Set the last n training problems aside for the safe-mode check: (training task, check task).

    The check batch is held out from both training and the held-out evaluation split.
    """
    from dataclasses import replace

    if not 1 <= n < len(task.train):
        raise RLExtraError(f"--rl-extra-safe-prompts must be 1..{len(task.train) - 1} (the training set "
                           f"has {len(task.train)} problems), got {n}")
    return replace(task, train=task.train[:-n]), replace(task, test=task.train[-n:])


def reward_scorer(check: Task, tokenizer, cfg: TrainConfig):
    """model -> mean reward on the check batch, sampled like training (temperature, top-p), fixed seed."""
    from rlextra.decoding import DecodingEngine, SamplingConfig

    sampling = SamplingConfig(k=cfg.rl_extra_safe_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_completion_length, batch_size=64, seed=cfg.seed)

    def score(model) -> float:
        with eval_mode(model):
            summary = evaluate(DecodingEngine([model], None, tokenizer, mode="eager"), check, sampling=sampling,
                               progress=False)
        return summary["metrics"][f"avg@{sampling.k}"]

    return score


def replay_rows(rows: list[dict], m: int, prompts_per_step: int, seed: int, where: str = "task") -> list[dict]:
    """The rows of TRL's first m batches, in its seeded order (the permutation its RepeatSampler draws
    first with this seed): trained unshuffled, every cycle of m steps sees them again, as in the paper's
    scripts, which restart the trainer and its sampler with one seed each cycle."""
    import torch

    need = m * prompts_per_step
    if len(rows) < need:
        raise RLExtraError(f"{where}: --rl-extra-replay needs {need} training prompts (M x --prompts-per-step), "
                           f"the task has {len(rows)}")
    g = torch.Generator()
    g.manual_seed(seed)
    return [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()[:need]]


def _callbacks(cfg: TrainConfig, task: Task, run: Path, tokenizer, rl_extra=None):
    heldout = None
    if cfg.eval_problems:
        def heldout(model) -> float:
            return heldout_accuracy(model, tokenizer, task, cfg.eval_problems, cfg.max_completion_length)
    callbacks = [SeriesCallback(run, tokenizer, rl_extra=rl_extra, heldout=heldout,
                                keep_optimizer=cfg.keep_optimizer)]  # rl_extra goes first (train)
    if cfg.progress:
        callbacks.append(RewardProgressCallback())
    return callbacks


def prodigy_optimizer(lr: float, weight_decay: float, warmup_steps: int) -> tuple[type, dict]:
    """(class, kwargs) of Prodigy (prodigyopt), the learning-rate-free optimizer a user would try
    instead of a sweep; created by the trainer after the model is wrapped (DDP, FSDP). Under an lr
    warm-up it runs with ``safeguard_warmup``, as its authors advise for warm-ups."""
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise RLExtraError("--optimizer prodigy needs the prodigyopt package: pip install prodigyopt") from None
    return Prodigy, {"lr": lr, "weight_decay": weight_decay, "safeguard_warmup": warmup_steps > 0}


# GRPOConfig fields that rlextra's own options set (and its guards check): --grpo-arg may not touch them
OWNED_FIELDS = {"output_dir": "-o", "max_steps": "--steps", "save_steps": "--save-every",
                "save_strategy": "--save-every", "learning_rate": "--lr", "warmup_steps": "--lr-warmup-steps",
                "lr_scheduler_type": "--lr-warmup-steps (RL-Extra needs a constant lr)",
                "per_device_train_batch_size": "--prompts-per-step and --num-generations",
                "num_generations": "--num-generations", "beta": "--beta", "temperature": "--temperature",
                "top_p": "--top-p", "max_completion_length": "--max-completion-length", "seed": "--seed",
                "shuffle_dataset": "--rl-extra-replay", "use_vllm": "--vllm"}


def grpo_config(cfg: TrainConfig):
    """The GRPOConfig for a TrainConfig: CPU-safe defaults; user extras may add any field that
    rlextra's own options do not set."""
    import torch
    from trl import GRPOConfig

    for key in cfg.extra:
        if key in OWNED_FIELDS:
            raise RLExtraError(f"--grpo-arg {key}=...: set by rlextra's own {OWNED_FIELDS[key]}; use that option")

    cpu = not torch.cuda.is_available()
    kwargs = dict(
        output_dir=cfg.output_dir, max_steps=cfg.max_steps, save_strategy="steps",
        save_steps=cfg.save_every, logging_steps=1, report_to="none", seed=cfg.seed,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup" if cfg.warmup_steps else "constant",
        warmup_steps=cfg.warmup_steps, beta=cfg.beta, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=0, max_completion_length=cfg.max_completion_length, disable_tqdm=True,
        use_cpu=cpu, bf16=False if cpu else torch.cuda.is_bf16_supported(),
    )
    if cfg.rl_extra_replay:  # the replayed rows come in order (replay_rows drew TRL's first permutation)
        kwargs["shuffle_dataset"] = False
    if cfg.vllm:
        from rlextra.rl.vllm_sync import use_vllm_in_trl

        use_vllm_in_trl(cpu=cpu)
        kwargs.update(use_vllm=True, vllm_mode="colocate")
    kwargs.update(cfg.extra)
    try:
        config = GRPOConfig(**kwargs)
    except TypeError as exc:  # unknown --grpo-arg
        raise RLExtraError(f"GRPOConfig: {exc}") from None
    except ValueError as exc:  # TRL's / transformers' own checks
        raise RLExtraError(f"--grpo-arg: {str(exc).splitlines()[0]}") from None
    check_passed_through(config, cfg.extra)
    return config


# GRPOConfig fields a user may pass through --grpo-arg whose range TRL does not check: (field, low, low
# allowed, high); None where a bound does not apply
PASSED_THROUGH_RANGES = (("epsilon", 0.0, False, None), ("epsilon_high", 0.0, False, None),
                         ("num_iterations", 1, True, None), ("gradient_accumulation_steps", 1, True, None),
                         ("weight_decay", 0.0, True, None), ("max_grad_norm", 0.0, True, None),
                         ("max_prompt_length", 1, True, None))


def check_passed_through(config, extra: dict) -> None:
    """The --grpo-arg fields TRL takes without a range check, and the reporting integrations asked for:
    refused in one line here, not as a traceback (or a silent misrun) once training starts."""
    for field, low, inclusive, high in PASSED_THROUGH_RANGES:
        if field not in extra:
            continue
        value = getattr(config, field, None)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (value >= low if inclusive else value > low) and (high is None or value <= high)
        if not ok:
            bound = f"{'>=' if inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise RLExtraError(f"--grpo-arg {field}={value}: must be a number {bound}")
    if "report_to" in extra:
        from transformers.integrations import get_available_reporting_integrations

        wanted = [r for r in (config.report_to or []) if r not in ("none", "all")]
        missing = [r for r in wanted if r not in get_available_reporting_integrations()]
        if missing:
            raise RLExtraError(f"--grpo-arg report_to={missing[0]}: that integration's package is not installed "
                               f"here (pip install {missing[0]}), or it is not one transformers knows")


def check_run_dir(output_dir: str | Path, model_dir: str | Path | None, task: TaskSpec | None = None) -> Path:
    """The run folder, checked before any model loads: not the model or inside it, and either new,
    empty, or a previous run (resumed). With ``model_dir``, the model folder is checked too."""
    from rlextra.checkpoints import check_model_dir
    from rlextra.io import check_output

    if model_dir is not None:
        check_model_dir(model_dir)
    inputs = ([model_dir] if model_dir is not None else []) + (task.input_files() if task is not None else [])
    run = check_output(output_dir, inputs=inputs, overwrite=True)
    if run.is_dir() and any(run.iterdir()) and not ((run / "run.json").is_file() or last_checkpoint(run)):
        raise RLExtraError(f"{run}: exists and is not an rlextra run folder; give a new or empty -o")
    return run


@contextlib.contextmanager
def _resume_errors(resume: Path | None) -> Iterator[None]:
    """A checkpoint file the Trainer cannot read on resume (a corrupt optimizer.pt, rng_state.pth)
    becomes one line naming the checkpoint, not an unpickling traceback."""
    import pickle

    try:
        yield
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        if resume is None or (isinstance(exc, RuntimeError) and "PytorchStreamReader" not in str(exc)
                              and "weights_only" not in str(exc).lower()):
            raise
        raise RLExtraError(f"{resume}: a file training resumes from cannot be read ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); remove this checkpoint folder to "
                           "resume from the one before") from None


@contextlib.contextmanager
def _disk_full(run: Path) -> Iterator[None]:
    """Disk full while a checkpoint is saved (safetensors raises its own error type): one line naming
    the run folder, exit code 1."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, RLExtraError) or "No space left on device" not in str(exc):
            raise
        for ckpt in run.glob("checkpoint-*"):  # the half-written one: no trainer_state.json yet
            if ckpt.name != "checkpoint-0" and not (ckpt / "trainer_state.json").is_file():
                shutil.rmtree(ckpt, ignore_errors=True)
        err = RLExtraError(f"{run}: disk full while saving a checkpoint (No space left on device); free space "
                           "and run the same command again to resume from the last complete checkpoint")
        err.code = 1
        raise err from None


def train(cfg: TrainConfig, *, model=None, tokenizer=None, callbacks: list | None = None) -> Path:
    """Run (or resume) GRPO; return the run folder holding the checkpoint series."""
    import warnings

    import datasets
    from trl import GRPOTrainer

    # TRL 1.16 calls transformers' renamed gradient_checkpointing API on every step; not actionable
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)

    run = check_run_dir(cfg.output_dir, cfg.model if model is None else None, cfg.task)
    args = grpo_config(cfg)  # bad options fail here, before anything is written
    task = load_task(cfg.task)
    train_task, check_task = split_safe_check(task, cfg.rl_extra_safe_prompts) if cfg.rl_extra_safe else (task, None)
    rows = train_task.dataset_rows("train")
    if cfg.rl_extra_replay:
        rows = replay_rows(rows, cfg.rl_extra[0], cfg.prompts_per_step, cfg.seed, where=str(cfg.task.name))
    if model is None:  # the checked reader: a missing, mis-shaped or NaN tensor is refused
        from rlextra.hf import load_model

        model, tokenizer = load_model(cfg.model, device="cpu", dtype="auto", place=False)
    tokenizer.padding_side = "left"
    monitor = None
    if cfg.monitor_period() is not None:
        from rlextra.rl.monitor import LinearityMonitor

        primary = (sum(cfg.rl_extra) / cfg.rl_extra[0]) if cfg.rl_extra and cfg.rl_extra[1] else 2.0
        monitor = LinearityMonitor(cfg.monitor_period(), sample=cfg.monitor_sample, seed=cfg.monitor_seed,
                                   window=cfg.monitor_window, primary_alpha=primary, output_dir=run)
    lr_auto = None
    if cfg.lr_auto:
        from rlextra.rl.lr_auto import AdaptiveLR

        lr_auto = AdaptiveLR(monitor, every=cfg.lr_auto_every, max_multiplier=cfg.lr_auto_max,
                             min_multiplier=cfg.lr_auto_min, warmup_steps=cfg.warmup_steps)
    rl_extra = None
    if cfg.rl_extra:
        from rlextra.rl.rl_extra import AutoJump, RLExtraCallback, SafeMode

        safe = SafeMode(reward_scorer(check_task, tokenizer, cfg), tolerance=cfg.rl_extra_safe_tolerance) \
            if check_task else None
        rl_extra = RLExtraCallback(*cfg.rl_extra, warmup_steps=cfg.rl_extra_warmup, optimizer=cfg.rl_extra_optimizer,
                                   method=cfg.rl_extra_method, snapshots=cfg.rl_extra_snapshots,
                                   rank=cfg.rl_extra_rank, safe=safe, norms=cfg.rl_extra_norms,
                                   include=cfg.rl_extra_include, exclude=cfg.rl_extra_exclude, monitor=monitor,
                                   auto=AutoJump(monitor, cfg.rl_extra_auto_threshold) if cfg.rl_extra_auto else None)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun / accelerate, rank 0 claims and writes
    with claim(run) if main_process else contextlib.nullcontext():  # a second train on this folder is refused
        resume = last_checkpoint(run)
        if resume is not None and finished_step(resume) >= cfg.max_steps:
            return run  # done: the Trainer would run one step past --steps and save it
        check_resume_optimizer(resume, cfg.resume_without_optimizer)
        if resume is not None and rl_extra is not None:
            rl_extra.check_resume(resume)  # refused before run.json records the refused settings
        run.mkdir(parents=True, exist_ok=True)
        if main_process:
            info = {"rlextra_version": rlextra.__version__, "config": cfg.to_dict()}
            write_atomic(run / "run.json", json.dumps(info, indent=1) + "\n")
        trainer = GRPOTrainer(model=model, reward_funcs=[task.reward], args=args,
                              train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                              callbacks=_callbacks(cfg, task, run, tokenizer, rl_extra) + list(callbacks or []))
        if cfg.optimizer == "prodigy":
            trainer.optimizer_cls_and_kwargs = prodigy_optimizer(cfg.learning_rate, args.weight_decay, cfg.warmup_steps)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)  # ours shows the reward; theirs prints every log dict
        trainer.remove_callback(PrinterCallback)
        # first (the monitor before the others), so the values they add to a log reach TensorBoard / W&B too
        for cb in (lr_auto, rl_extra, monitor):
            if cb is not None:
                trainer.callback_handler.callbacks.insert(0, cb)
        with _resume_errors(resume), _disk_full(run):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return run
