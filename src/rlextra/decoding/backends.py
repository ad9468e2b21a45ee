"""Single-model decoders for evaluation (HF generate, vLLM) and the one place that picks a decoder.

``load_decoder`` maps what a user asks for to a decoder: several checkpoints (or a target step)
mean Logits Extrapolation through rlextra's engine; one model goes to vLLM (when installed and
on a GPU), HF ``generate``, or rlextra's engine with K = 1 (``backend='rlextra'``, each prompt
encoded once for its k samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlextra.checkpoints import CheckpointSeries
from rlextra.decoding.config import SamplingConfig, check_prompt_lengths
from rlextra.decoding.engine import DecodingEngine, _cut_at_stop, load_engine
from rlextra.errors import RLExtraError
from rlextra.hf import load_model, load_tokenizer, model_device, prepare_tokenizer, prompt_special_tokens

BACKENDS = ("auto", "hf", "rlextra", "vllm")


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class HFGenerate:
    """k completions per prompt with one model's ``generate``; prompts batched with left padding."""

    name = "hf"

    def __init__(self, model, tokenizer, label: str = "in-memory") -> None:
        self.model, self.tokenizer, self.label = model, prepare_tokenizer(tokenizer), label

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        import torch

        cfg = cfg or SamplingConfig()
        tok = self.tokenizer
        check_prompt_lengths(tok, prompts, self.model.config)
        device = model_device(self.model)
        # generate samples from the global generator: seed a fork of it, so a caller's random stream
        # (a trainer evaluating at each checkpoint) continues as if nothing had been generated
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            return self._generate(prompts, cfg, progress, device)

    def _generate(self, prompts: Sequence[str], cfg: SamplingConfig, progress: bool, device) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        n_seq = 1 if cfg.greedy else cfg.k  # greedy samples are all the same: decode once, copy
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=not cfg.greedy, num_return_sequences=n_seq,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if cfg.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        if cfg.stop:
            kwargs.update(stop_strings=cfg.stop, tokenizer=tok)
        special = prompt_special_tokens(tok)
        per_batch = max(1, cfg.batch_size // cfg.k)
        out: list[list[str]] = []
        with torch.no_grad():
            for i in tqdm(range(0, len(prompts), per_batch), desc="generate", disable=not progress):
                batch = list(prompts[i:i + per_batch])
                enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
                seqs = self.model.generate(**enc, **kwargs)
                texts = [_cut_at_stop(t, cfg.stop) for t in
                         tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
                out.extend(texts[j * n_seq:(j + 1) * n_seq] * (cfg.k // n_seq) for j in range(len(batch)))
        return out


class VLLMGenerate:
    """k completions per prompt with vLLM (GPU), same sampling settings as the other decoders."""

    name = "vllm"

    def __init__(self, path: str | Path, dtype: str | None = "auto") -> None:
        self.path, self.dtype, self.label = str(path), dtype or "auto", str(path)
        self.tokenizer = load_tokenizer(path)
        self.paths = [Path(path)]
        self._llm = None

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        from vllm import LLM, SamplingParams

        from transformers import AutoConfig

        cfg = cfg or SamplingConfig()
        check_prompt_lengths(self.tokenizer, prompts, AutoConfig.from_pretrained(self.path))
        if self._llm is None:
            self._llm = LLM(model=self.path, dtype=self.dtype, seed=cfg.seed)
        params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                                top_k=cfg.top_k if cfg.top_k > 0 else -1, max_tokens=cfg.max_new_tokens,
                                seed=cfg.seed, stop=cfg.stop or None)
        return [[o.text for o in r.outputs] for r in self._llm.generate(list(prompts), params, use_tqdm=progress)]


def load_decoder(checkpoints: str | Path | Sequence[str | Path] | CheckpointSeries, *, backend: str = "auto",
                 to_step: float | None = None, alpha: float | None = None, steps: Sequence[int] | None = None,
                 device: str | None = "auto", dtype: str | None = "auto", devices: str | Sequence[str] | None = None,
                 allow_pickle: bool = False, mode: str = "auto", checked: bool = False):
    """A decoder for one model folder, or for Logits Extrapolation over several (with a target).

    backend (one model): auto (vLLM when installed and on a GPU, else hf), hf, rlextra, vllm.
    ``checked``: the caller checked the folder (check_model_dir) or passes a checked series
    (check_loadable), so it is not read again.
    """
    from rlextra.hf import resolve_device

    if backend not in BACKENDS:
        raise RLExtraError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if isinstance(checkpoints, CheckpointSeries):
        paths = checkpoints
    else:
        paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if len(paths) > 1 or to_step is not None or alpha is not None:
        if backend not in ("auto", "rlextra"):
            raise RLExtraError(f"--backend {backend} decodes one model; extrapolated logits need rlextra's engine")
        return load_engine(paths, to_step=to_step, alpha=alpha, steps=steps, device=device, dtype=dtype,
                           devices=devices, allow_pickle=allow_pickle, mode=mode)
    path = Path(paths[0])
    if devices:
        device = str(devices).split(",")[0] if isinstance(devices, str) else str(devices[0])
    if backend == "auto":
        backend = "vllm" if vllm_available() and resolve_device(device).type == "cuda" else "hf"
    if backend == "vllm":
        if not vllm_available():
            raise RLExtraError("--backend vllm: vLLM is not installed or no GPU is available")
        return VLLMGenerate(path, dtype=dtype)
    model, tokenizer = load_model(path, device=device, dtype=dtype, allow_pickle=allow_pickle, checked=checked)
    decoder = HFGenerate(model, tokenizer, label=str(path)) if backend == "hf" else \
        DecodingEngine([model], None, tokenizer, mode=mode, label=str(path))
    decoder.paths = [path]  # the input, for output guards
    return decoder
