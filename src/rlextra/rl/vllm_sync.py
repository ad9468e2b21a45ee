"""GRPO generating with vLLM in the trainer's process (TRL's colocate mode), weights synced in place.

Why ours (a deviation from TRL's own sync, not the paper's): TRL 1.16 pushes the trained weights into
vLLM one tensor at a time through the model's ``load_weights``; on vLLM 0.32's CPU path that fails at
the first sync (its linear layers' weights are already processed and have no ``weight_loader``; TRL
supports vLLM <= 0.31). vLLM's own in-place reload (``reload_weights`` with a weights iterator) takes
the trainer's state in checkpoint format and processes it as at load time, on the CPU and on GPUs.
So after every optimizer step (and every RL-Extra jump, which lands before the next generation), the
next generation samples from exactly the trainer's weights: tested by comparing vLLM's log-probs with
the trainer model's on a fixed prompt after each step. On a CPU the engine runs eager (compiling took
about 200 s at start here).
"""

from __future__ import annotations

import functools
import os
import weakref

_ACTIVE: list = []  # the VLLMGeneration that synced last (weakly), for checks
_PATCHED: dict = {}


def use_vllm_in_trl(cpu: bool) -> None:
    """Route TRL's colocated vLLM through rlextra's sync (idempotent); one-line error without vLLM."""
    from rlextra.decoding.backends import require_vllm

    require_vllm("--vllm")
    import trl.generation.vllm_generation as generation

    if "sync" not in _PATCHED:
        _PATCHED["sync"] = generation.VLLMGeneration.sync_weights
        generation.VLLMGeneration.sync_weights = sync_weights
    if cpu and "llm" not in _PATCHED:
        import vllm

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        _PATCHED["llm"] = generation.LLM
        # fp32 as the trainer on a CPU (vLLM's own 'auto' would run the fp32 model in half precision there)
        generation.LLM = functools.partial(vllm.LLM, enforce_eager=True, dtype="float32")


def sync_weights(self) -> None:
    """Colocate mode: the trainer's full state into vLLM in one in-place reload; other modes: TRL's."""
    if self.mode != "colocate":
        return _PATCHED["sync"](self)
    if self.enable_sleep_mode:
        self.llm.wake_up(tags=["weights"])
        self._llm_weights_sleeping = False
    weights = [(name, param.detach()) for name, param in self._iter_named_params()]
    self.llm.llm_engine.model_executor.driver_worker.model_runner.reload_weights(weights_iterator=iter(weights))
    self.llm.reset_prefix_cache()
    _ACTIVE[:] = [weakref.ref(self)]


def active_generation():
    """The VLLMGeneration that synced last in this process, or None."""
    return _ACTIVE[0]() if _ACTIVE else None
