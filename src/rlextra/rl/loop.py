"""RL-Extra for out-of-process trainers (verl): alternate a training command with extrapolation.

Cycle c starts from model M_c at effective step t_c. The user's command trains m steps from M_c
and leaves checkpoints in the cycle's folder (verl's FSDP shards global_step_N/actor, read as they
are, or any layout ``load_series`` reads). Then M_{c+1} = extrapolate(M_c at t_c,
trained at t_c + m, to t_c + m + n), and the next cycle starts at t_c + m + n: the paper's
procedure, without hard-coded paths.

``loop_state.json`` records each finished phase (written atomically), so a rerun after a crash
at any point continues where it stopped: a finished training phase is not repeated, an
extrapolation is atomic. A failing training command stops the loop with its exit code; its
output is in the cycle's train.log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from rlextra.errors import RLExtraError
from rlextra.extrapolate.registry import NORMS
from rlextra.fields import option
from rlextra.io import check_output, claim, read_json, write_atomic

PLACEHOLDERS = ("model", "output_dir", "start_step", "num_steps", "end_step", "cycle")


@dataclass
class LoopConfig:
    train_command: str  # e.g. "bash train.sh {model} {output_dir} {num_steps}"
    model: str
    workdir: str
    m: int
    n: int
    cycles: int
    start_step: int = option(0, "effective step of --model")
    norms: str = option("copy", "norm weights at a jump: copied (as the paper) or extrapolated",
                        choices=NORMS)
    max_shard_size: str = option("5GB", "largest shard of each extrapolated checkpoint")

    def __post_init__(self) -> None:
        from rlextra.checkpoints.series import MAX_STEP
        from rlextra.checkpoints.writer import parse_size
        from rlextra.rl.config import check_cycle

        check_cycle(self.m, self.n)
        if self.cycles < 1:
            raise RLExtraError(f"--cycles {self.cycles}: must be at least 1")
        if not 0 <= self.start_step <= MAX_STEP - 1 - self.cycles * (self.m + self.n):
            raise RLExtraError(f"--start-step {self.start_step}: steps must stay in 0 .. 2^53")
        if self.norms not in NORMS:
            raise RLExtraError(f"unknown --norms '{self.norms}' (copy, extrapolate)")
        parse_size(self.max_shard_size)
        _render(self.train_command, {p: "x" for p in PLACEHOLDERS})  # a bad template fails now


class TrainingCommandFailed(RLExtraError):
    def __init__(self, code: int, log: Path) -> None:
        super().__init__(f"training command failed with exit code {code}; see {log}")
        self.code = code


def _save_state(path: Path, state: dict) -> None:
    import json

    write_atomic(path, json.dumps(state, indent=1) + "\n")


def _load_state(path: Path, cfg: LoopConfig) -> dict:
    state = read_json(path)
    ok = (isinstance(state, dict) and isinstance(state.get("config"), dict) and isinstance(state.get("cycles"), list)
          and all(isinstance(c, dict) and (not c.get("extrapolated") or (
              isinstance(c["extrapolated"], str) and isinstance(c.get("end_step"), int)))
              for c in state["cycles"]))
    if not ok:
        raise RLExtraError(f"{path}: not a loop state (needs 'config' and 'cycles'); use a new --workdir")
    keys = ("m", "n", "start_step", "model")
    if {k: state["config"].get(k) for k in keys} != {k: asdict(cfg)[k] for k in keys}:
        raise RLExtraError(f"{path}: written by a loop with other m/n/start/model; use a new --workdir")
    state["config"] = asdict(cfg)
    return state


def _render(template: str, values: dict) -> str:
    try:
        return template.format(**{k: shlex.quote(str(v)) if isinstance(v, (str, Path)) else v
                                  for k, v in values.items()})
    except (KeyError, IndexError, AttributeError) as exc:
        raise RLExtraError(f"--train-command has an unknown placeholder {exc}; "
                           f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}") from None
    except ValueError as exc:  # a lone '{' or '}'
        raise RLExtraError(f"--train-command: {exc} (write a literal brace as {{{{ or }}}})") from None


def run_command(cmd: str, log: Path) -> int:
    """Run a shell command in its own process group, output to ``log``; return its exit code. If this
    process is interrupted (Ctrl-C, SIGTERM), the whole group is stopped too: a training command
    left running would go on writing into the cycle folder."""
    with open(log, "w") as f, _stops_deferred() as release:
        proc = None
        try:
            # a stop arriving while the child starts is deferred until ``proc`` exists, so the group is
            # always stopped with it (under load, one landed inside Popen once: the command outlived loop)
            proc = subprocess.Popen(cmd, shell=True, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            release()
            return proc.wait()
        except BaseException:
            if proc is not None:
                _stop_group(proc)
            raise


@contextlib.contextmanager
def _stops_deferred():
    """Within: SIGINT/SIGTERM/SIGHUP are recorded, not acted on; the ``release`` it yields restores the
    handlers and delivers what arrived (also on exit). Python runs handlers in the main thread whichever
    thread the signal reaches, so this holds where a signal mask would not (other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    arrived: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s}
    for s, handler in saved.items():
        if handler not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
            signal.signal(s, lambda signum, frame: arrived.append(signum))
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            for s, handler in saved.items():
                signal.signal(s, handler)
            for s in dict.fromkeys(arrived):
                signal.raise_signal(s)

    try:
        yield release
    finally:
        release()


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                with contextlib.suppress(ProcessLookupError):  # the shell is gone; its children too
                    os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def run_loop(cfg: LoopConfig, progress: bool = True) -> Path:
    """Run (or resume) the cycles; return the final model folder."""
    from rlextra.checkpoints import check_model_dir

    check_model_dir(cfg.model, allow_pickle=False)  # before any training command runs
    work = check_output(cfg.workdir, inputs=[cfg.model], overwrite=True, option="--workdir")
    with claim(work):  # a second loop on this folder is refused, not interleaved
        return _run_cycles(cfg, work, progress)


