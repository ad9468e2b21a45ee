"""Side-by-side benchmark: decoding throughput (new tokens per second), CPU or one GPU.

Random-init models stand in for checkpoints b and s; eos is disabled so every row produces exactly
--new-tokens tokens. Sampling: temperature 0.6, top-p 0.95 everywhere.

--device cpu (default): two SmolLM2-135M-architecture models, fp32, 1 thread.
- batch 1 and batch 16: rlextra's engine with K = 2 against one model's HF ``generate`` at the
  same settings (two models make 0.5x the floor; target >= 0.45x).
- 16 prompts x 4 samples: rlextra (all 64 rows batched across prompts, left padded) against the
  published loop (reimplemented: one prompt at a time with its k samples as the batch, mixing,
  log_softmax, top-p, Categorical sampling, reorder_cache; target >= 2x).

--device cuda: SmolLM2-135M and Qwen2.5-1.5B shapes (configs below), bf16, batch 1 and 64,
256 new tokens. Rows: rlextra K = 2 and K = 1 (--decode-mode, default compiled: static KV caches
+ CUDA graphs), one model's HF generate eager, and HF generate with a static cache (transformers
compiles its step). Every row runs once untimed first (compilation, CUDA graph capture), then
timed; the first call's seconds are reported too. Targets: K = 2 >= 1.0x HF eager at batch 64
and >= 0.45x HF static+compile at batch 64; K = 1 >= 2x HF eager at batch 1. Rows that would
start after --budget-s are listed as skipped, so the table prints within about 5 minutes.

Usage:
  python bench/bench_decoding.py [--new-tokens 32] [--write-results]
  python bench/bench_decoding.py --device cuda [--shapes smollm2-135m,qwen2.5-1.5b] [--batches 1,64] \\
      [--new-tokens 256] [--budget-s 240] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))  # synthetic.py: the planted-drift series fixture
PROMPTS = [f"Question {i}: what is {i * 37 % 91} plus {i * 53 % 97}? " + "Think step by step. " * (i % 4)
           for i in range(16)]


def qwen25_15b_config():
    """The Qwen2.5-1.5B architecture (28 layers, 1536 hidden, GQA 12/2, tied embeddings): 1.54B params."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       bos_token_id=None, eos_token_id=None)


def shape_config(name: str):
    from synthetic import smollm2_135m_config

    if name == "smollm2-135m":
        return smollm2_135m_config()
    if name == "qwen2.5-1.5b":
        return qwen25_15b_config()
    raise SystemExit(f"unknown shape {name} (smollm2-135m, qwen2.5-1.5b)")


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


