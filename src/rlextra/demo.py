"""The embedded default run (README command 1): the paper's phenomena end to end on a CPU.

1. a tiny Llama with a char tokenizer, warmed up (SFT) on 2-digit addition by a noisy teacher, so
   the right answer is the model's most likely one but far from reliably sampled;
2. GRPO (TRL) with a checkpoint every k steps, and the same run with RL-Extra;
3. ``analyze weights`` (the paper's filtered figure and our full-coverage one), ``analyze outputs``
   (token log-probs, the paper's endpoint filter) and ``analyze activations`` on the series;
4. weight extrapolation from two early checkpoints to later steps, and from (0, last) and (last/2,
   last) past the end of the run;
5. evaluation on held-out problems (avg@k, pass@k) of the real checkpoints, the RL-Extra run, the
   weight-extrapolated models and Logits Extrapolation decoding, all with the same decoder
   (rlextra's engine) and seed, so the random streams match;
6. a backtest of the extrapolation methods on the run's own checkpoints, and a report
   (report.md) with the plots and the numbers, compared with the paper's.

The training regime was chosen on learning curves only (bench/bench_regime.py; candidates and
curves in bench/results/regime.json), never on linearity or extrapolation results. Seeds are
fixed: the same command gives the same numbers on the same machine and library versions.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class DemoConfig:
    digits: int = 2
    ops: str = "+"
    n_train: int = 4000
    n_test: int = 200
    warmup_steps: int = 1000
    warmup_lr: float = 1e-3
    warmup_label_noise: float = 0.6  # a noisy teacher: 60% of the SFT answers are off by one (30% each side)
    grpo_steps: int = 200
    save_every: int = 20
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 10
    prompts_per_step: int = 32
    num_generations: int = 8
    eval_k: int = 4
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    extrapolate_from: tuple[int, int] = (0, 100)  # (b, s): two early checkpoints
    extrapolate_to: list[int] = field(default_factory=lambda: [120, 160, 200, 300])
    # chosen in bench/bench_rl_extra.py on a seed not reported there (among the paper's two-point
    # jump at 10,10 and 20,20, and rlextra's keep / lsq / low-rank variants at 20,20)
    rl_extra: tuple[int, int] = (20, 20)
    # past the end of the run: from (0, last) and (last/2, last) at these alphas, against the last checkpoint
    beyond_alphas: tuple[float, ...] = (1.25, 1.5, 2.0)
    monitor_every: int = 5  # the linearity monitor on the GRPO run (window of 8 snapshots)
    rl_extra_variant: dict = field(default_factory=lambda: {"rl_extra_optimizer": "reset", "rl_extra_method": "low-rank",
                                                            "rl_extra_snapshots": 3})
    seed: int = 0

    def task_spec(self):
        from rlextra.tasks import TaskSpec

        return TaskSpec("arithmetic", self.ops, self.digits, self.n_train, self.n_test, self.seed)

    def max_tokens(self) -> int:
        """Longest answer (digits + carry, or a product) plus eos."""
        return 2 * self.digits + 2

    @classmethod
    def quick(cls) -> "DemoConfig":
        """Under two minutes on 2 cores: 1-digit problems, a short warm-up, 20 GRPO steps."""
        return cls(digits=1, ops="+*", n_train=150, n_test=50, warmup_steps=200, warmup_label_noise=0.3,
                   grpo_steps=20, save_every=5, prompts_per_step=16, learning_rate=1e-4,
                   extrapolate_from=(0, 10), extrapolate_to=[15, 20, 30], rl_extra=(5, 5), monitor_every=2)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _stage(i: int, n: int, text: str) -> None:
    print(f"[demo {i}/{n}] {text}", flush=True)


STAGES = 7


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, threads: int = 1,
             overwrite: bool = False, config: DemoConfig | None = None) -> Path:
    """Run every stage into out/ and return out/report.md.

    The folder is claimed up front and written in place (a long run's finished stages stay
    readable if it is interrupted); report.md, written last, marks a complete run.
    """
    from rlextra.io import fresh_output_dir

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    cfg.seed = seed
    out = fresh_output_dir(out, overwrite=overwrite)
    _run(out, cfg, threads)
    print(f"[demo] report: {out / 'report.md'}", flush=True)
    return out / "report.md"


def _run(out: Path, cfg: DemoConfig, threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    from rlextra.analysis import analyze_activations, analyze_outputs, analyze_weights
    from rlextra.decoding import SamplingConfig, load_decoder
    from rlextra.evaluation import evaluate
    from rlextra.extrapolate import extrapolate_weights
    from rlextra.extrapolate.backtest import backtest
    from rlextra.rl.models import build_tiny_model
    from rlextra.rl import TrainConfig, train
    from rlextra.tasks import load_task

    seed = cfg.seed
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    spec = cfg.task_spec()
    task = load_task(spec)
    max_tokens = cfg.max_tokens()

    _stage(1, STAGES, f"tiny model + supervised warm-up on {cfg.digits}-digit '{cfg.ops}' problems "
                      f"(label noise {cfg.warmup_label_noise:g})")
    t = time.perf_counter()
    model_dir, warm_acc = build_tiny_model(out / "model", spec, warmup_steps=cfg.warmup_steps, lr=cfg.warmup_lr,
                                           label_noise=cfg.warmup_label_noise, seed=seed)
    timings["warm-up"] = time.perf_counter() - t

    m, n = cfg.rl_extra
    _stage(2, STAGES, f"GRPO for {cfg.grpo_steps} steps, checkpoint every {cfg.save_every}; then RL-Extra "
                      f"({m} real + {n} extrapolated steps per cycle) with the same settings")
    t = time.perf_counter()
    common = dict(model=str(model_dir), task=spec, max_steps=cfg.grpo_steps, save_every=cfg.save_every,
                  learning_rate=cfg.learning_rate, warmup_steps=cfg.lr_warmup_steps,
                  prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
                  max_completion_length=max_tokens, seed=seed, eval_problems=cfg.n_test)
    run = train(TrainConfig(output_dir=str(out / "run"), monitor_every=cfg.monitor_every, **common))
    timings["GRPO"] = time.perf_counter() - t
    t = time.perf_counter()
    run_extra = train(TrainConfig(output_dir=str(out / "run-rl-extra"), rl_extra=(m, n), **cfg.rl_extra_variant,
                                  **common))
    timings["RL-Extra"] = time.perf_counter() - t

    _stage(3, STAGES, "analyze weights, token log-probs and activations over the checkpoint series")
    t = time.perf_counter()
    report = analyze_weights(run, out / "weights", seed=seed, progress=False)
    paper = analyze_weights(run, out / "weights-paper", only_weights=True, min_change=1e-4, min_distinct=4,
                            seed=seed, progress=False)
    probe_sampling = SamplingConfig(k=1, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                                    max_new_tokens=max_tokens, batch_size=512, seed=seed)
    outputs = analyze_outputs(run, out / "outputs", generate=cfg.n_test, task=spec, sampling=probe_sampling,
                              token_filter="endpoints", seed=seed, progress=False)
    acts = analyze_activations(run, out / "activations", probes=out / "outputs" / "probes.jsonl", seed=seed,
                               progress=False)
    timings["analysis"] = time.perf_counter() - t

    b, s = cfg.extrapolate_from
    _stage(4, STAGES, f"weight extrapolation from steps {b} and {s} to steps {cfg.extrapolate_to}")
    t = time.perf_counter()
    extra_dirs = {target: extrapolate_weights([run / f"checkpoint-{b}", run / f"checkpoint-{s}"],
                                              out / "extrapolated" / f"step-{target}", to_step=target,
                                              progress=False).path
                  for target in cfg.extrapolate_to}
    beyond_dirs = {key: extrapolate_weights([run / f"checkpoint-{key[0]}", run / f"checkpoint-{cfg.grpo_steps}"],
                                            out / "extrapolated" / f"beyond-{key[0]}-alpha-{key[1]:g}",
                                            alpha=key[1], progress=False).path
                   for key in beyond_windows(cfg)}
    timings["extrapolation"] = time.perf_counter() - t

    _stage(5, STAGES, f"evaluate real, RL-Extra and extrapolated models with one decoder "
                      f"(avg@{cfg.eval_k}, T={cfg.eval_temperature})")
    t = time.perf_counter()
    sampling = SamplingConfig(k=cfg.eval_k, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p,
                              max_new_tokens=max_tokens, batch_size=512, seed=seed)
    real_steps = report["steps"]
    jobs = {"real": {st: [run / f"checkpoint-{st}"] for st in real_steps},
            "rl_extra": {st: [run_extra / f"checkpoint-{st}"] for st in real_steps},
            "extrapolated": {st: [d] for st, d in extra_dirs.items()},
            "logits": {st: [run / f"checkpoint-{b}", run / f"checkpoint-{s}"] for st in cfg.extrapolate_to},
            "beyond_weights": {_key(*k): [d] for k, d in beyond_dirs.items()},
            "beyond_logits": {_key(*k): [run / f"checkpoint-{k[0]}", run / f"checkpoint-{cfg.grpo_steps}"]
                              for k in beyond_dirs}}
    results: dict[str, dict] = {kind: {} for kind in jobs}
    counts: dict[str, dict] = {kind: {} for kind in jobs}  # correct samples per problem, for paired errors
    for kind, folders in jobs.items():
        for st, paths in folders.items():
            target = dict(to_step=st) if kind == "logits" else \
                dict(alpha=float(st.split(":")[1])) if kind == "beyond_logits" else {}
            decoder = load_decoder(paths if len(paths) > 1 else paths[0], backend="rlextra", device="cpu",
                                   dtype="float32", **target)
            summary = evaluate(decoder, task, out / "eval" / f"{kind}-{st}.json", sampling=sampling, progress=False)
            results[kind][st] = summary["metrics"]
            counts[kind][st] = [p["n_correct"] for p in summary["per_problem"]]
    timings["evaluation"] = time.perf_counter() - t

    _stage(6, STAGES, "backtest: every method's prediction of the run's later checkpoints (weight error)")
    t = time.perf_counter()
    bt = backtest(run, out / "backtest", methods=("two-point", "lsq", "low-rank"), pairs="first", progress=False)
    timings["backtest"] = time.perf_counter() - t

    _stage(7, STAGES, "report")
    metrics_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timings["total"] = time.perf_counter() - t_start
    write_report(out, cfg, report, paper, outputs, acts, results, bt, metrics_rows, warm_acc, timings, counts)


def beyond_windows(cfg: DemoConfig) -> list[tuple[int, float]]:
    """(b, alpha) of every extrapolation past the last checkpoint: b = 0 and b = the checkpoint nearest
    half the run, each with the last checkpoint as s."""
    half = round(cfg.grpo_steps / 2 / cfg.save_every) * cfg.save_every
    return [(b, a) for b in (0, half) for a in cfg.beyond_alphas]


def _key(b: int, alpha: float) -> str:
    return f"{b}:{alpha:g}"


def beyond_rows(cfg: DemoConfig, results: dict, counts: dict, key: str) -> list[dict]:
    """Per (b, alpha) past the last checkpoint: weight and logits extrapolation's accuracy, and each one's
    difference from the last checkpoint with its standard error, paired over the held-out problems."""
    from rlextra.metrics import paired_difference

    last = cfg.grpo_steps
    rows = []
    for b, a in beyond_windows(cfg):
        row = {"b": b, "s": last, "alpha": a, "target_step": b + a * (last - b)}
        for kind in ("weights", "logits"):
            k = _key(b, a)
            d, se = paired_difference(counts[f"beyond_{kind}"][k], counts["real"][last], cfg.eval_k)
            row[kind] = {key: results[f"beyond_{kind}"][k][key], "minus_last": d, "se": se}
        rows.append(row)
    return rows


def _beyond_section(cfg: DemoConfig, rows: list[dict], final: float, n_problems: int, key: str) -> str:
    """Report section 5: weight and logits extrapolation past the last checkpoint, against it."""
    last = cfg.grpo_steps

    def cell(c: dict) -> str:
        return f"{c[key]:.3f} ({c['minus_last']:+.3f} ± {c['se']:.3f})"

    lines = [f"| ({r['b']}, {last}) | {r['alpha']:g} | {r['target_step']:g} | {cell(r['weights'])} | "
             f"{cell(r['logits'])} |" for r in rows]
    return f"""## 5. Beyond the end of the run

