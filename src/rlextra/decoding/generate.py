"""``rlextra generate``: prompts from a JSONL file decoded by one model (or K models' extrapolated
logits), written as one JSONL line per completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rlextra.checkpoints import spec_path
from rlextra.decoding.config import SamplingConfig, check_prompt_lengths
from rlextra.decoding.engine import load_engine
from rlextra.errors import RLExtraError
from rlextra.hf import format_prompts
from rlextra.io import atomic_output_file, check_output, read_jsonl


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per JSONL line: a string, or an object with a 'prompt' string."""
    prompts = []
    for i, row in read_jsonl(Path(path)):
        text = row if isinstance(row, str) else row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise RLExtraError(f"{path}:{i}: expected a string or an object with a 'prompt' string")
        if not text:
            raise RLExtraError(f"{path}:{i}: the prompt is empty; a model needs at least one token to continue")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RLExtraError(f"{path}:{i}: the prompt is not valid Unicode (a lone surrogate escape)") from None
        prompts.append(text)
    if not prompts:
        raise RLExtraError(f"{path}: no prompts")
    return prompts


def generate_file(checkpoints: str | Path | Sequence[str | Path], prompts_file: str | Path, out_file: str | Path, *,
                  sampling: SamplingConfig | None = None, to_step: float | None = None, alpha: float | None = None,
                  steps: Sequence[int] | None = None, chat: bool = False, device: str | None = "auto",
                  dtype: str | None = "auto", devices: str | Sequence[str] | None = None, mode: str = "auto",
                  allow_pickle: bool = False, progress: bool = True, overwrite: bool = False,
                  backend: str = "rlextra") -> dict:
    """Decode every prompt ``sampling.k`` times and write ``{prompt, sample, completion, steps,
    target_step, weights}`` lines to ``out_file`` (atomically). ``chat`` wraps each prompt as a user
    message in the chat template. ``backend``: rlextra's engine, or 'vllm' (one model, or the K
    checkpoints' Logits Extrapolation inside vLLM). Returns {'n_generations', 'steps', 'target_step',
    'output'}."""
    items = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    inputs = [spec_path(c) for c in items] + [Path(prompts_file)]
    check_output(out_file, inputs=inputs, overwrite=overwrite, kind="file")
    sampling = sampling or SamplingConfig()
    prompts = read_prompts(prompts_file)
    if backend == "vllm":
        from rlextra.decoding.backends import load_decoder

        engine = load_decoder(items, backend="vllm", to_step=to_step, alpha=alpha, steps=steps, dtype=dtype,
                              device=device)
        texts = format_prompts(engine.tokenizer, prompts, chat)  # vLLM's decoder checks the lengths itself
    elif backend == "rlextra":
        engine = load_engine(items, to_step=to_step, alpha=alpha, steps=steps, device=device, dtype=dtype,
                             devices=devices, allow_pickle=allow_pickle, mode=mode)
        texts = format_prompts(engine.tokenizer, prompts, chat)
        check_prompt_lengths(engine.tokenizer, texts, engine.models[0].config, source=f"{prompts_file}: prompt")
    else:
        raise RLExtraError(f"--backend {backend}: generate decodes with rlextra or vllm")
    outs = engine.generate(texts, sampling, progress=progress)
    meta = {"steps": engine.steps, "target_step": engine.target, "weights": engine.weights}
    lines = [json.dumps({"prompt": p, "sample": j, "completion": c, **meta})
             for p, comps in zip(prompts, outs) for j, c in enumerate(comps)]
    with atomic_output_file(out_file, inputs=inputs, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"n_generations": len(lines), "steps": engine.steps, "target_step": engine.target, "output": str(out_file)}
