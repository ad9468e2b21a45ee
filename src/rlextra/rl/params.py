"""Which trainable weights a jump moves, and where it reads and writes them: the full tensor (single
process, DDP), the process's local shard (FSDP2's DTensor), or DeepSpeed ZeRO-3's fp32 partition.
The one place RL-Extra learns about sharded training."""

from __future__ import annotations

import re

from rlextra.errors import RLExtraError
from rlextra.hf import is_norm_weight


def local(p):
    """The tensor this process owns for parameter p (the local shard under FSDP2)."""
    data = p.data
    return data.to_local() if hasattr(data, "to_local") else data


def is_zero3(p) -> bool:
    return hasattr(p, "ds_id")


def is_sharded(p) -> bool:
    """Whether this process holds only part of p (FSDP2 or ZeRO-3)."""
    return hasattr(p.data, "to_local") or is_zero3(p)


def _regex(flag: str, text: str | None):
    try:
        return re.compile(text) if text else None
    except re.error as exc:
        raise RLExtraError(f"{flag} {text!r}: not a regular expression ({exc})") from None


class ParameterAccess:
    """The parameters a jump moves (trainable; norms unless ``norms`` is "extrapolate"; filtered by
    the include/exclude regexes) and their reads and writes, shard-aware."""

    def __init__(self, norms: str = "copy", include: str | None = None, exclude: str | None = None) -> None:
        self.norms = norms
        self.include, self.exclude = (_regex(flag, text) for flag, text in
                                      (("--rl-extra-include", include), ("--rl-extra-exclude", exclude)))

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

    @staticmethod
    def read(p):
        if is_zero3(p):
            from deepspeed.utils import safe_get_local_fp32_param

            return safe_get_local_fp32_param(p)
        return local(p)

    @staticmethod
    def write(p, value) -> None:
        if is_zero3(p):
            from deepspeed.utils import safe_set_local_fp32_param

            safe_set_local_fp32_param(p, value)
            p.ds_tensor.data.copy_(value.to(p.ds_tensor.dtype))
        else:
            local(p).copy_(value.to(local(p).dtype))

    def copy(self, model) -> dict:
        """fp32 CPU copies of the selected parameters (this process's part of each)."""
        return {name: self.read(p).detach().float().cpu().clone() for name, p in self.selected(model)}

    def restore(self, model, weights: dict) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.selected(model):
                self.write(p, weights[name].to(self.read(p).device))
