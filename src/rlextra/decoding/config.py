"""The one set of sampling settings every decoder takes, checked when it is made, and the decoder shape."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

from rlextra.errors import RLExtraError


@dataclass
class SamplingConfig:
    """How to sample: k completions per prompt; temperature 0 = greedy; top_k 0 = off.

    top_k defaults to off (HF generate's own default would be 50). Temperature, then top-k, then
    top-p, as HF generate orders them. ``stop`` strings end a completion and are cut from it.
    """

    k: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    batch_size: int = 32  # rows (prompts x samples) decoded together; whole prompts per batch
    seed: int = 0

    def __post_init__(self) -> None:
        self.stop = list(self.stop or [])
        if self.k < 1:
            raise RLExtraError(f"--k {self.k}: need at least 1 sample per prompt")
        if self.max_new_tokens < 1:
            raise RLExtraError(f"--max-new-tokens {self.max_new_tokens}: need at least 1")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise RLExtraError(f"--temperature {self.temperature}: need a finite value >= 0 (0 = greedy)")
        if not (0 < self.top_p <= 1):
            raise RLExtraError(f"--top-p {self.top_p}: need 0 < top-p <= 1")
        if self.top_k < 0:
            raise RLExtraError(f"--top-k {self.top_k}: need >= 0 (0 = off)")
        if self.batch_size < 1:
            raise RLExtraError(f"--batch-size {self.batch_size}: need at least 1")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RLExtraError("--stop: stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)


class Decoder(Protocol):
    """Anything that turns prompts into k completions each: the engine, HF generate, vLLM."""

    name: str  # how the completions were made, for reports (e.g. 'hf', 'rlextra', 'logits-extrapolation ...')
    label: str  # which model(s), for reports
    tokenizer: object

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        """cfg.k completions per prompt, in prompt order."""
