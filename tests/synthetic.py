"""Test fixture: synthetic checkpoint series with a planted linear drift plus noise.

Used by the tests and by bench/ (which puts tests/ on sys.path): a real transformers model (Llama architecture)
whose weights move as w(t) = w0 + (t / t_max) * drift * d + noise * e_t with d, e_t ~ N(0, 1),
so the true per-parameter R^2 is known in distribution and the output loads with
``AutoModelForCausalLM``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def tiny_llama_config(vocab_size: int = 64, hidden: int = 32, layers: int = 2, heads: int = 4,
                      kv_heads: int = 2, intermediate: int = 64, tie: bool = False):
    """A Llama config of a few tens of thousands of parameters, for tests."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads,
                       intermediate_size=intermediate, max_position_embeddings=256,
                       tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def smollm2_135m_config():
    """The SmolLM2-135M architecture (Llama, 30 layers, 576 hidden, tied embeddings): 134.5M params."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                       max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def checkpoint_dir(root: Path, step: int, layout: str) -> Path:
    """Where a checkpoint of the given layout lives: trainer, verl, or plain (step_N)."""
    if layout == "trainer":
        return root / f"checkpoint-{step}"
    if layout == "verl":
        return root / f"global_step_{step}" / "actor" / "huggingface"
    if layout == "plain":
        return root / f"step_{step}"
    raise ValueError(f"unknown layout {layout}")


def write_synthetic_series(root: str | Path, config, steps: Sequence[int], *, drift: float = 1e-2,
                           noise: float = 1e-3, seed: int = 0, dtype: str = "float32",
                           layout: str = "trainer", max_shard_size: str = "5GB") -> list[Path]:
    """Save one checkpoint per step under root; return their folders (oldest first)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    # Memory: the base weights once more in their own dtype (they widen to float32 exactly), and one
    # float32 tensor at a time; the random streams are replayed instead of kept (a 1.5B model at
    # float32 would need 18 GB for base, direction and state). The draws are those of one generator:
    # every direction in state order, then per step every tensor's noise.
    params = dict(model.state_dict())
    base = {k: v.detach().clone() for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed + 1)
    directions_start = gen.get_state()
    for v in base.values():  # advance past the directions: the noise draws follow them
        torch.randn(v.shape, generator=gen)
    t_max = max(steps) or 1
    folders = []
    for step in steps:
        replay = torch.Generator()
        replay.set_state(directions_start)
        with torch.no_grad():
            for k, b in base.items():
                d = torch.randn(b.shape, generator=replay)
                w = b.float() + (step / t_max) * drift * d + noise * torch.randn(b.shape, generator=gen)
                params[k].copy_(w.to(getattr(torch, dtype)))
        folder = checkpoint_dir(Path(root), step, layout)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if layout == "trainer":
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        folders.append(folder)
    return folders
