"""Sampling k completions per prompt: HF generate (batched, left padded) or vLLM when available."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from tqdm.auto import tqdm


@dataclass
class SamplingConfig:
    """Decoding settings; top_k 0 means off (HF generate's own default would be 50)."""

    k: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        from rlextra.extrapolate.logits import check_sampling

        check_sampling(self)

    def to_dict(self) -> dict:
        return asdict(self)


def format_prompts(tokenizer, prompts: Sequence, conversational: bool) -> list[str]:
    """Chat-template conversational prompts when the tokenizer has a template; plain text otherwise."""
    if conversational and getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return list(prompts)


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def generate_hf(model, tokenizer, prompts: Sequence[str], cfg: SamplingConfig,
                progress: bool = True) -> list[list[str]]:
    """k completions for each prompt with model.generate; prompts are batched with left padding."""
    import torch

    from rlextra.extrapolate.logits import check_prompt_lengths

    check_prompt_lengths(tokenizer, prompts, model.config)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(cfg.seed)
    sample = cfg.temperature > 0
    gen_kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample,
                      num_return_sequences=cfg.k, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    if sample:
        gen_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    special = not getattr(tokenizer, "chat_template", None)
    out: list[list[str]] = []
    per_batch = max(1, cfg.batch_size // max(1, cfg.k))
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in tqdm(range(0, len(prompts), per_batch), desc="generate", disable=not progress):
            batch = list(prompts[i:i + per_batch])
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
            seqs = model.generate(**enc, **gen_kwargs)
            texts = tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out.extend(texts[j * cfg.k:(j + 1) * cfg.k] for j in range(len(batch)))
    return out


def generate_vllm(model_path: str, prompts: Sequence[str], cfg: SamplingConfig) -> list[list[str]]:
    """k completions for each prompt with vLLM (GPU); same sampling settings as generate_hf."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_path), seed=cfg.seed)
    params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                            top_k=cfg.top_k if cfg.top_k > 0 else -1, max_tokens=cfg.max_new_tokens,
                            seed=cfg.seed)
    return [[o.text for o in r.outputs] for r in llm.generate(list(prompts), params)]
