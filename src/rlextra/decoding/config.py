"""The one set of sampling settings every decoder takes, checked when it is made, and the decoder shape."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

from rlextra.errors import RLExtraError
from rlextra.sampling import MAX_SEED
from rlextra.fields import option


def check_sampling(cfg) -> None:
    """One-line errors naming the option for sampling settings out of range (or of the wrong type)."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    checks = [
        (is_int(cfg.k) and cfg.k >= 1, "--k", "at least 1 sample per prompt"),
        (is_int(cfg.max_new_tokens) and cfg.max_new_tokens >= 1, "--max-new-tokens", "at least 1"),
        (is_int(cfg.batch_size) and cfg.batch_size >= 1, "--batch-size", "at least 1"),
        (is_int(cfg.top_k) and cfg.top_k >= 0, "--top-k", "0 (off) or more"),
        (is_num(cfg.temperature) and cfg.temperature >= 0, "--temperature", "a finite number >= 0 (0 = greedy)"),
        (is_num(cfg.top_p) and 0 < cfg.top_p <= 1, "--top-p", "in (0, 1]"),
        (is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED, "--seed", "an integer in [0, 2^63 - 1]"),
    ]
    for ok, option, need in checks:
        if not ok:
            value = getattr(cfg, option[2:].replace("-", "_"))
            raise RLExtraError(f"{option} {value}: must be {need}")
    for s in getattr(cfg, "stop", ()):
        if not isinstance(s, str) or not s:
            raise RLExtraError(f"--stop {s!r}: a stop string must be non-empty text")


MAX_BYTES_PER_TOKEN = 256  # more than any tokenizer's longest token: a prompt past this many bytes a token is
# too long whatever it tokenizes to, and tokenizing it first cost 18.8 GB for a 50 MB prompt


def check_prompt_lengths(tokenizer, prompts: Sequence[str], model_config, source: str = "prompt") -> None:
    """Refuse prompts longer than the model's context (max_position_embeddings), naming the first."""
    text_cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    limit = getattr(text_cfg, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit < 1:
        return
    special = not getattr(tokenizer, "chat_template", None)
    for i, p in enumerate(prompts):
        size = len(p.encode("utf-8", "replace"))
        if size > MAX_BYTES_PER_TOKEN * limit:  # certainly too long: refused before tokenizing
            raise RLExtraError(f"{source} {i + 1}: {size} bytes, longer than the model's context of {limit} "
                               f"tokens could hold at {MAX_BYTES_PER_TOKEN} bytes a token (max_position_embeddings)")
        n = len(tokenizer(p, add_special_tokens=special)["input_ids"])
        if n > limit:
            raise RLExtraError(f"{source} {i + 1}: {n} tokens, longer than the model's context of {limit} "
                               "(max_position_embeddings)")


@dataclass
class SamplingConfig:
    """How to sample: k completions per prompt; temperature 0 = greedy; top_k 0 = off.

    top_k defaults to off (HF generate's own default would be 50). Temperature, then top-k, then
    top-p, as HF generate orders them. ``stop`` strings end a completion and are cut from it.
    """

    k: int = option(1, "samples per prompt")
    temperature: float = option(0.6, "0 for greedy")
    top_p: float = option(0.95, "nucleus sampling threshold, in (0, 1]")
    top_k: int = option(0, "0 = off (HF generate's own default would be 50)")
    max_new_tokens: int = option(512, "new tokens per completion at most")
    stop: list[str] = option(help="stop string (repeatable); cut from the completion", default_factory=list)
    batch_size: int = option(32, "rows (prompts x samples) decoded together; whole prompts per batch")
    seed: int = option(0, "seed of the sampler")

    def __post_init__(self) -> None:
        self.stop = list(self.stop or [])
        check_sampling(self)

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
