"""Small models for the demo and tests: a character tokenizer, a tiny Llama, and ``build_tiny_model``
(the two, warmed up by ``rlextra.rl.warmup`` and saved).

Llama, not qwen2: AutoTokenizer on a qwen2 config swaps in a byte-level tokenizer that drops the
spaces of a char tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path

from rlextra.errors import RLExtraError
from rlextra.rl.warmup import off_by_one, warmup_sft  # noqa: F401 (re-exported: rlextra.rl.models)

ARITHMETIC_CHARS = "0123456789+-*= \n"
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def char_tokenizer(chars: str = ARITHMETIC_CHARS):
    """A fast tokenizer with one token per character; decodes by plain concatenation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + sorted(set(chars)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left",
                                   clean_up_tokenization_spaces=False)


def tiny_llama(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4, intermediate: int = 256,
               seed: int = 0):
    """A Llama-architecture causal LM of about 1 M parameters (default sizes), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate,
                      max_position_embeddings=64, tie_word_embeddings=False,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_model(model, tokenizer, folder: Path) -> Path:
    """save_pretrained model and tokenizer (safetensors) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_model(out: Path, spec, *, warmup_steps: int = 900, seed: int = 0, lr: float = 1e-3,
                     label_noise: float = 0.0, overwrite: bool = False, progress: bool = True,
                     device: str | None = "auto", dtype: str | None = "auto") -> tuple[Path, float]:
    """Tiny Llama + char tokenizer, warmed up on an arithmetic task, saved atomically to out.

    Saved in ``dtype``; dtype auto is float32 (a new model has no stored dtype, and the warm-up is
    short). Trained in ``dtype`` too, except float16, which is trained in float32 and cast when
    saved: plain Adam in float16 underflows (its eps is below float16's resolution) and the weights
    turn to NaN. Returns the folder and the held-out greedy accuracy.
    """
    import json

    import torch

    from rlextra.evaluation import heldout_accuracy
    from rlextra.hf import resolve_device, resolve_dtype
    from rlextra.io import atomic_output_dir, check_output
    from rlextra.tasks import load_task

    check_output(out, overwrite=overwrite)  # before the warm-up, not after it
    if spec.name != "arithmetic":
        raise RLExtraError("tiny models are for the arithmetic task; use a pretrained model for math")
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise RLExtraError(f"--warmup-steps {warmup_steps}: must be an integer >= 0")
    if not (math.isfinite(lr) and lr > 0):
        raise RLExtraError(f"learning rate {lr}: must be a finite number > 0")
    task = load_task(spec)
    tok = char_tokenizer()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, "cpu")  # 'auto' stays float32 here, on any device
    model = tiny_llama(tok, seed=seed).to(dev)
    if torch_dtype not in ("auto", torch.float16):
        model = model.to(torch_dtype)
    losses = warmup_sft(model, tok, task.train, steps=warmup_steps, lr=lr, seed=seed, progress=progress,
                        label_noise=label_noise)
    if torch_dtype == torch.float16:
        model = model.to(torch_dtype)
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # never write a model that cannot produce a number
        raise RLExtraError(f"{out}: the model's '{bad[0]}' holds NaN or Inf after the warm-up "
                           f"({len(bad)} tensors); nothing was written")
    acc = heldout_accuracy(model, tok, task, len(task.test), max_new_tokens=spec.digits * 2 + 2)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        save_model(model, tok, tmp)
        (tmp / "rlextra_model.json").write_text(json.dumps({
            "task": spec.to_dict(), "warmup_steps": warmup_steps, "seed": seed, "lr": lr,
            "label_noise": label_noise,
            "final_loss": losses[-1] if losses else None, "heldout_greedy_accuracy": acc}, indent=1))
    return Path(out), acc