A user with a finished run asks: can I get more than my last checkpoint, for free? The paper reports
that logits extrapolation past the final checkpoint beats it (AIME24 0.4193 -> 0.4458; +4.2% on
average over four benchmarks). Here: weights and logits extrapolated from (0, {last}) and
({rows[-1]['b']}, {last}) at alpha {', '.join(f'{a:g}' for a in cfg.beyond_alphas)}, against the last
checkpoint ({key} {final:.3f}). In brackets: the difference from the last checkpoint and its standard
error, paired over the {n_problems} held-out problems.

| window (b, s) | alpha | target step | weight-extrapolated {key} | logits-extrapolated {key} |
|---|---|---|---|---|
""" + "\n".join(lines) + "\n\n"


def _bt_line(bt: dict, m: int) -> str:
    """What the backtest says about a jump of n after m real steps, per method."""
    from rlextra.extrapolate.backtest import recommend

    rec = recommend([r for r in bt["rows"] if r["s"] - r["b"] == m])
    return "; ".join(f"{meth}: {v['verdict']}" for meth, v in rec.items()) or "no window of that length"


def _monitor_line(r: dict) -> str:
    bt = r.get("backtest", {})

    def err(m):
        e = bt.get(m)
        return "n/a" if not e or e["weight_error"] is None else f"{e['weight_error']:.3f} ({e['alpha']:g})"

    w = r["window_steps"]
    return f"| {r['step']} | {w[0]}..{w[-1]} | {_f(r['mean_r2'])} | {_pct(r['frac_r2_above_0.7'])} | " \
           f"{err('two-point')} | {err('lsq')} |"


def _monitor_overhead(rows: list[dict], metrics_rows: list[dict]) -> str:
    spent = max((r.get("monitor_seconds", 0.0) for r in rows), default=0.0)
    total = max((r.get("train_seconds", 0.0) for r in metrics_rows), default=0.0)
    return f"{spent:.1f} s, {100 * spent / total:.2f}%" if total else f"{spent:.1f} s"


def demo_results(cfg: DemoConfig, report: dict, paper: dict, outputs: dict, acts: dict, results: dict, bt: dict,
                 metrics_rows: list[dict], warm_acc: float, timings: dict, monitor_rows: list[dict],
                 beyond: list[dict]) -> dict:
    """results.json: every number the report cites, apart from its wording."""
    g, gp = report["global"], paper["global"]
    lp, lg, a = outputs["logprob"], outputs["logit"], acts["activation"]
    return {
        "config": asdict(cfg), "warmup_heldout_greedy_accuracy": warm_acc,
        "linearity": {"mean_r2": g["mean_r2"], "median_r2": g["median_r2"], "frac_r2_above_0.7": g["frac_r2_above_0.7"],
                      "n_params_analyzed": report["n_params_analyzed"]},
        "linearity_paper_filters": {"mean_r2": gp["mean_r2"], "median_r2": gp["median_r2"],
                                    "frac_r2_above_0.7": gp["frac_r2_above_0.7"],
                                    "n_params_analyzed": paper["n_params_analyzed"]},
        "output_linearity": {k_: outputs[k_] for k_ in ("n_probes", "n_tokens", "filter")} |
                            {"logprob": {k_: v for k_, v in lp.items() if k_ != "histogram"},
                             "logit": {k_: v for k_, v in lg.items() if k_ != "histogram"}},
        "activation_linearity": {k_: v for k_, v in a.items() if k_ != "histogram"},
        "eval": results, "beyond_the_end": beyond, "backtest_recommendation": bt["recommendation"],
        "train_metrics": metrics_rows,
        "monitor": [{k_: r.get(k_) for k_ in ("step", "window_steps", "mean_r2", "frac_r2_above_0.7", "backtest",
                                              "monitor_seconds")} for r in monitor_rows],
        "seconds": timings}


def write_report(out: Path, cfg: DemoConfig, report: dict, paper: dict, outputs: dict, acts: dict,
                 results: dict, bt: dict, metrics_rows: list[dict], warm_acc: float, timings: dict,
                 counts: dict | None = None) -> Path:
    """report.md (the wording), results.json (``demo_results``: the numbers) and the plots."""
    from rlextra.analysis.plots import plot_accuracy_curve, plot_linearity_vs_step

    k = cfg.eval_k
    key = f"avg@{k}"
    acc = {kind: {int(s): m_[key] for s, m_ in rows.items()} for kind, rows in results.items()
           if not kind.startswith("beyond")}
    real, extra, logits, rl_extra = acc["real"], acc["extrapolated"], acc["logits"], acc["rl_extra"]
    rewards = {r["step"]: r["mean_reward"] for r in metrics_rows if r.get("mean_reward") is not None}
    extra_rows = [json.loads(x) for x in (out / "run-rl-extra" / "metrics.jsonl").read_text().splitlines()]
    eff = {r["step"]: r.get("effective_step", r["step"]) for r in extra_rows}
    m, n = cfg.rl_extra
    variant = f"{cfg.rl_extra_variant.get('rl_extra_method', 'two-point')} jump, optimizer " \
              f"{cfg.rl_extra_variant.get('rl_extra_optimizer', 'reset')}"
    plot_accuracy_curve(real, extra, rewards, out / "accuracy_vs_step.png",
                        title=f"Held-out {key} (T={cfg.eval_temperature}) vs step",
                        extra_label=f"weight extrapolation from steps {cfg.extrapolate_from}",
                        logits=logits, logits_label=f"logits extrapolation from steps {cfg.extrapolate_from}",
                        rl_extra=rl_extra, rl_extra_label=f"RL-Extra {m},{n} (x = real steps)")
    monitor_rows = [json.loads(x) for x in (out / "run" / "linearity.jsonl").read_text().splitlines()]
    plot_linearity_vs_step(monitor_rows, out / "linearity_vs_step.png",
                           title=f"GRPO run: the monitor's window R² and in-flight weight error (every "
                                 f"{cfg.monitor_every} steps, window of 8)")
    g, gp = report["global"], paper["global"]
    frac, frac_paper = g["frac_r2_above_0.7"], gp["frac_r2_above_0.7"]
    lp, lg = outputs["logprob"], outputs["logit"]
    a = acts["activation"]
    b, s = cfg.extrapolate_from
    last = max(real)
    mid = sorted(real)[len(real) // 2]
    rows = [f"| {t} | {(t - b) / (s - b):.2f} | {extra[t]:.3f} | {logits[t]:.3f} | "
            f"{'%.3f' % real[t] if t in real else 'beyond the run'} |" for t in sorted(extra)]
    rec = bt["recommendation"]
    beyond = beyond_rows(cfg, results, counts, key) if counts and "beyond_weights" in results else []
    (out / "results.json").write_text(json.dumps(demo_results(
        cfg, report, paper, outputs, acts, results, bt, metrics_rows, warm_acc, timings, monitor_rows, beyond),
        indent=1) + "\n")
    rise = real[last] - real[0]
    text = f"""# rlextra demo: RLVR linearity on a tiny model

