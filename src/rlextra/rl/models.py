"""Small models for the demo and tests: a character tokenizer, a tiny Llama, a supervised warm-up.

Real RLVR starts from an SFT model that is partly right; the warm-up gives the tiny model that
partial competence so GRPO has reward signal from its first step. Llama, not qwen2: AutoTokenizer
on a qwen2 config swaps in a byte-level tokenizer that drops the spaces of a char tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from rlextra.errors import RLExtraError
from rlextra.tasks import Problem

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


def off_by_one(answer: str, sign: int) -> str:
    """A near miss of an integer answer: answer + sign (the classic slip a noisy teacher makes)."""
    return str(int(answer) + sign)


def warmup_sft(model, tokenizer, problems: Sequence[Problem], steps: int = 300, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0, progress: bool = True, label_noise: float = 0.0) -> list[float]:
    """Supervised warm-up on prompt+answer+eos (loss on the answer only); returns the loss curve.

    With ``label_noise`` q, each training answer is replaced, with probability q and afresh at every
    draw, by an off-by-one near miss (answer - 1 or + 1). The model then learns a distribution in
    which the right answer is the most likely but far from certain: the starting point RLVR
    sharpens (the right answer is in the distribution, not reliably picked).
    """
    import torch
    from tqdm.auto import tqdm

    if not 0.0 <= label_noise < 1.0:
        raise RLExtraError(f"label_noise {label_noise}: must be in [0, 1)")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    enc = [(encode(p.prompt), encode(p.answer) + [tokenizer.eos_token_id]) for p in problems]
    noisy = [tuple(encode(off_by_one(p.answer, s)) + [tokenizer.eos_token_id] for s in (-1, 1))
             for p in problems] if label_noise else None
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="warm-up (SFT)", disable=not progress):
        idx = torch.randint(len(enc), (batch_size,), generator=g).tolist()
        draws = torch.rand(batch_size, generator=g).tolist() if label_noise else [1.0] * batch_size
        pairs = [(enc[i][0], noisy[i][int(u * 2 / label_noise)] if noisy and u < label_noise else enc[i][1])
                 for i, u in zip(idx, draws)]
        seqs = [p + a for p, a in pairs]
        width = max(map(len, seqs))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (p, a) in enumerate(pairs):
            n = len(p) + len(a)
            ids[r, width - n:] = torch.tensor(p + a)  # left padded, as generation sees it
            labels[r, width - len(a):] = torch.tensor(a)
            mask[r, width - n:] = 1
        dev = next(model.parameters()).device
        loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        if not math.isfinite(loss.item()):
            raise RLExtraError(f"warm-up diverged at step {len(losses) + 1}: the loss is {loss.item()} "
                               f"({next(model.parameters()).dtype}); nothing was written")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


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
