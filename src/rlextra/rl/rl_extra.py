"""RL-Extra inside the trainer: m real optimizer steps, then a jump of n extrapolated steps, repeat.

At the start of a cycle the callback keeps an anchor copy of the trainable weights (CPU, fp32).
After m optimizer steps it sets W <- W + (n/m)(W - W_anchor) in place, which is the paper's
weight extrapolation with b = cycle start, s = now, T = s + n (the K = 2 line of
``rlextra.linefit``), and starts the next cycle from there. Norm weights follow the same policy as
``rlextra extrapolate`` (not moved by default). A jump does not advance the step counter or the
learning-rate scheduler: use a constant learning rate.

Where the update happens: the tensor each process owns. Single process and DDP: the full
parameter (every replica applies the same jump to the same weights). FSDP: the local shard
(``DTensor.to_local()`` or FSDP1's flat-parameter view); the update is elementwise, so shards need
no communication. DeepSpeed ZeRO-3: the local fp32 master partition through
``deepspeed.utils.safe_get/set_local_fp32_param`` (and the low-precision partition is refreshed).
DeepSpeed ZeRO-1/2 is refused (its fp32 master copy, held by the optimizer, would overwrite the
jump). Only single process and DDP are tested here (CPU); FSDP and DeepSpeed are not.
With TRL + vLLM, the jump lands in on_step_end, before the next step's generation; TRL pushes
weights to vLLM whenever the global step has changed since its last sync, so the next sync carries
the jumped weights (completions already buffered by steps_per_generation > 1 are not regenerated).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from transformers import TrainerCallback

from rlextra.errors import RLExtraError
from rlextra.extrapolate.weights import is_norm_weight
from rlextra.linefit import two_point

STATE_FILE = "rl_extra_state.json"
ANCHOR_FILE = "rl_extra_anchor.safetensors"


def _local(p):
    """The tensor this process owns for parameter p (the local shard under FSDP2)."""
    data = p.data
    return data.to_local() if hasattr(data, "to_local") else data


def _is_zero3(p) -> bool:
    return hasattr(p, "ds_id")


class RLExtraCallback(TrainerCallback):
    """Interleave m real steps with jumps of n extrapolated steps (see module docstring)."""

    def __init__(self, m: int, n: int, *, warmup_steps: int = 0, reset_optimizer: bool = False,
                 norms: str = "copy", include: str | None = None, exclude: str | None = None) -> None:
        if m < 1 or n < 0:
            raise ValueError(f"RL-Extra needs m >= 1 real steps and n >= 0 extrapolated steps, got {m}, {n}")
        if norms not in ("copy", "extrapolate"):
            raise ValueError(f"norms must be 'copy' or 'extrapolate', got {norms!r}")
        self.m, self.n = m, n
        self.warmup_steps = warmup_steps
        self.reset_optimizer = reset_optimizer
        self.norms = norms
        self.include = re.compile(include) if include else None
        self.exclude = re.compile(exclude) if exclude else None
        self.anchor: dict[str, object] | None = None
        self.cycle_start: int | None = None
        self.extra_steps = 0
        self.jumps: list[dict] = []

    # -- which parameters jump
    def selected(self, model) -> list[tuple[str, object]]:
        out = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if self.norms == "copy" and is_norm_weight(name):
                continue
            if self.include and not self.include.search(name):
                continue
            if self.exclude and self.exclude.search(name):
                continue
            out.append((name, p))
        return out

    def _read(self, p):
        if _is_zero3(p):
            from deepspeed.utils import safe_get_local_fp32_param

            return safe_get_local_fp32_param(p)
        return _local(p)

    def _write(self, p, value) -> None:
        if _is_zero3(p):
            from deepspeed.utils import safe_set_local_fp32_param

            safe_set_local_fp32_param(p, value)
            p.ds_tensor.data.copy_(value.to(p.ds_tensor.dtype))
        else:
            _local(p).copy_(value.to(_local(p).dtype))

    def take_anchor(self, model, step: int) -> None:
        self.anchor = {name: self._read(p).detach().float().cpu().clone() for name, p in self.selected(model)}
        self.cycle_start = step

    def jump(self, model, optimizer=None, step: int = 0) -> dict:
        """W <- W + (n/m)(W - anchor) for the selected parameters; returns the jump's statistics."""
        import torch

        alpha = (self.m + self.n) / self.m  # b = anchor, s = now, T = now + n
        sq_delta = sq_w = 0.0
        with torch.no_grad():
            for name, p in self.selected(model):
                cur = self._read(p).float()
                anchor = self.anchor[name].to(cur.device)
                new = two_point(anchor, cur, alpha)
                sq_delta += float(((new - cur) ** 2).sum())
                sq_w += float((cur ** 2).sum())
                self._write(p, new)
        if self.reset_optimizer and optimizer is not None:
            optimizer.state.clear()
        self.extra_steps += self.n
        record = {"real_step": step, "effective_step": step + self.extra_steps, "n": self.n, "m": self.m,
                  "jump_norm": math.sqrt(sq_delta), "relative_jump": math.sqrt(sq_delta / sq_w) if sq_w else None}
        self.jumps.append(record)
        return record

    # -- Trainer events
    def on_train_begin(self, args, state, control, model=None, **kw):
        if getattr(args, "deepspeed", None) and not any(_is_zero3(p) for p in model.parameters()):
            raise RLExtraError("RL-Extra under DeepSpeed ZeRO-1/2 is not supported: the fp32 master weights "
                               "live in the optimizer and would overwrite the jump; use ZeRO-3, FSDP or DDP")
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.global_step > 0 and (ckpt / STATE_FILE).is_file():
            self._restore(ckpt)
        elif state.global_step >= self.warmup_steps:
            self.take_anchor(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        step = state.global_step
        if self.anchor is None:
            if step >= self.warmup_steps:
                self.take_anchor(model, step)
            return
        if step - self.cycle_start >= self.m:
            record = self.jump(model, optimizer, step)
            if state.is_world_process_zero:
                with open(Path(args.output_dir) / "rl_extra.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.take_anchor(model, step)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is not None:
            logs["rl_extra/real_step"] = state.global_step
            logs["rl_extra/effective_step"] = state.global_step + self.extra_steps

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero or self.anchor is None:
            return
        from safetensors.torch import save_file

        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.anchor.items()}, str(ckpt / ANCHOR_FILE))
        (ckpt / STATE_FILE).write_text(json.dumps({
            "m": self.m, "n": self.n, "cycle_start": self.cycle_start, "extra_steps": self.extra_steps,
            "warmup_steps": self.warmup_steps, "jumps": self.jumps}, indent=1) + "\n")

    def _restore(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        st = json.loads((ckpt / STATE_FILE).read_text())
        if (st["m"], st["n"]) != (self.m, self.n):
            raise RLExtraError(f"{ckpt / STATE_FILE}: saved with m={st['m']}, n={st['n']}, "
                             f"resumed with m={self.m}, n={self.n}")
        self.cycle_start, self.extra_steps, self.jumps = st["cycle_start"], st["extra_steps"], st["jumps"]
        self.anchor = load_file(str(ckpt / ANCHOR_FILE))