def _run_cycles(cfg: LoopConfig, work: Path, progress: bool) -> Path:
    from rlextra.checkpoints import load_series
    from rlextra.extrapolate import extrapolate_weights

    state_path = work / "loop_state.json"
    if state_path.exists():
        state = _load_state(state_path, cfg)
    else:
        state = {"config": asdict(cfg), "cycles": []}
    work.mkdir(parents=True, exist_ok=True)
    model, start = cfg.model, cfg.start_step
    for c in range(cfg.cycles):
        if c < len(state["cycles"]) and state["cycles"][c].get("extrapolated"):
            rec = state["cycles"][c]
            model, start = rec["extrapolated"], rec["end_step"]
            continue
        cycle_dir = work / f"cycle_{c:03d}"
        train_dir = cycle_dir / "train"
        rec = state["cycles"][c] if c < len(state["cycles"]) else {}
        if c >= len(state["cycles"]):
            state["cycles"].append(rec)
        rec.update({"cycle": c, "start_step": start, "model": str(model),
                    "end_step": start + cfg.m + cfg.n})
        if not rec.get("trained"):
            train_dir.mkdir(parents=True, exist_ok=True)
            cmd = _render(cfg.train_command, {"model": str(model), "output_dir": str(train_dir),
                                              "start_step": start, "num_steps": cfg.m,
                                              "end_step": start + cfg.m, "cycle": c})
            log = cycle_dir / "train.log"
            if progress:
                print(f"[loop {c + 1}/{cfg.cycles}] train {cfg.m} steps from step {start}: {cmd}", flush=True)
            code = run_command(cmd, log)
            if code != 0:
                _save_state(state_path, state)
                raise TrainingCommandFailed(code, log)
            series = load_series(train_dir)
            if series.newest.step != cfg.m:
                raise RLExtraError(f"{train_dir}: expected a checkpoint at step {cfg.m} (steps count from 0 "
                                   f"each cycle), found steps {series.steps}")
            rec["trained"] = str(series.newest.path)
            _save_state(state_path, state)
        target = start + cfg.m + cfg.n
        if progress:
            print(f"[loop {c + 1}/{cfg.cycles}] extrapolate steps {start}, {start + cfg.m} -> {target}", flush=True)
        out = cycle_dir / f"extrapolated-step-{target}"
        # mixed float dtypes allowed: a trainer's fp32 master weights (verl's FSDP shards) after a bf16 model
        extrapolate_weights([f"{start}={model}", f"{start + cfg.m}={rec['trained']}"], out, to_step=target,
                            norms=cfg.norms, max_shard_size=cfg.max_shard_size, overwrite=True,
                            progress=progress, allow_mixed_dtypes=True)
        rec["extrapolated"] = str(out)
        _save_state(state_path, state)
        model, start = str(out), target
    state["final_model"], state["final_step"] = str(model), start
    _save_state(state_path, state)
    return Path(model)