def make_model(seed: int, shape: str = "smollm2-135m", device: str = "cpu", dtype=None):
    """A random-init model of the shape, built directly on the device, eos disabled."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = shape_config(shape)
    cfg.eos_token_id = None
    cfg.bos_token_id = None
    torch.manual_seed(seed)
    with torch.device(device):
        m = AutoModelForCausalLM.from_config(cfg, dtype=dtype or torch.float32).eval()
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def hf_generate(model, tok, prompts, n_new, static: bool = False):
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True).to(model.device)
    extra = {"cache_implementation": "static"} if static else {}
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=True, temperature=0.6,
                       top_p=0.95, top_k=0, pad_token_id=0, **extra)


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


def timed(fn, cuda: bool = False) -> float:
    import torch

    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_cpu(a) -> list[str]:
    import torch

    from rlextra.decoding import DecodingEngine, SamplingConfig

    torch.set_num_threads(1)
    m1, m2 = make_model(0), make_model(1)
    tok = bench_tokenizer(m1.config.vocab_size)
    ex = DecodingEngine([m1, m2], [0, 100], tok, to_step=200, mode="eager")
    n = a.new_tokens
    rows = []
    hf_generate(m1, tok, PROMPTS[:1], 2)  # warm-up
    for batch in (1, 16):
        prompts = PROMPTS[:batch]
        cfg = SamplingConfig(k=1, temperature=0.6, top_p=0.95, max_new_tokens=n, batch_size=batch)
        t_hf = timed(lambda: hf_generate(m1, tok, prompts, n))
        t_ex = timed(lambda: ex.generate(prompts, cfg, progress=False))
        rows.append((f"batch {batch}", batch * n / t_ex, batch * n / t_hf, "HF generate, one model", 0.45))
        print(rows[-1], flush=True)
    cfg = SamplingConfig(k=4, temperature=0.6, top_p=0.95, max_new_tokens=n, batch_size=64)
    t_pub = timed(lambda: published_loop(m1, m2, tok, PROMPTS, 4, n))
    t_ex = timed(lambda: ex.generate(PROMPTS, cfg, progress=False))
    rows.append(("16 prompts x 4 samples", 64 * n / t_ex, 64 * n / t_pub, "published loop, two models", 2.0))
    print(rows[-1], flush=True)
    return [
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


def run_cuda(a) -> list[str]:
    import torch

    from rlextra.decoding import DecodingEngine, SamplingConfig
    from rlextra.hf import resolve_device

    dev = resolve_device(a.device)  # a one-line error on machines without CUDA
    start = time.perf_counter()
    n = a.new_tokens
    results = []  # (shape, batch, row, tokens/s or None, first-call s or None)
    for shape in a.shapes.split(","):
        m1, m2 = make_model(0, shape, dev, torch.bfloat16), make_model(1, shape, dev, torch.bfloat16)
        tok = bench_tokenizer(m1.config.vocab_size)
        k2 = DecodingEngine([m1, m2], [0, 100], tok, to_step=200, mode=a.decode_mode)
        k1 = DecodingEngine([m2], None, tok, mode=a.decode_mode)
        for batch in (int(b) for b in a.batches.split(",")):
            prompts = (PROMPTS * (batch // len(PROMPTS) + 1))[:batch]
            cfg = SamplingConfig(k=1, temperature=0.6, top_p=0.95, max_new_tokens=n, batch_size=batch)
            cases = [("HF generate, eager", lambda: hf_generate(m2, tok, prompts, n)),
                     (f"rlextra K=1 ({k1.mode})", lambda: k1.generate(prompts, cfg, progress=False)),
                     (f"rlextra K=2 ({k2.mode})", lambda: k2.generate(prompts, cfg, progress=False)),
                     ("HF generate, static cache + compile", lambda: hf_generate(m2, tok, prompts, n, static=True))]
            for name, fn in cases:
                if time.perf_counter() - start > a.budget_s:
                    results.append((shape, batch, name, None, None))
                    print(f"{shape} batch {batch} {name}: skipped (time budget)", flush=True)
                    continue
                first = timed(fn, cuda=True)
                t = timed(fn, cuda=True)
                results.append((shape, batch, name, batch * n / t, first))
                print(f"{shape} batch {batch} {name}: {batch * n / t:.1f} tok/s (first call {first:.1f} s)",
                      flush=True)
        del m1, m2, k1, k2
        torch.cuda.empty_cache()
    return cuda_table(a, results, torch.cuda.get_device_name(dev), time.perf_counter() - start)


def cuda_table(a, results, card: str, seconds: float) -> list[str]:
    import torch
    import transformers

    by = {(s, b, r.split(" (")[0]): tps for s, b, r, tps, _ in results}

    def ratio(s, b, num, den):
        x, y = by.get((s, b, num)), by.get((s, b, den))
        return f"{x / y:.2f}" if x and y else "n/a"

    lines = [
        f"## Decoding throughput on a GPU ({datetime.date.today()})",
        "",
        f"Machine: {card}, torch {torch.__version__}, transformers {transformers.__version__}. Random-init "
        f"models, bf16, {a.new_tokens} new tokens per row, T=0.6, top-p 0.95, eos disabled; each row timed "
        f"after one untimed call (first call = compile/capture included). Whole run {seconds:.0f} s.",
        f"Command: `python bench/bench_decoding.py --device {a.device} --shapes {a.shapes} --batches {a.batches} "
        f"--new-tokens {a.new_tokens} --decode-mode {a.decode_mode} --write-results`",
        "",
        "| shape | batch | row | tokens/s | first call s |",
        "|---|---|---|---|---|",
        *[f"| {s} | {b} | {r} | {'skipped' if t is None else f'{t:.1f}'} | {'' if f is None else f'{f:.1f}'} |"
          for s, b, r, t, f in results],
        "",
        "| shape | target | value |",
        "|---|---|---|",
    ]
    for s in a.shapes.split(","):
        lines += [f"| {s} | K=2 / HF eager, batch 64 (>= 1.0) | {ratio(s, 64, 'rlextra K=2', 'HF generate, eager')} |",
                  f"| {s} | K=2 / HF static+compile, batch 64 (>= 0.45) | "
                  f"{ratio(s, 64, 'rlextra K=2', 'HF generate, static cache + compile')} |",
                  f"| {s} | K=1 / HF eager, batch 1 (>= 2.0) | {ratio(s, 1, 'rlextra K=1', 'HF generate, eager')} |"]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    ap.add_argument("--new-tokens", type=int, help="new tokens per row (default 32 on CPU, 256 on CUDA)")
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-1.5b", help="CUDA: model shapes")
    ap.add_argument("--batches", default="1,64", help="CUDA: batch sizes")
    ap.add_argument("--decode-mode", default="compiled", help="CUDA: rlextra's step (compiled, static, eager)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="CUDA: start no row after this many seconds")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    a.new_tokens = a.new_tokens or (256 if cuda else 32)
    lines = run_cuda(a) if cuda else run_cpu(a)
    print("\n".join(lines))
    if a.write_results:
        append_to_results("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
