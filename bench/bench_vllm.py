"""Decoding throughput side by side: vLLM (CPU, eager), rlextra's engine and HF `generate`, one model
(K = 1), and Logits Extrapolation (K = 2) in rlextra's engine and inside vLLM, at batch 1, 16 and 64;
greedy, fp32, SmolLM2-135M-Instruct.

Every decoder gets the same chat-formatted prompts and settings (greedy, 32 new tokens); each batch
size is a separate timed call after one untimed warm-up call; vLLM's engine start is timed apart
(it is paid once per process). Greedy completions are compared across decoders (count of equal
texts). Run it in the vLLM venv, in the background (vLLM spawns its engine as another process).

Usage (repository root; the model from `rlextra convert-gguf --smollm2 -o experiments/smollm2/work/model`):
  OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python bench/bench_vllm.py \\
      --model experiments/smollm2/work/model \\
      --second experiments/smollm2/long/work/runs/grpo-lr1.2e-05/checkpoint-10 --write-results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

from _results import append_to_results

HERE = Path(__file__).resolve().parent
QUESTIONS = [f"What is {a} + {b}? Answer with only the number." for a in range(11, 99, 7) for b in (13, 58, 76, 94)]


def prompts(tokenizer, n: int) -> list[str]:
    from rlextra.hf import format_prompts

    return format_prompts(tokenizer, (QUESTIONS * 2)[:n], True)


def timed(decoder, texts: list[str], batch: int, cfg) -> tuple[float, int, list[str]]:
    """Seconds, new tokens and completions of decoding ``texts`` ``batch`` prompts per call."""
    from dataclasses import replace

    tok = decoder.tokenizer
    out: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        out += [c[0] for c in decoder.generate(texts[i:i + batch], replace(cfg, batch_size=batch), progress=False)]
    wall = time.perf_counter() - t0
    tokens = sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in out)
    return wall, tokens, out


def main() -> None:
    from rlextra.decoding import SamplingConfig, load_decoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--second", help="a later checkpoint of the same model, for the K = 2 rows")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    cfg = SamplingConfig(k=1, temperature=0.0, max_new_tokens=a.new_tokens, seed=0)
    sizes = {1: 8, 16: 32, 64: 64}  # batch -> prompts decoded at that batch
    rows, texts_by = [], {}
    decoders = {}
    t0 = time.perf_counter()
    decoders["vllm"] = load_decoder(a.model, backend="vllm", dtype="float32")
    decoders["vllm"].generate(prompts(decoders["vllm"].tokenizer, 1), cfg, progress=False)  # engine start
    start_s = time.perf_counter() - t0
    decoders["rlextra"] = load_decoder(a.model, backend="rlextra", dtype="float32", device="cpu")
    decoders["hf"] = load_decoder(a.model, backend="hf", dtype="float32", device="cpu")
    if a.second:
        pair = [f"0={a.model}", f"10={a.second}"]
        decoders["rlextra K=2"] = load_decoder(pair, to_step=20, dtype="float32", device="cpu")
        t0 = time.perf_counter()
        decoders["vllm K=2"] = load_decoder(pair, to_step=20, backend="vllm", dtype="float32")
        decoders["vllm K=2"].generate(prompts(decoders["vllm K=2"].tokenizer, 1), cfg, progress=False)
        start_k2 = time.perf_counter() - t0
    for name, dec in decoders.items():
        texts = prompts(dec.tokenizer, 64)
        dec.generate(texts[:2], cfg, progress=False)  # warm-up, untimed
        for batch, n in sizes.items():
            wall, tokens, out = timed(dec, texts[:n], batch, cfg)
            rows.append({"decoder": name, "batch": batch, "prompts": n, "new_tokens": tokens, "wall_s": round(wall, 2),
                         "tok_per_s": round(tokens / wall, 1)})
            texts_by[(name, batch)] = out
            print(rows[-1], flush=True)
    equal = {f"{n} vs hf, batch {b}": sum(x == y for x, y in zip(texts_by[(n, b)], texts_by[("hf", b)]))
             for n in ("vllm", "rlextra") for b in sizes}
    if a.second:
        equal.update({f"vllm K=2 vs rlextra K=2, batch {b}": sum(
            x == y for x, y in zip(texts_by[("vllm K=2", b)], texts_by[("rlextra K=2", b)])) for b in sizes})
    res = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
           "model": a.model, "second": a.second, "vllm_engine_start_s": round(start_s, 1),
           "vllm_k2_engine_start_s": round(start_k2, 1) if a.second else None, "rows": rows,
           "greedy_equal": equal, "omp_threads": os.environ.get("OMP_NUM_THREADS")}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "vllm_decoding.json").write_text(json.dumps(res, indent=1) + "\n")
    table = ["| decoder | batch 1 | batch 16 | batch 64 |", "|---|---|---|---|"]
    for name in decoders:
        cells = [next(r for r in rows if r["decoder"] == name and r["batch"] == b)["tok_per_s"] for b in sizes]
        table.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    text = (f"\n## Decoding on the CPU: vLLM, rlextra's engine, HF generate ({res['date']})\n\n"
            f"Machine: {res['machine']}, Python {platform.python_version()}, OMP_NUM_THREADS={res['omp_threads']}; "
            f"SmolLM2-135M-Instruct fp32, greedy, {a.new_tokens} new tokens, chat prompts; tokens per second of "
            "new tokens (8 prompts at batch 1, 32 at 16, 64 at 64), after one untimed warm-up call; vLLM "
            f"(vllm-cpu 0.32, eager, threads not bound) engine start {res['vllm_engine_start_s']} s for one model, "
            f"{res['vllm_k2_engine_start_s']} s for K=2, not in the rates. K=2: Logits Extrapolation of two "
            "checkpoints (the base model and a checkpoint 10 GRPO steps later, to step 20), in rlextra's engine "
            "and inside vLLM (rlextra's model class).\n"
            "Command: `OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python bench/bench_vllm.py "
            "--model experiments/smollm2/work/model --second "
            "experiments/smollm2/long/work/runs/grpo-lr1.2e-05/checkpoint-10 --write-results`\n\n"
            + "\n".join(table) + "\n\nGreedy completions equal to HF's: "
            + ", ".join(f"{k}: {v}" for k, v in equal.items()) + ". Curves: `bench/results/vllm_decoding.json`.\n")
    print(text)
    if a.write_results:
        append_to_results(text)


if __name__ == "__main__":
    main()
