"""Logits Extrapolation decoding: sample from z_T = sum_k w_k z_k over K checkpoints' next-token logits.

With two checkpoints at steps b < s the weights are (1 - alpha, alpha), i.e. the paper's
z_T = z_b + alpha (z_s - z_b); with K > 2 they evaluate each logit's least-squares line at T
(``rlextra.linefit.line_weights``). Every model keeps its own KV cache. Prompts of different
lengths are batched with left padding; rows that finish (eos or a stop string) leave the batch,
their cache rows dropped, so they stop costing work. Mixing, then temperature, top-k, top-p,
then sampling (or greedy argmax at temperature 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlextra.errors import RLExtraError
from rlextra.linefit import line_weights


def check_sampling(cfg) -> None:
    """One-line errors for sampling settings out of range (shared by the sampling configs)."""
    checks = [
        (isinstance(cfg.k, int) and cfg.k >= 1, "--k", "at least 1"),
        (isinstance(cfg.max_new_tokens, int) and cfg.max_new_tokens >= 1, "--max-new-tokens", "at least 1"),
        (isinstance(cfg.batch_size, int) and cfg.batch_size >= 1, "--batch-size", "at least 1"),
        (isinstance(cfg.top_k, int) and cfg.top_k >= 0, "--top-k", "0 (off) or more"),
        (math.isfinite(cfg.temperature) and cfg.temperature >= 0, "--temperature", "a finite number >= 0"),
        (math.isfinite(cfg.top_p) and 0 < cfg.top_p <= 1, "--top-p", "in (0, 1]"),
        (isinstance(cfg.seed, int) and cfg.seed >= 0, "--seed", "an integer >= 0"),
    ]
    for ok, option, need in checks:
        if not ok:
            value = getattr(cfg, option[2:].replace("-", "_"))
            raise RLExtraError(f"{option} {value}: must be {need}")
    for s in getattr(cfg, "stop", ()):
        if not isinstance(s, str) or not s:
            raise RLExtraError(f"--stop {s!r}: a stop string must be non-empty text")


@dataclass
class DecodeConfig:
    """Sampling settings; top_k 0 = off, temperature 0 = greedy."""

    k: int = 1  # samples per prompt
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    batch_size: int = 32  # rows (prompts x samples) decoded together; whole prompts per batch
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self)

    def to_dict(self) -> dict:
        return asdict(self)


def check_prompt_lengths(tokenizer, prompts: Sequence[str], model_config, source: str = "prompt") -> None:
    """Refuse prompts longer than the model's context (max_position_embeddings), naming the first."""
    text_cfg = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    limit = getattr(text_cfg, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit < 1:
        return
    special = not getattr(tokenizer, "chat_template", None)
    for i, p in enumerate(prompts):
        n = len(tokenizer(p, add_special_tokens=special)["input_ids"])
        if n > limit:
            raise RLExtraError(f"{source} {i + 1}: {n} tokens, longer than the model's context of {limit} "
                               "(max_position_embeddings)")


def filter_logits(z, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then top-p (nucleus), as HF generate orders them."""
    import torch

    if temperature > 0 and temperature != 1.0:
        z = z / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True, dim=-1)
        cum = torch.softmax(sorted_z, dim=-1).cumsum(dim=-1)
        drop = cum > top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
        drop[..., 0] = False
        z = z.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return z


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x names the KV cache argument 'cache'; older versions 'past_key_values'."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _select(cache, idx) -> None:
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
    else:
        cache.reorder_cache(idx)


class LogitExtrapolator:
    """Decode with extrapolated logits from K loaded models (all with the same tokenizer)."""

    def __init__(self, models: Sequence, steps: Sequence[float], tokenizer, *, to_step: float | None = None,
                 alpha: float | None = None) -> None:
        if len(models) != len(steps) or not models:
            raise ValueError("one step per model, at least one model")
        if (to_step is None) == (alpha is None) and len(models) > 1:
            raise ValueError("give exactly one of to_step or alpha")
        target = to_step
        if target is None:
            target = steps[0] + alpha * (steps[-1] - steps[0]) if len(steps) > 1 else steps[0]
        self.models = list(models)
        self.steps = [float(s) for s in steps]
        self.target = float(target)
        self.weights = line_weights(self.steps, self.target).tolist()
        self.tokenizer = tokenizer
        eos = set()
        for m in self.models:
            e = getattr(m.generation_config, "eos_token_id", None)
            eos.update(e if isinstance(e, (list, tuple)) else [e] if e is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        self._cache_kw = [_cache_kwarg(m) for m in self.models]

    @property
    def alpha(self) -> float:
        return (self.target - self.steps[0]) / (self.steps[-1] - self.steps[0]) if len(self.steps) > 1 else 1.0

    def _mix(self, logits: list):
        z = None
        for w, lg in zip(self.weights, logits):
            if w == 0.0:
                continue  # 0 * -inf would be NaN; a zero weight contributes nothing
            term = lg.float() * w if w != 1.0 else lg.float()
            z = term if z is None else z + term
        return z

    def generate(self, prompts: Sequence[str], cfg: DecodeConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        """cfg.k completions per prompt, in prompt order.

        Batches hold whole prompts with their k samples; each prompt is prefilled once and its
        cache repeated k times, so k samples cost one prompt encoding, not k.
        """
        import torch

        cfg = cfg or DecodeConfig()
        check_prompt_lengths(self.tokenizer, prompts, self.models[0].config)
        per_batch = max(1, cfg.batch_size // max(1, cfg.k))
        gen = torch.Generator().manual_seed(cfg.seed)
        texts: list[str] = []
        for i in tqdm(range(0, len(prompts), per_batch), desc="extrapolated decoding",
                      disable=not progress):
            texts.extend(self._generate_batch(list(prompts[i:i + per_batch]), cfg, gen))
        return [texts[j * cfg.k:(j + 1) * cfg.k] for j in range(len(prompts))]

    def _generate_batch(self, prompts: list[str], cfg: DecodeConfig, gen) -> list[str]:
        """cfg.k completions for each prompt of a batch, prompt-major."""
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        special = not getattr(tok, "chat_template", None)
        device = next(self.models[0].parameters()).device
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=special).to(device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        n = len(prompts) * cfg.k
        out_ids: list[list[int]] = [[] for _ in range(n)]
        active = torch.arange(n)
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        with torch.no_grad():
            caches, logits = [], []
            for m in self.models:
                o = m(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions,
                      use_cache=True, logits_to_keep=1)
                cache = _out_cache(o)
                if cfg.k > 1:  # one prefill per prompt, shared by its k samples
                    cache.batch_repeat_interleave(cfg.k)
                caches.append(cache)
                logits.append(o.logits[:, -1, :].repeat_interleave(cfg.k, dim=0))
            mask = mask.repeat_interleave(cfg.k, dim=0)
            last_pos = positions[:, -1:].repeat_interleave(cfg.k, dim=0)
            for _ in range(cfg.max_new_tokens):
                z = self._mix(logits)
                if cfg.temperature <= 0:
                    nxt = z.argmax(-1)
                else:
                    z = filter_logits(z, cfg.temperature, cfg.top_k, cfg.top_p)
                    nxt = torch.multinomial(torch.softmax(z, -1), 1, generator=gen).squeeze(-1)
                done = torch.isin(nxt, eos) if len(eos) else torch.zeros_like(nxt, dtype=torch.bool)
                for r, t, d in zip(active.tolist(), nxt.tolist(), done.tolist()):
                    if not d:
                        out_ids[r].append(t)
                if cfg.stop:
                    for j, r in enumerate(active.tolist()):
                        if not done[j] and any(s in tok.decode(out_ids[r][-16:]) for s in cfg.stop):
                            done[j] = True
                keep = (~done).nonzero().squeeze(-1)
                if len(keep) == 0:
                    break
                if len(keep) < len(active):  # finished rows leave the batch and the caches
                    for c in caches:
                        _select(c, keep)
                    active, nxt, mask, last_pos = active[keep], nxt[keep], mask[keep], last_pos[keep]
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype)], dim=1)
                last_pos = last_pos + 1
                logits = []
                for m, c, kw in zip(self.models, caches, self._cache_kw):
                    o = m(input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos,
                          use_cache=True, **{kw: c})
                    logits.append(o.logits[:, -1, :])
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in out_ids]
        return [_cut_at_stop(t, cfg.stop) for t in texts]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def load_extrapolator(checkpoints, *, to_step: float | None = None, alpha: float | None = None,
                      steps: Sequence[int] | None = None) -> LogitExtrapolator:
    """Load the checkpoints of a series (oldest first) and their tokenizer (from the newest)."""
    from rlextra.checkpoints import load_series
    from rlextra.evaluation.run import load_model
    from rlextra.extrapolate.weights import resolve_target

    items = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if steps is None and len(items) == 1 and (Path(str(items[0])) / "config.json").is_file():
        steps = [0]  # one model folder: plain decoding, its step does not matter
    series = load_series(items, steps, pickle_flag=None)
    target = resolve_target(series.steps, to_step, alpha)[0] if len(series) > 1 else series.steps[0]
    loaded = [load_model(c.path) for c in series.checkpoints]
    return LogitExtrapolator([m for m, _ in loaded], series.steps, loaded[-1][1], to_step=target)

