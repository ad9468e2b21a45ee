"""The RLVR harness: GRPO training through TRL into a checkpoint series, and RL-Extra.

``train``/``TrainConfig`` run (or resume) GRPO into a checkpoint series; ``RLExtraCallback`` (with
``SafeMode`` and ``AutoJump``) plugs the RL-Extra jump into any transformers/TRL trainer;
``LinearityMonitor`` measures the run's linearity while it trains, and ``AdaptiveLR`` sets the
learning rate from it (rlextra's heuristic). Exported lazily: TRL and
transformers take seconds to import, and ``TrainConfig`` (``rlextra.rl.config``) needs neither.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"train": "rlextra.rl.grpo", "TrainConfig": "rlextra.rl.config",
            "RLExtraCallback": "rlextra.rl.rl_extra", "SafeMode": "rlextra.rl.rl_extra",
            "AutoJump": "rlextra.rl.rl_extra", "LinearityMonitor": "rlextra.rl.monitor",
            "AdaptiveLR": "rlextra.rl.lr_auto"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlextra.rl' has no attribute {name!r}")