Task: {cfg.digits}-digit arithmetic ('{cfg.ops}'), {cfg.n_train} training and {cfg.n_test} held-out
problems (seed {cfg.seed}). Model: a {report['n_params']:,}-parameter Llama with a character tokenizer,
warmed up by SFT for {cfg.warmup_steps} steps from a noisy teacher (with probability
{cfg.warmup_label_noise:g} an answer is replaced by its off-by-one neighbour), so the right answer is
in the model's distribution but not reliably sampled: held-out greedy accuracy {warm_acc:.3f}. Then
GRPO (TRL) for {cfg.grpo_steps} steps: {cfg.prompts_per_step} prompts x {cfg.num_generations} samples per
step, lr {cfg.learning_rate:g} (linear warm-up over {cfg.lr_warmup_steps} steps, then constant), no KL,
temperature 1.0; a checkpoint every {cfg.save_every} steps. Evaluation: {k} samples per held-out
problem at temperature {cfg.eval_temperature}, top-p {cfg.eval_top_p}, every model through the same
decoder (rlextra's engine) and seed. The regime was chosen on learning curves only
(`bench/bench_regime.py`, `bench/results/regime.json`).

## 1. Does RL learn?

Held-out {key}: {real[0]:.3f} at step 0, {real[mid]:.3f} at step {mid}, {real[last]:.3f} at step {last}
({'+' if rise >= 0 else ''}{rise:.3f}).

![accuracy vs step](accuracy_vs_step.png)

| real step | mean training reward (GRPO) | held-out {key}, GRPO | held-out {key}, RL-Extra (effective step) |
|---|---|---|---|
""" + "\n".join(f"| {st} | {_f(rewards.get(st))} | {real[st]:.3f} | {rl_extra[st]:.3f} "
                f"({eff.get(st, st)}) |" for st in sorted(real)) + f"""

RL-Extra ({variant}): the same GRPO settings and seed, but after every {m} real steps the weights
jump {n} steps ahead, predicted from snapshots of the cycle (in the trainer; `rlextra train --rl-extra`
documents each jump method). The variant and m, n were chosen in `bench/bench_rl_extra.py` on a
seed that is not reported there.

## 2. Is the run linear?

Over {len(report['steps'])} checkpoints (steps {report['steps'][0]}..{report['steps'][-1]}):

| weights | parameters fitted | R² > 0.7 | mean R² | median R² |
|---|---|---|---|---|
| the paper's figure: `.weight` tensors, entries that change by more than 1e-4 and take at least 4 distinct values | {paper['n_params_analyzed']:,} | **{_pct(frac_paper)}** | {_f(gp['mean_r2'])} | {_f(gp['median_r2'])} |
| rlextra's full coverage: every parameter that moved | {report['n_params_analyzed']:,} | **{_pct(frac)}** | {_f(g['mean_r2'])} | {_f(g['median_r2'])} |

The paper reports > 70% of weights with R² > 0.7 for most settings: this run
{'meets' if frac_paper > 0.7 else 'falls short of'} that on the paper's figure.

![R² histogram](weights/r2_histogram.png)
![R² per module and layer](weights/r2_heatmap.png)
![example trajectories](weights/trajectories.png)

Token log-probs: {outputs['n_probes']} responses sampled from step 0 on held-out prompts were
teacher-forced through every checkpoint; {outputs['filter']['n_tokens_kept']} of {outputs['n_tokens']} response
tokens pass the paper's endpoint filter (|lp_last - lp_first| > {outputs['filter']['min_logprob_change']}).
Their log-prob R²: mean {_f(lp['mean_r2'])}, median {_f(lp['median_r2'])}, {_pct(lp['frac_r2_above_0.7'])} > 0.7;
raw logit R²: mean {_f(lg['mean_r2'])}, {_pct(lg['frac_r2_above_0.7'])} > 0.7. The paper reports token
log-prob R² around 0.9.

Activations (rlextra's definition: every dimension of each layer's output at the probes' response
tokens): mean R² {_f(a['mean_r2'])}, median {_f(a['median_r2'])}, {_pct(a['frac_r2_above_0.7'])} > 0.7.

![token log-prob R²](outputs/r2_logprob_histogram.png)
![activation R² per layer](activations/r2_per_layer.png)

## 2b. Watching the run: the linearity monitor

The GRPO run above trained with `--monitor-every {cfg.monitor_every}`: every {cfg.monitor_every} steps
the monitor copies a fixed 0.1% sample of the weights (at least 50 entries per tensor) and reports,
over its window of the last 8 snapshots, the R² of each sampled entry's line and an in-flight
backtest (the newest snapshot predicted from older ones; weight error below 1 beats stopping).
It cost {_monitor_overhead(monitor_rows, metrics_rows)} of the run's training time.

| step | window | mean R² | R² > 0.7 | two-point weight error (alpha) | lsq weight error (alpha) |
|---|---|---|---|---|---|
""" + "\n".join(_monitor_line(r) for r in monitor_rows if r["step"] % (4 * cfg.monitor_every) == 0) + f"""

![in-flight linearity](linearity_vs_step.png)

## 3. Extrapolation from steps {b} and {s}

Weights: W_T = W_{b} + alpha (W_{s} - W_{b}), norms copied from step {s}. Logits: decoding with
z_T = z_{b} + alpha (z_{s} - z_{b}) at every token, both models loaded. Real checkpoints exist up to step {last}.

| target step T | alpha | weight-extrapolated {key} | logits-extrapolated {key} | real {key} at T |
|---|---|---|---|---|
""" + "\n".join(rows) + f"""

Real step {s} (the newest checkpoint the extrapolation used): {real[s]:.3f}; real step {last}: {real[last]:.3f}.

## 4. Backtest: how far is it safe to jump on this run?

Each method predicts every later real checkpoint from windows starting at step {report['steps'][0]};
weight error = ||W_pred - W_T|| / ||W_T - W_s|| (below 1: better than stopping at s).

| method | median weight error | largest safe alpha |
|---|---|---|
""" + "\n".join(f"| {meth} | {_f(v.get('median_weight_error'))} | {v['verdict']} |" for meth, v in rec.items()) + f"""

For RL-Extra's jump (n/m = {n}/{m}, alpha = {(m + n) / m:.2f} over windows of {m} steps): {_bt_line(bt, m)}.

![weight error vs alpha](backtest/weight_error.png)

""" + (_beyond_section(cfg, beyond, real[last], len(counts["real"][last]), key) if beyond else "") + f"""## Reproduce

`rlextra demo -o DIR{' --quick' if cfg.grpo_steps < 50 else ''} --seed {cfg.seed}` (same numbers on the
same machine and library versions). Wall time: """ + ", ".join(f"{k_} {v:.0f}s" for k_, v in timings.items()) + """.
All numbers are in results.json, per-generation records in eval/*.generations.jsonl.
"""
    path = out / "report.md"
    path.write_text(text)
    return path
