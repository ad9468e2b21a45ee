"""Side-by-side benchmark: Logits Extrapolation decoding throughput (new tokens per second).

Two random-init models of the SmolLM2-135M architecture (fp32, CPU, 1 thread) stand in for the
checkpoints b and s; eos is disabled so every row produces exactly --new-tokens tokens. Sampling:
temperature 0.6, top-p 0.95 everywhere.

- batch 1 and batch 16: rlextra's LogitExtrapolator (two models) against one model's HF
  ``generate`` at the same settings (two models make 0.5x the floor; target >= 0.45x).
- 16 prompts x 4 samples: rlextra (all 64 rows batched across prompts, left padded) against the
  published loop (reimplemented: one prompt at a time with its k samples as the batch, mixing,
  log_softmax, top-p, Categorical sampling, reorder_cache; target >= 2x).

Usage: python bench/bench_decoding.py [--new-tokens 32] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # synthetic.py: the planted-drift series fixture
PROMPTS = [f"Question {i}: what is {i * 37 % 91} plus {i * 53 % 97}? " + "Think step by step. " * (i % 4)
           for i in range(16)]


def bench_tokenizer(vocab_size: int):
    """Characters plus filler tokens up to the model's vocabulary, no eos: fixed-length outputs."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(PROMPTS)))
    vocab = {t: i for i, t in enumerate(["<pad>"] + chars)}
    vocab.update({f"<x{i}>": i for i in range(len(vocab), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", padding_side="left")


def make_model(seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    from synthetic import smollm2_135m_config

    cfg = smollm2_135m_config()
    cfg.eos_token_id = None
    cfg.bos_token_id = None
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def hf_generate(model, tok, prompts, n_new):
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=True, temperature=0.6,
                       top_p=0.95, top_k=0, pad_token_id=0)


def published_loop(m1, m2, tok, prompts, k, n_new):
    """Reimplementation of the published per-prompt loop (k samples of one prompt as the batch)."""
    import torch
    import torch.nn.functional as F

    alpha = 2.0
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")["input_ids"].expand(k, -1)
        with torch.no_grad():
            o1, o2 = m1(input_ids=ids, use_cache=True), m2(input_ids=ids, use_cache=True)
            l1, l2, p1, p2 = o1.logits[:, -1], o2.logits[:, -1], o1.past_key_values, o2.past_key_values
            length = ids.shape[1]
            for _ in range(n_new):
                logp = F.log_softmax((l1 + alpha * (l2 - l1)) / 0.6, dim=-1)
                srt, order = torch.sort(logp, descending=True)
                remove = torch.cumsum(torch.exp(srt), -1) > 0.95
                remove[..., 1:] = remove[..., :-1].clone()
                remove[..., 0] = False
                logp[remove.scatter(1, order, remove)] = -float("inf")
                nxt = torch.distributions.Categorical(logits=logp).sample()
                pos = torch.full((k, 1), length, dtype=torch.long)
                o1 = m1(input_ids=nxt[:, None], position_ids=pos, past_key_values=p1, use_cache=True)
                o2 = m2(input_ids=nxt[:, None], position_ids=pos, past_key_values=p2, use_cache=True)
                l1, l2, p1, p2 = o1.logits[:, -1], o2.logits[:, -1], o1.past_key_values, o2.past_key_values
                length += 1


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    import torch

    from rlextra.extrapolate.logits import DecodeConfig, LogitExtrapolator

    torch.set_num_threads(1)
    m1, m2 = make_model(0), make_model(1)
    tok = bench_tokenizer(m1.config.vocab_size)
    ex = LogitExtrapolator([m1, m2], [0, 100], tok, to_step=200)
    n = a.new_tokens
    rows = []
    hf_generate(m1, tok, PROMPTS[:1], 2)  # warm-up
    for batch in (1, 16):
        prompts = PROMPTS[:batch]
        cfg = DecodeConfig(k=1, temperature=0.6, top_p=0.95, max_new_tokens=n, batch_size=batch)
        t_hf = timed(lambda: hf_generate(m1, tok, prompts, n))
        t_ex = timed(lambda: ex.generate(prompts, cfg, progress=False))
        rows.append((f"batch {batch}", batch * n / t_ex, batch * n / t_hf, "HF generate, one model", 0.45))
        print(rows[-1], flush=True)
    cfg = DecodeConfig(k=4, temperature=0.6, top_p=0.95, max_new_tokens=n, batch_size=64)
    t_pub = timed(lambda: published_loop(m1, m2, tok, PROMPTS, 4, n))
    t_ex = timed(lambda: ex.generate(PROMPTS, cfg, progress=False))
    rows.append(("16 prompts x 4 samples", 64 * n / t_ex, 64 * n / t_pub, "published loop, two models", 2.0))
    print(rows[-1], flush=True)
    lines = [
        f"## Logits Extrapolation decoding throughput ({datetime.date.today()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), Python {platform.python_version()}, "
        f"1 torch thread. Two random-init SmolLM2-135M-architecture models, fp32, {n} new tokens per row, "
        "T=0.6, top-p 0.95, eos disabled.",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_decoding.py --new-tokens {n} --write-results`",
        "",
        "| case | rlextra tokens/s | baseline tokens/s | baseline | ratio | target |",
        "|---|---|---|---|---|---|",
        *[f"| {c} | {x:.1f} | {y:.1f} | {b} | {x / y:.2f} | >= {tgt} |" for c, x, y, b, tgt in rows],
        "",
    ]
    print("\n".join(lines))
    if a.write_results:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
