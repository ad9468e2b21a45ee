"""The long SmolLM2 run's report: curves of every run evaluated so far, the choice of the learning
rate on GRPO curves alone, and (as the runs land) the comparisons at equal real steps.

Reads work/eval/NAME-STEP.json (written by train_and_eval.sh) and work/runs/NAME/metrics.jsonl, on
top of what earlier reports committed: curves.json (every evaluation and training reward) and
record.json (the sections rendered from work files that are not committed: analyses, extrapolated
models' evaluations, jump logs, CPU hours). A work folder lost with its machine therefore costs no
result; what is evaluated again is checked against the record. Writes curves.json (small: accuracy
and per-problem counts per run and step, and the analysis figures RESULTS.md cites), record.json,
accuracy_vs_step.png and RESULTS.md beside this script. Nothing here trains or evaluates: run it at any time.

The selection criterion (issue text, applied to GRPO curves only, before any linearity or
extrapolation number exists): held-out avg@4 rises by at least 0.15 from step 0 to the end, by at
least 0.05 over the second half, and no 30-step stretch is flat within noise. "Flat within noise"
is ours: a stretch whose gain is below one standard error of that gain, paired over the held-out
problems.

Usage: .venv/bin/python experiments/smollm2/long/report.py
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlextra.metrics import paired_difference  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CONFIG = json.loads((HERE / "config.json").read_text())
K = CONFIG["eval"]["k"]
KEY = f"avg@{K}"
STRETCH = 30  # steps: the criterion's stretch
RECORD = HERE / "record.json"


def load_record() -> dict:
    """What earlier reports committed: curves.json's evaluations and rewards, record.json's sections."""
    rec = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    committed = json.loads((HERE / "curves.json").read_text()) if (HERE / "curves.json").exists() else {}
    for key in ("runs", "superseded_after_reset", "train_reward", "analysis"):
        rec[key] = committed.get(key, {})
    return rec


def _as_curves(runs: dict) -> dict[str, dict[int, dict]]:
    """Committed curves, with avg@k recomputed exactly from the per-problem counts (committed rounded)."""
    out = {n: {int(s): {"acc": sum(v["n_correct"]) / (K * len(v["n_correct"])), "n_correct": v["n_correct"]}
               for s, v in c.items()} for n, c in runs.items()}
    for n, c in runs.items():
        for s, v in c.items():
            if abs(out[n][int(s)]["acc"] - v["acc"]) > 1e-6:
                raise SystemExit(f"{HERE / 'curves.json'}: {n} step {s}: avg@{K} {v['acc']} does not match its counts")
    return out


def merged(recorded: dict[str, dict[int, dict]], live: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
    """The committed evaluations with the live ones on top (a live evaluation of the same checkpoint wins)."""
    out = {n: dict(c) for n, c in recorded.items()}
    for n, c in live.items():
        out.setdefault(n, {}).update(c)
    return {n: dict(sorted(c.items())) for n, c in sorted(out.items())}


def agreement(recorded: dict[str, dict[int, dict]], live: dict[str, dict[int, dict]]) -> dict[str, dict[int, bool]]:
    """Checkpoints evaluated again (a run retrained after its work folder was lost): same per-problem
    counts as on record or not. Evaluation is deterministic, so equal counts mean equal behaviour."""
    return {n: {s: v["n_correct"] == recorded[n][s]["n_correct"] for s, v in sorted(c.items()) if s in recorded.get(n, {})}
            for n, c in live.items() if any(s in recorded.get(n, {}) for s in c)}


def load_curves(work: Path = WORK) -> dict[str, dict[int, dict]]:
    """Per run: step -> {acc, n_correct}, from the evaluations that exist under ``work``."""
    runs: dict[str, dict[int, dict]] = {}
    names = sorted(d.name for d in (work / "runs").iterdir() if d.is_dir()) if (work / "runs").is_dir() else []
    for name in names:
        for f in sorted((work / "eval").glob(f"{name}-*.json")):
            m = re.fullmatch(re.escape(name) + r"-(\d+)\.json", f.name)
            if not m:  # an analysis of the run (horizon, beyond), not a checkpoint of it
                continue
            s = json.loads(f.read_text())
            runs.setdefault(name, {})[int(m.group(1))] = {
                "acc": s["metrics"][KEY], "n_correct": [p["n_correct"] for p in s["per_problem"]]}
    return {name: dict(sorted(c.items())) for name, c in runs.items()}


def train_rows(name: str) -> list[dict]:
    log = WORK / "runs" / name / "metrics.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def log_hours(log: Path) -> dict:
    """One commands.log in hours (one thread per job, so wall time is CPU time; two jobs shared the two
    cores), read once: by kind ("total") and, per run, training and evaluation ("runs")."""
    total = {"training": 0.0, "evaluation": 0.0, "analysis": 0.0}
    runs: dict[str, list[int]] = {}  # seconds until the end
    for line in log.read_text().splitlines():
        m = re.search(r"\((\d+) s\)$", line)
        if not m:
            continue
        sec = int(m.group(1))
        kind = "training" if "] train " in line else "evaluation" if "] eval " in line else "analysis"
        total[kind] += sec / 3600
        if t := re.search(r"\] train (\S+) to step", line):
            runs.setdefault(t.group(1), [0, 0])[0] += sec
        elif kind == "evaluation":
            for name in set(re.findall(r"runs/([^/\s]+)/checkpoint-", line)):
                runs.setdefault(name, [0, 0])[1] += sec
    return {"total": total, "runs": {n: [t / 3600, e / 3600] for n, (t, e) in runs.items()}}


def criterion(curve: dict[int, dict], steps_total: int) -> dict:
    """The selection criterion on one GRPO curve; 'complete' is False until the last step is evaluated."""
    steps = sorted(curve)
    out = {"complete": steps_total in curve, "evaluated_to": steps[-1] if steps else None}
    if not steps or steps[0] != 0:
        return out
    last = steps[-1]
    half = min(steps, key=lambda s: abs(s - last / 2))
    out["rise"] = curve[last]["acc"] - curve[0]["acc"]
    out["second_half"] = curve[last]["acc"] - curve[half]["acc"]
    flats = []
    for s in steps:
        e = s + STRETCH
        if e in curve:
            gain, se = paired_difference(curve[e]["n_correct"], curve[s]["n_correct"], K)
            if gain < se:
                flats.append({"from": s, "to": e, "gain": round(gain, 4), "se": round(se, 4)})
    out["flat_stretches"] = flats
    out["met"] = out["complete"] and out["rise"] >= 0.15 and out["second_half"] >= 0.05 and not flats
    return out


def _panel(name: str) -> set[int]:
    """The plot panels a run belongs in: 0 for the jumps of 20,20 (and the control), 1 for 20,100;
    GRPO at 1e-6 in both, GRPO at 6e-6 beside 20,100, the other GRPO runs beside 20,20."""
    if name.startswith("grpo-"):
        return {0, 1} if name.startswith(CHOSEN) else {1} if name.startswith("grpo-lr6e-06") else {0}
    return {1} if "-20-100-" in name else {0}


def plot(curves: dict[str, dict[int, dict]], path: Path) -> None:
    """One panel per jump size, each beside the GRPO runs it is judged against; other seeds dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    titles = ("m,n = 20,20 and the control 20,0, against GRPO (1x, 2x lr; the lr candidates)",
              "m,n = 20,100, against GRPO (1x, 6x lr)")
    colors = {name: plt.get_cmap("tab20")(j % 20) for j, name in enumerate(curves)}  # one color per run
    for i, (ax, title) in enumerate(zip(axes, titles)):
        for name, c in curves.items():
            if i in _panel(name):
                xs = sorted(c)
                ax.plot(xs, [c[x]["acc"] for x in xs], "o--" if seed_of(name) else "o-", ms=3, lw=1.2, label=name,
                        color=colors[name])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("real optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(f"held-out {KEY} (T={CONFIG['eval']['temperature']}, {CONFIG['task']['n_test']} problems)")
    fig.suptitle("SmolLM2-135M-Instruct, mixed arithmetic, 8 prompts x 4 samples per step", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


CHOSEN = "grpo-lr1e-06"  # the run the criterion chose (section 1); analyze.sh measures it
ALPHA_BINS = (1.25, 1.5, 2.0, 3.0)


def _eval(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _diff(a: dict, b: dict) -> tuple[float, float]:
    """a - b in avg@k, paired over the held-out problems, with its standard error."""
    return paired_difference([p["n_correct"] for p in a["per_problem"]], [p["n_correct"] for p in b["per_problem"]], K)


def first_reaching(curve: dict[int, dict], level: float) -> int | None:
    return next((s for s in sorted(curve) if curve[s]["acc"] >= level - 1e-12), None)


def seed_of(name: str) -> int:
    """The training seed a run's name carries ("-seedN" at its end; none is seed 0)."""
    m = re.search(r"-seed(\d+)$", name)
    return int(m.group(1)) if m else 0


def seeds_section(curves: dict[str, dict[int, dict]]) -> str:
    """Runs trained again with another seed (data order and sampling; the same held-out problems,
    decoder and evaluation seed): each against its seed-0 run, and RL-Extra's difference from GRPO
    at the same lr under each seed. The paired SE counts the evaluation's noise over problems only;
    the seed-to-seed spread shows the training noise it leaves out."""
    lines = ["| run | real step | seed 0 | other seed | other - seed 0 (paired SE) |", "|---|---|---|---|---|"]
    gaps = []
    for n in curves:
        seed = seed_of(n)
        if not seed:
            continue
        first = curves.get(n.removesuffix(f"-seed{seed}"), {})
        for s, d, se in _diffs(curves, n, n.removesuffix(f"-seed{seed}"), steps=[s for s in sorted(curves[n]) if s]):
            lines.append(f"| {n} | {s} | {first[s]['acc']:.3f} | {curves[n][s]['acc']:.3f} | {d:+.3f} ({se:.3f}) |")
        grpo = curves.get(f"{CHOSEN}-seed{seed}", {})
        if n.startswith("grpo-"):
            continue
        for s in sorted(curves[n]):
            if s and s in grpo and s in first and s in curves.get(CHOSEN, {}):
                d1, se1 = paired_difference(curves[n][s]["n_correct"], grpo[s]["n_correct"], K)
                d0, se0 = paired_difference(first[s]["n_correct"], curves[CHOSEN][s]["n_correct"], K)
                gaps.append(f"{n.removesuffix(f'-seed{seed}')} at real step {s}: {d0:+.3f} ({se0:.3f}) under "
                            f"seed 0, {d1:+.3f} ({se1:.3f}) under seed {seed}")
    if len(lines) == 2:
        return ""
    out = "\n".join(lines) + "\n"
    if gaps:
        out += "\nRL-Extra minus GRPO at the same lr (paired SE), per seed: " + "; ".join(gaps) + ".\n"
    return out


def equal_steps_section(curves: dict[str, dict[int, dict]]) -> str:
    """Each run beside GRPO at the same real step, paired differences, and the real steps to reach levels."""
    base = curves.get(CHOSEN, {})
    others = [n for n in curves if n != CHOSEN and not seed_of(n)]  # other seeds: seeds_section
    if not base or not others:
        return "No comparison run has been evaluated yet.\n"
    lines = ["| run | real step | held-out avg@4 | GRPO lr 1e-6 at that step | difference (paired SE) | "
             "GRPO at lr x (m+n)/m | difference (paired SE) |", "|---|---|---|---|---|---|---|"]
    for n in others:
        m = re.search(r"-(\d+)-(\d+)-lr", n)
        raised = curves.get(f"grpo-lr{1e-6 * (int(m.group(1)) + int(m.group(2))) / int(m.group(1)):.0e}", {}) \
            if m and int(m.group(2)) else {}
        for s in sorted(curves[n]):
            if s == 0 or s not in base or (s % 50 and s != max(curves[n])):
                continue
            d, se = paired_difference(curves[n][s]["n_correct"], base[s]["n_correct"], K)
            row = f"| {n} | {s} | {curves[n][s]['acc']:.3f} | {base[s]['acc']:.3f} | {d:+.3f} ({se:.3f}) | "
            if s in raised:
                d2, se2 = paired_difference(curves[n][s]["n_correct"], raised[s]["n_correct"], K)
                row += f"{raised[s]['acc']:.3f} | {d2:+.3f} ({se2:.3f}) |"
            else:
                row += "- | - |"
            lines.append(row)
    shape = []
    for n in others:
        if not n.startswith("rlextra-"):
            continue
        gains = _diffs(curves, n, CHOSEN, steps=sorted(s for s in curves[n] if s and not s % 50))
        if gains:
            shape.append(f"{n}: " + _show(gains))
    if shape:
        lines += ["", "The shape of the gain over GRPO at a fixed real-step budget (paired SE), beside the paper's: "
                  "its RL-Extra gain shrinks over training, +5.2 points of AIME24 at 200 real steps and +2.3 at "
                  "1,200. Ours: " + "; ".join(shape) + "."]
    levels = [0.4, 0.5, 0.6, base[max(base)]["acc"]]
    lines += ["", "Real steps to first reach a held-out level (checkpoints every 10 steps; '-' not yet), and GRPO's "
              "steps over the run's (the paper's speed-up measure; it reports 6.1x for 20,100 to AIME24 >= 0.38 and "
              "1.6x for 100,100 to >= 0.40):", "",
              "| run | " + " | ".join(f">= {v:.3f}" for v in levels) + " |", "|---|" + "---|" * len(levels)]
    for n in [CHOSEN, *others]:
        cells = []
        for v in levels:
            r, g = first_reaching(curves[n], v), first_reaching(base, v)
            cells.append("-" if r is None else f"{r}" + (f" ({g / r:.2f}x)" if n != CHOSEN and g and r else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replay_section(curves: dict[str, dict[int, dict]]) -> str:
    """The paper's data order (``--rl-extra-replay``) against rlextra's default (the sampler goes on), same
    m,n, same real step, paired; the paper's published scripts replay, so this is the difference its
    numbers carry."""
    lines = ["| m,n | real step | replay (the paper's order) | data goes on (rlextra's default) | "
             "replay - default (paired SE) |", "|---|---|---|---|---|"]
    for n in curves:
        if not n.startswith("replay-"):
            continue
        default = "rlextra-" + n.removeprefix("replay-")
        mn = ",".join(re.findall(r"\d+", n)[:2])
        steps = [s for s in sorted(curves[n]) if s and (not s % 50 or s == max(curves[n]))]
        for s, d, se in _diffs(curves, n, default, steps=steps):
            lines.append(f"| {mn} | {s} | {curves[n][s]['acc']:.3f} | {curves[default][s]['acc']:.3f} | "
                         f"{d:+.3f} ({se:.3f}) |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def _diffs(curves: dict[str, dict[int, dict]], run: str, base: str, steps=(50, 100, 150)) -> list[tuple]:
    """(step, run - base, SE) paired over the held-out problems, at the steps both have."""
    a, b = curves.get(run, {}), curves.get(base, {})
    return [(s, *paired_difference(a[s]["n_correct"], b[s]["n_correct"], K)) for s in steps if s in a and s in b]


def _verdict(diffs: list[tuple]) -> str:
    """Our reading of paired differences (ours): beyond 2 SE counts as a difference, else level."""
    if not diffs:
        return "not measured"
    words = [(s, "above" if d > 2 * se else "below" if d < -2 * se else "level") for s, d, se in diffs]
    if len({w for _, w in words}) == 1:
        word = words[0][1]
        return ("level within 2 SE" if word == "level" else word + " by more than 2 SE") + " at every step compared"
    return "mixed: " + ", ".join(f"{w} at {s}" for s, w in words)


def _show(diffs: list[tuple]) -> str:
    return ", ".join(f"{d:+.3f} ({se:.3f}) at {s}" for s, d, se in diffs) or "-"


def _table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the markdown tables in a rendered section (cells stripped)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| (")]


def claims_section(curves: dict[str, dict[int, dict]], analysis: dict, sections: dict) -> str:
    """Each claim of the paper beside our number, with the paired SE of every difference, and the
    baselines the paper did not run (ours). Computed from the curves and the rendered sections."""
    w, f = analysis.get("weights", {}), analysis.get("weights_paper_filters", {})
    tok, act = analysis.get("token_logprob", {}), analysis.get("activations", {})
    rows = []
    if f:
        rows.append(("Weights move on lines (the paper's filters)", "R^2 > 0.7 for most parameters, near 0.9",
                     f"{f['frac_r2_above_0.7']:.1%} above 0.7, median {f['median_r2']:.3f}, on the "
                     f"{f['n_params_analyzed']:,} entries the filters keep; full coverage {w['frac_r2_above_0.7']:.1%}, "
                     f"median {w['median_r2']:.3f}",
                     "agrees on the filtered entries" if f["frac_r2_above_0.7"] > 0.5 else "disagrees"))
    if tok:
        rows.append(("Token log-probs move on lines", "R^2 around 0.9",
                     f"mean {tok['mean_r2']:.3f}, {tok['frac_r2_above_0.7']:.1%} above 0.7 (endpoint filter)",
                     "agrees" if tok["mean_r2"] >= 0.8 else "weaker"))
    if act:
        rows.append(("Activations move on lines (v3)", "linear too",
                     f"median {act['median_r2']:.3f}, {act['frac_r2_above_0.7']:.1%} above 0.7",
                     "agrees" if act["median_r2"] >= 0.8 else "weaker"))
    far = re.findall(r"s = (\d+): weights (?:\d+ \(([\d.]+)x\)|-)", sections.get("horizon", ""))
    if far:
        ratios = [(int(s_), float(r) if r else None) for s_, r in far]
        rows.append(("The weight-extrapolation horizon shrinks over training", "3x at step 300, 1.8x at 600, 1.3x at 1400",
                     ", ".join(f"{r}x from (0, {s_})" if r else f"none from (0, {s_})" for s_, r in ratios)
                     + " (farthest target within one SE of real RL)",
                     "shrinks, sooner" if ratios[0][1] and (ratios[-1][1] or 0) < ratios[0][1] else "does not shrink"))
    past = _table_rows(sections.get("beyond", ""))
    if past:
        cells = [(r[0], r[1], *map(float, re.findall(r"[-+]?\d+\.\d+", r[6]))) for r in past]
        best = max(cells, key=lambda c: c[2])
        rows.append(("Logits extrapolation past the final checkpoint beats it", "AIME24 0.4193 -> 0.4458; +4.2 points "
                     "on average over four benchmarks",
                     f"best of {len(cells)} tried: {best[2]:+.3f} ({best[3]:.3f}) from {best[0]} at alpha {best[1]}",
                     "not reproduced" if all(d <= 2 * se for _, _, d, se in cells) else "reproduced"))
    for run, claim, paper in (
            ("rlextra-20-20-lr1e-06", "RL-Extra 20,20 beats GRPO at equal real steps", "yes; the gain shrinks, "
             "+5.2 points at 200 real steps, +2.3 at 1,200"),
            ("rlextra-20-100-lr1e-06", "RL-Extra 20,100 beats GRPO at equal real steps", "reaches AIME24 >= 0.38 in "
             "180 real steps against 1,100 (6.1x)")):
        d = _diffs(curves, run, CHOSEN)
        rows.append((claim, paper, _show(d), _verdict(d)))
    ours = [("rlextra-20-20-lr1e-06", "grpo-lr2e-06", "RL-Extra 20,20 against GRPO at 2x the lr"),
            ("rlextra-20-100-lr1e-06", "grpo-lr6e-06", "RL-Extra 20,100 against GRPO at 6x the lr"),
            ("control-20-0-lr1e-06", CHOSEN, "The control 20,0 (the optimizer reset alone) against GRPO"),
            ("replay-20-20-lr1e-06", "rlextra-20-20-lr1e-06", "The paper's data order (replay) against the data going on (rlextra's default), 20,20"),
            ("replay-20-100-lr1e-06", "rlextra-20-100-lr1e-06", "The same, 20,100"),
            ("auto-20-100-lr1e-06", CHOSEN, "rlextra's adaptive jump (20,100) against GRPO"),
            ("auto-20-100-lr1e-06", "rlextra-20-100-lr1e-06", "rlextra's adaptive jump against the paper's 20,100"),
            ("auto-20-100-lr1e-06", "grpo-lr6e-06", "rlextra's adaptive jump against GRPO at 6x the lr")]
    grpo, fast = curves.get(CHOSEN, {}), curves.get("rlextra-20-100-lr1e-06", {})
    if grpo and fast:
        reach = [(v, first_reaching(fast, v), first_reaching(grpo, v)) for v in (0.5, grpo[max(grpo)]["acc"])]
        speedups = [g / r for _, r, g in reach if r and g]
        rows.append(("RL-Extra 20,100 needs fewer real steps to a level", "6.1x fewer (AIME24 >= 0.38), never 0.40",
                     "; ".join(f"to {v:.3f}: {r if r is not None else 'not reached'} against GRPO's {g}"
                               + (f" ({g / r:.2f}x)" if r and g else "") for v, r, g in reach)
                     + " (the second level is GRPO's final)",
                     "a smaller speed-up" if speedups and max(speedups) < 6.1 else "see the numbers"))
    for run, base, claim in ours:
        d = _diffs(curves, run, base)
        if d:
            paper = ("its scripts replay; no comparison reported" if run.startswith("replay-")
                     else "not run by the paper")
            rows.append((claim, paper, _show(d), _verdict(d)))
    lines = ["| claim | the paper | ours (held-out avg@4 differences: paired SE, at real steps) | reading |",
             "|---|---|---|---|"] + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def rl_extra_logs(curves: dict[str, dict[int, dict]]) -> dict[str, list[dict] | None]:
    """Each run's rl_extra.jsonl, read once (None when the run has no log here)."""
    out: dict[str, list[dict] | None] = {}
    for n in curves:
        log = WORK / "runs" / n / "rl_extra.jsonl"
        out[n] = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else None
    return out


def _table(header: list[str], curves: dict[str, dict[int, dict]], logs: dict[str, list[dict] | None],
           recorded: dict[str, list[str]], row: Callable[[str, dict, dict], str | None]) -> str:
    """A table with one row per log record of each run (``row`` returns None to skip one); a run whose
    log is gone keeps its rows on record, and ``recorded`` gains the rows computed now."""
    lines = list(header)
    for n, c in curves.items():
        if logs.get(n) is None:
            lines += recorded.get(n, [])
            continue
        rows = [x for x in (row(n, c, r) for r in logs[n]) if x is not None]
        if rows:
            recorded[n] = rows
        lines += rows
    return "\n".join(lines) + "\n" if len(lines) > len(header) else ""


def jumps_section(curves: dict[str, dict[int, dict]], logs: dict[str, list[dict] | None],
                  recorded: dict[str, list[str]]) -> str:
    """Each jump of each RL-Extra run: the checkpoint saved right after it (at the jump's real step)
    against the one 10 real steps before, paired; the difference also holds those 10 steps of training."""
    def row(n: str, c: dict, r: dict) -> str | None:
        s = r["real_step"]
        if not (s in c and s - 10 in c and r.get("n")):
            return None
        d, se = paired_difference(c[s]["n_correct"], c[s - 10]["n_correct"], K)
        return (f"| {n} | {s} | {r['effective_step']} | {r['jump_norm']:.3f} | {c[s - 10]['acc']:.3f} | "
                f"{c[s]['acc']:.3f} | {d:+.3f} ({se:.3f}) |")

    return _table(["| run | jump at real step | effective step after | ||jump|| | avg@4 10 steps before | right after | "
                   "difference (paired SE) |", "|---|---|---|---|---|---|---|"], curves, logs, recorded, row)


def auto_section(curves: dict[str, dict[int, dict]], logs: dict[str, list[dict] | None],
                 recorded: dict[str, list[str]]) -> str:
    """Adaptive RL-Extra's decision at each cycle end: the in-flight weight error of every candidate n
    (the monitor's backtest at that horizon), the threshold, the n taken, and the held-out accuracy of
    the checkpoint saved right after the decision."""
    def row(n: str, c: dict, r: dict) -> str | None:
        ev = r.get("auto")
        if not ev:
            return None
        errs = ", ".join(f"n={k}: " + ("-" if v is None else f"{v:.3f}") for k, v in ev["weight_error"].items())
        acc = f"{c[r['real_step']]['acc']:.3f}" if r["real_step"] in c else "-"
        return f"| {n} | {r['real_step']} | {errs} | {ev['threshold']:g} | {r['n']} | {acc} |"

    return _table(["| run | real step | in-flight weight error per candidate n | threshold | n taken | avg@4 at the step "
                   "(after the decision) |", "|---|---|---|---|---|---|"], curves, logs, recorded, row)


def _weights_row(label: str, path: Path, paper: str) -> str | None:
    d = _eval(path)
    if d is None:
        return None
    g = d["global"]
    return (f"| {label} | {d['n_params_analyzed']:,} | {g['mean_r2']:.3f} | {g['median_r2']:.3f} | "
            f"{g['frac_r2_above_0.7']:.1%} | {paper} |")


def analysis_section(name: str) -> str:
    """Section 3: the linearity measurements on the chosen GRPO run, each beside the paper's number."""
    a = WORK / "analysis" / name
    out = []
    rows = [r for r in (
        _weights_row("weights, full coverage, steps 0-150", a / "weights" / "weights.json",
                     "R^2 > 0.7 for most parameters, clustering near 0.9"),
        _weights_row("weights, the paper's filters (max - min > 1e-4, >= 4 distinct values; matrices only; every "
                     "entry, not its 0.1% sample)", a / "weights-paper" / "weights.json", "as above"),
        _weights_row("weights, first half (0-80)", a / "weights-first-half" / "weights.json", "-"),
        _weights_row("weights, second half (80-150)", a / "weights-second-half" / "weights.json", "-"),
    ) if r]
    if rows:
        out += ["| measured | entries | mean R^2 | median R^2 | R^2 > 0.7 | the paper (1.5B, 14 checkpoints, steps 0-1300) |",
                "|---|---|---|---|---|---|", *rows]
    paper = _eval(a / "weights-paper" / "weights.json")
    if paper and paper.get("filters"):
        kept = paper["n_params_analyzed"]
        total = kept + paper["filters"]["n_params_filtered"]
        out += ["", f"The paper's filters keep {kept:,} of {total:,} matrix entries ({kept / total:.2%}). Ours, as a "
                "reading: at lr 1e-6 an Adam step moves an entry by at most about the lr, so over 150 steps "
                "max - min > 1e-4 keeps only entries that moved the same way at most steps, the straightest ones by "
                "construction. Full coverage (first row) is the figure that describes the whole model."]
    o = _eval(a / "outputs" / "outputs.json")
    if o:
        f, lp, un = o["filter"], o["logprob"], o["logprob_unfiltered"]
        out += ["", f"Token log-probs ({o['n_probes']} responses sampled from step 0, teacher-forced through all "
                f"{len(o['steps'])} checkpoints; the paper's endpoint filter |lp_150 - lp_0| > {f['min_logprob_change']} "
                f"keeps {f['n_tokens_kept']} of {o['n_tokens']} tokens): mean R^2 {lp['mean_r2']:.3f}, median "
                f"{lp['median_r2']:.3f}, {lp['frac_r2_above_0.7']:.1%} above 0.7 (all tokens: mean {un['mean_r2']:.3f}, "
                f"{un['frac_r2_above_0.7']:.1%} above 0.7). The paper: R^2 around 0.9."]
    act = _eval(a / "activations" / "activations.json")
    if act:
        v = act["activation"]
        out += ["", f"Activations ({act['n_layers']} layers x {act['hidden_size']} dimensions at {act['n_tokens_used']} "
                f"response tokens): mean R^2 {v['mean_r2']:.3f}, median {v['median_r2']:.3f}, "
                f"{v['frac_r2_above_0.7']:.1%} above 0.7. The paper (v3): activations linear too."]
    bt = _eval(a / "backtest" / "backtest.json")
    if bt:
        out += ["", "The backtest (windows from step 0, `--pairs first`; weight error = ||W_pred - W_T|| / "
                "||W_s - W_T||, below 1 beats keeping the newest checkpoint), median per alpha:", "",
                "| method | " + " | ".join(f"alpha ~{x:g}" for x in ALPHA_BINS) + " | verdict |",
                "|---|" + "---|" * (len(ALPHA_BINS) + 1)]
        for m, rec in bt["recommendation"].items():
            cells = []
            for x in ALPHA_BINS:
                errs = sorted(r["weight_error"] for r in bt["rows"] if r["method"] == m and abs(r["alpha"] - x) <= 0.25 * x)
                cells.append(f"{errs[len(errs) // 2]:.3f} ({len(errs)})" if errs else "-")
            out.append(f"| {m} | " + " | ".join(cells) + f" | {rec['verdict']} |")
    w = a / "watch" / "linearity.jsonl"
    if w.exists():
        rws = [json.loads(x) for x in w.read_text().splitlines() if x.strip()]
        rws = [r for r in rws if "event" not in r]
        if rws:
            r = rws[-1]
            out += ["", f"In flight (`rlextra watch --once`, 0.1% sample, window of 8 checkpoints), at step {r['step']}: "
                    f"mean R^2 {r['mean_r2']:.3f}, R^2 > 0.7 {r['frac_r2_above_0.7']:.1%}."]
    return "\n".join(out) + "\n" if out else "Not measured yet (`analyze.sh " + name + "`).\n"


def analysis_numbers(name: str) -> dict:
    """The analysis figures RESULTS.md cites (the analysis folders themselves are not committed):
    global R^2 summaries, and held-out avg@4 of every horizon and past-the-end evaluation."""
    a = WORK / "analysis" / name
    out: dict = {}
    for key, path, field in (("weights", "weights/weights.json", "global"),
                             ("weights_paper_filters", "weights-paper/weights.json", "global"),
                             ("weights_first_half", "weights-first-half/weights.json", "global"),
                             ("weights_second_half", "weights-second-half/weights.json", "global"),
                             ("token_logprob", "outputs/outputs.json", "logprob"),
                             ("activations", "activations/activations.json", "activation")):
        d = _eval(a / path)
        if d:
            out[key] = {k: v for k, v in d[field].items() if k != "histogram"} | \
                {k: d[k] for k in ("n_params_analyzed", "filters", "filter", "n_tokens") if d.get(k) is not None}
    bt = _eval(a / "backtest" / "backtest.json")
    if bt:
        out["backtest_recommendation"] = bt["recommendation"]
    out["evaluations"] = {f.stem[len(name) + 1:]: round(json.loads(f.read_text())["metrics"][KEY], 6)
                          for f in sorted((WORK / "eval").glob(f"{name}-*-*.json"))
                          if f.stem.startswith((f"{name}-horizon", f"{name}-beyond"))}
    return out


def kept(record: dict, key: str, live: str, missing: str) -> str:
    """A section rendered now when its inputs exist (and recorded), else the one recorded when they did."""
    if live and live != missing:
        record.setdefault("sections", {})[key] = live
        return live
    return record.get("sections", {}).get(key, live)


def horizon_section(name: str, curve: dict[int, dict]) -> str:
    """From (0, s) to real checkpoints T: weight and logits extrapolation beside the real T."""
    lines = ["| from (0, s) | target T | alpha | real T | weights | logits | weights - real (SE) | logits - real (SE) |",
             "|---|---|---|---|---|---|---|---|"]
    best: dict[int, dict] = {}
    for s in (30, 60, 90, 120):
        for t in sorted(curve):
            wf = _eval(WORK / "eval" / f"{name}-horizon-weights-0-{s}-to-{t}.json")
            lf = _eval(WORK / "eval" / f"{name}-horizon-logits-0-{s}-to-{t}.json")
            real = _eval(WORK / "eval" / f"{name}-{t}.json")
            if real is None or (wf is None and lf is None):
                continue
            cells = []
            for e in (wf, lf):
                cells.append("-" if e is None else f"{e['metrics'][KEY]:.3f}")
            diffs = []
            for kind, e in (("weights", wf), ("logits", lf)):
                if e is None:
                    diffs.append("-")
                    continue
                d, se = _diff(e, real)
                diffs.append(f"{d:+.3f} ({se:.3f})")
                b = best.setdefault(s, {}).get(kind)
                if d >= -se and (b is None or t > b):
                    best[s][kind] = t  # the farthest target where extrapolation is within one SE of real RL
            lines.append(f"| (0, {s}) | {t} | {t / s:.2f} | {real['metrics'][KEY]:.3f} | " + " | ".join(cells) + " | "
                         + " | ".join(diffs) + " |")
    if len(lines) == 2:
        return "Not measured yet.\n"
    far = "; ".join(f"s = {s}: weights " + (f"{b['weights']} ({b['weights'] / s:.1f}x)" if "weights" in b else "-")
                    + ", logits " + (f"{b['logits']} ({b['logits'] / s:.1f}x)" if "logits" in b else "-")
                    for s, b in sorted(best.items()))
    return "\n".join(lines) + ("\n\nFarthest target at which extrapolation is not below real RL by more than one "
                               "standard error (ours, as a reading of the paper's 'matches continued RL'; its best "
                               "weight-extrapolation horizon shrinks from 3x the observed step at step 300 to 1.8x at 600 "
                               f"and 1.3x at 1400): {far}. Targets measured only up to 3x s and step 150.\n")


def beyond_section(name: str, last: int) -> str:
    """Past the end: (0, LAST) and (HALF, LAST) at alpha 1.25, 1.5, 2, against the final checkpoint."""
    final = _eval(WORK / "eval" / f"{name}-{last}.json")
    if final is None:
        return "Not measured yet.\n"
    half = (last // 2 + 5) // 10 * 10
    lines = [f"Final checkpoint (step {last}): {final['metrics'][KEY]:.3f}.", "",
             "| window | alpha | target step | weights | logits | weights - final (SE) | logits - final (SE) |",
             "|---|---|---|---|---|---|---|"]
    n = 0
    for b in (0, half):
        for alpha in ("1.25", "1.5", "2"):
            wf = _eval(WORK / "eval" / f"{name}-beyond-weights-{b}-{last}-alpha-{alpha}.json")
            lf = _eval(WORK / "eval" / f"{name}-beyond-logits-{b}-{last}-alpha-{alpha}.json")
            if wf is None and lf is None:
                continue
            n += 1
            acc = ["-" if e is None else f"{e['metrics'][KEY]:.3f}" for e in (wf, lf)]
            dif = ["-" if e is None else "{:+.3f} ({:.3f})".format(*_diff(e, final)) for e in (wf, lf)]
            target = b + float(alpha) * (last - b)
            lines.append(f"| ({b}, {last}) | {alpha} | {target:g} | " + " | ".join(acc) + " | " + " | ".join(dif) + " |")
    if not n:
        return "Not measured yet.\n"
    return "\n".join(lines) + ("\n\nThe paper (v3, its repository's figures): logits extrapolation past the final "
                               "checkpoint, AIME24 0.4193 -> 0.4458, +4.2 points on average over four benchmarks.\n")


SUPERSEDED = WORK / "superseded"  # the segments trained after the unintended optimizer reset, kept for the record
RESET_STEP = 120


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def reproduced(name: str) -> dict[str, bool]:
    """Whether the rerun's checkpoints 100-120 (trained before the reset, from the same checkpoint-90 with
    Adam's state) are byte-identical to the first run's. Computed while both exist, then kept in
    superseded/reproduction.json (the first run's weights are deleted afterwards: 540 MB each)."""
    path = SUPERSEDED / "reproduction.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    mine = known.setdefault(name, {})
    for old in sorted((SUPERSEDED / "runs" / name).glob("checkpoint-*")):
        new = WORK / "runs" / name / old.name / "model.safetensors"
        if old.name not in mine and (old / "model.safetensors").exists() and (new.parent / "trainer_state.json").exists():
            mine[old.name] = _sha256(old / "model.safetensors") == _sha256(new)
    if mine:
        path.write_text(json.dumps(known, indent=1) + "\n")
    return mine


def reset_section(curves: dict[str, dict[int, dict]], old: dict[str, dict[int, dict]], record: dict) -> str:
    """The first GRPO runs (``old``, their evaluations in superseded/) against their reruns from
    checkpoint-90: what one unintended Adam reset did. Reproduction and linearity figures computed from
    files since deleted come from ``record`` (which gains any computed now)."""
    if not old:
        return ""
    last = CONFIG["train"]["steps"]
    lines = [f"The first GRPO runs resumed their last segment (steps {RESET_STEP + 1}-{last}) without Adam's state: "
             "`train_and_eval.sh` kept the optimizer file in the checkpoint last in *text* order "
             "(checkpoint-90 sorts after checkpoint-120), deleted it from checkpoint-120, and the trainer resumed "
             "from there with fresh moments, silently. The script now sorts by step (`sort -V`). Each GRPO run was "
             "moved back to checkpoint-90 (which held Adam's state) and trained again. Checkpoints 100-120 came "
             "before the reset and the rerun reproduces them byte for byte (below), so their evaluations stand; "
             "the first runs' checkpoints and evaluations past 120 are kept in `work/superseded/` and are not "
             f"used elsewhere in this report. RL-Extra 20,20 resumed at step {RESET_STEP} too, but it clears "
             f"Adam's state at every jump and jumps at step {RESET_STEP}, so its saved state there was already "
             "empty: it was not rerun.", "",
             "Reproduction: checkpoints 100-120 of the rerun against the first run (same checkpoint, data order "
             "and seeds; byte-identical model.safetensors or not):"]
    for name in sorted(old):
        rep = reproduced(name) or record.get("reproduction", {}).get(name, {})
        if rep:
            record.setdefault("reproduction", {})[name] = rep
            lines.append(f"- {name}: " + ", ".join(f"{k.split('-')[-1]} {'identical' if v else 'DIFFERENT'}"
                                                    for k, v in sorted(rep.items(), key=lambda kv: int(kv[0].split('-')[-1]))))
    lines += ["", f"After step {RESET_STEP}, the first run (one Adam reset at {RESET_STEP}) beside the rerun (no reset), "
              "held-out avg@4; the difference is paired over the held-out problems (first run - rerun):", "",
              "| run | step | with the reset | rerun | difference (SE) |", "|---|---|---|---|---|"]
    for name, c in sorted(old.items()):
        for s in sorted(c):
            if s <= RESET_STEP:
                continue
            new = curves.get(name, {}).get(s)
            if new is None:
                lines.append(f"| {name} | {s} | {c[s]['acc']:.3f} | - | - |")
                continue
            d, se = paired_difference(c[s]["n_correct"], new["n_correct"], K)
            lines.append(f"| {name} | {s} | {c[s]['acc']:.3f} | {new['acc']:.3f} | {d:+.3f} ({se:.3f}) |")
    lin = []
    for label, sub in (("steps 0-150", "weights"), ("second half (80-150)", "weights-second-half")):
        before = _eval(SUPERSEDED / "analysis" / CHOSEN / sub / "weights.json")
        after = _eval(WORK / "analysis" / CHOSEN / sub / "weights.json")
        if before and after:
            lin.append(f"{label}: {before['global']['frac_r2_above_0.7']:.1%} with the reset, "
                       f"{after['global']['frac_r2_above_0.7']:.1%} without (mean R^2 {before['global']['mean_r2']:.3f} "
                       f"vs {after['global']['mean_r2']:.3f})")
    if lin:
        record["reset_linearity"] = lin
    lin = lin or record.get("reset_linearity", [])
    if lin:
        diffs = [paired_difference(c["n_correct"], curves[CHOSEN][st]["n_correct"], K)
                 for st, c in old.get(CHOSEN, {}).items() if st > RESET_STEP and st in curves.get(CHOSEN, {})]
        acc = ("within two standard errors at every checkpoint after it" if all(abs(d) < 2 * se for d, se in diffs)
               else "beyond two standard errors at some checkpoint after it")
        lines += ["", f"The weights of {CHOSEN}, full coverage, share of entries with R^2 > 0.7: " + "; ".join(lin) +
                  f". One reset of Adam's moments, {last - RESET_STEP} steps before the end, made the weights' "
                  f"trajectories less linear; the held-out accuracy of the two runs stayed {acc}."]
    return "\n".join(lines) + "\n"


PLANNED = {  # queue.sh's runs, in its order
    "rlextra-20-20-lr1e-06": "the paper's RL-Extra at 20,20 (two-point, optimizer reset)",
    "rlextra-20-100-lr1e-06": "the paper's 6.1x setting, 20,100",
    "replay-20-20-lr1e-06": "the paper's data order (`--rl-extra-replay`: every cycle trains on GRPO's first 20 "
                            "batches again) at 20,20",
    "auto-20-100-lr1e-06": "rlextra's adaptive jump (`--rl-extra-auto`) at 20,100",
    "grpo-lr2e-06": "GRPO at the lr raised by 20,20's factor (x2: the baseline the paper never ran)",
    "grpo-lr6e-06": "GRPO at the lr raised by 20,100's factor (x6)",
    "control-20-0-lr1e-06": "the control 20,0 (the optimizer reset alone)",
    "replay-20-100-lr1e-06": "the paper's data order at 20,100",
    "grpo-lr1e-06-seed1": "lane C, a second seed where the budget allows: GRPO",
    "rlextra-20-20-lr1e-06-seed1": "RL-Extra 20,20 under that seed",
}


def planned_paragraph(curves: dict[str, dict[int, dict]], total: int) -> str:
    """Which of queue.sh's runs are complete, which stopped short (and where), which have not run."""
    done = [n for n in PLANNED if total in curves.get(n, {})]
    short = [f"{n} (to real step {max(curves[n])})" for n in PLANNED if curves.get(n) and total not in curves[n]]
    todo = [PLANNED[n] for n in PLANNED if not curves.get(n)]
    out = [f"The runs of `queue.sh` (one lane per core): {'; '.join(PLANNED.values())}."]
    out.append(f"Evaluated to step {total}: {', '.join(done) or 'none'}.")
    if short:
        out.append("Evaluated only part of the way (the runs stop with the machine and are reported as far as they "
                   "got): " + ", ".join(short) + ".")
    if todo:
        out.append("Not run yet: " + "; ".join(todo) + ".")
    return " ".join(out) + "\n"


def retrained_section(again: dict[str, dict[int, bool]], rewards_again: dict[str, list[int]],
                      compared: dict[str, int]) -> str:
    """Runs trained again from step 0 after the work folder was lost, checked against the record."""
    if not again and not rewards_again:
        return ""
    lines = ["", "### Runs trained again from step 0", "",
             "On 2026-12-05 the work folder of every run (checkpoints, evaluations, logs) was no longer on the "
             "machine; every number above from earlier days comes from the committed `curves.json` and "
             "`record.json`. Runs that had to go on were trained again from step 0 with the same command, "
             "and their checkpoints evaluated again where the record already has them. Same per-problem "
             "counts at every such checkpoint, and the same training rewards, mean the run was reproduced:", ""]
    for n in sorted(set(again) | set(rewards_again)):
        ev = again.get(n, {})
        same = [s for s, ok in ev.items() if ok]
        diff = [s for s, ok in ev.items() if not ok]
        bad = rewards_again.get(n, [])
        lines.append(f"- {n}: " + (f"evaluation{'s' if len(same) > 1 else ''} at step{'s' if len(same) > 1 else ''} {', '.join(map(str, same))} "
                                    "identical" if same
                                    else "no checkpoint on record evaluated again yet")
                     + (f"; DIFFERENT at {', '.join(map(str, diff))}" if diff else "")
                     + (f"; training rewards identical at the {compared[n]} logged steps on record so far" if not bad
                        else f"; training rewards DIFFERENT at steps {', '.join(map(str, bad))}"))
    return "\n".join(lines) + "\n"


def write() -> None:
    record = load_record()
    live = load_curves()
    recorded = _as_curves(record["runs"])
    ref = record.get("reference", {})  # what the record held before the work folder was lost
    ref_curves = {n: {int(st): {"n_correct": c} for st, c in steps.items()} for n, steps in ref.get("runs", {}).items()}
    curves, again = merged(recorded, live), agreement(ref_curves, live)
    old = merged(_as_curves(record["superseded_after_reset"]), load_curves(SUPERSEDED))
    logs = rl_extra_logs(curves)
    jumps = jumps_section(curves, logs, record.setdefault("jumps", {}))
    auto = auto_section(curves, logs, record.setdefault("auto", {}))
    replay = replay_section(curves)
    seeds = seeds_section(curves)
    total = CONFIG["train"]["steps"]
    cands = {f"grpo-lr{lr:.0e}": lr for lr in CONFIG["train"]["candidate_lrs"]}
    verdicts = {name: criterion(curves.get(name, {}), total) for name in cands}
    steps = sorted({s for c in curves.values() for s in c})
    names = list(curves)
    rows = "\n".join(f"| {s} | " + " | ".join(_fmt(curves[n].get(s, {}).get("acc")) for n in names) + " |"
                     for s in steps)
    rewards_on_record = {n: {int(s): r for s, r in rr.items()} for n, rr in record["train_reward"].items()}
    live_rewards = {n: {r["step"]: r.get("mean_reward") for r in train_rows(n)} for n in names}
    reward_rows = {n: rewards_on_record.get(n, {}) | live_rewards[n] for n in names}
    ref_rewards = {n: {int(st): r for st, r in rr.items()} for n, rr in ref.get("train_reward", {}).items()}
    rewards_again = {n: [s for s, r in rr.items() if s in ref_rewards.get(n, {}) and ref_rewards[n][s] != r]
                     for n, rr in live_rewards.items() if any(s in ref_rewards.get(n, {}) for s in rr)}
    rewards_compared = {n: sum(1 for s in rr if s and s in ref_rewards.get(n, {})) for n, rr in live_rewards.items()}
    log = WORK / "commands.log"
    first = log.read_text().partition("\n")[0].strip() if log.exists() else ""
    if first:  # this log's hours, kept under its first line (each log counted once, a lost one kept)
        h = log_hours(log)
        record.setdefault("hours_by_log", {})[first] = {
            "total": h["total"], "runs": {n: h["runs"].get(n, [0.0, 0.0]) for n in names}}
    hour_logs = list(record.get("hours_by_log", {}).values())
    hours = {n: tuple(sum(x) for x in zip(record.get("run_hours", {}).get(n, (0.0, 0.0)),
                                          *[lg["runs"].get(n, (0.0, 0.0)) for lg in hour_logs])) for n in names}
    hours_total = {k: record.get("hours", {}).get(k, 0.0) + sum(lg["total"].get(k, 0.0) for lg in hour_logs)
                   for k in ("training", "evaluation", "analysis")}
    vlines = []
    for name, v in verdicts.items():
        if v.get("evaluated_to") is None:
            vlines.append(f"| {name} | not evaluated yet | | | | |")
            continue
        flats = ", ".join(f"{f['from']}-{f['to']} ({f['gain']:+.3f} vs SE {f['se']:.3f})"
                          for f in v.get("flat_stretches", [])) or "none"
        state = ("**met**" if v.get("met") else "**missed**") if v["complete"] else f"open (to step {v['evaluated_to']})"
        train_h, eval_h = hours.get(name, (0.0, 0.0))
        vlines.append(f"| {name} | {_fmt(v.get('rise'))} | {_fmt(v.get('second_half'))} | {flats} | {state} | "
                      f"{train_h:.2f} + {eval_h:.2f} |")
    plot(curves, HERE / "accuracy_vs_step.png")
    analysis_now = analysis_numbers(CHOSEN) if (WORK / "analysis" / CHOSEN).is_dir() else record["analysis"]
    (HERE / "curves.json").write_text(json.dumps({
        "metric": KEY, "n_test": CONFIG["task"]["n_test"],
        "runs": {n: {str(s): {"acc": round(v["acc"], 6), "n_correct": v["n_correct"]} for s, v in c.items()}
                 for n, c in curves.items()},
        "train_reward": {n: {str(s): r for s, r in rr.items()} for n, rr in reward_rows.items()},
        "selection": verdicts, "analysis": analysis_now,
        "superseded_after_reset": {n: {str(s): {"acc": round(v["acc"], 6), "n_correct": v["n_correct"]}
                                       for s, v in c.items() if s > RESET_STEP}
                                   for n, c in old.items()}}, separators=(",", ":")) + "\n")
    t = CONFIG["task"]
    lanes = [n for n in PLANNED if not seed_of(n)]  # queue.sh's lanes A and B
    status = ("complete: every run of queue.sh's lanes A and B evaluated to step " + str(total)
              if all(total in curves.get(n, {}) for n in lanes) else "in progress")
    lane_d = ("grpo-lr1.2e-05", "lrauto-lr1e-06")  # the learning-rate question (bench/RESULTS.md)
    if all(total in curves.get(n, {}) for n in lane_d):
        status += "; lane D (GRPO at 12x the lr, and --lr-auto) too"
    text = f"""# The paper's regime on a real model: a long, slow SmolLM2 run (CPU)

Status ({time.strftime('%Y-%m-%d')}): **{status}.** This file is rewritten by
`experiments/smollm2/long/report.py` from the evaluations that exist; the runs are resumable
background jobs (`train_and_eval.sh`), run in parts on a 2-core CPU (x86_64, 1 torch thread per job,
two jobs sharing the cores).

## Summary: the paper's claims beside ours

One seed (seed 0) for every comparison; the standard errors count the evaluation's noise over the
held-out problems only, not the training seed's (see "A second training seed" in section 2 for what a
second seed adds where it ran). "Reading" is ours: a difference beyond two standard errors counts.

""" + claims_section(curves, analysis_now, record.get("sections", {})) + f"""
## Setup

- Model: SmolLM2-135M-Instruct (`rlextra convert-gguf --smollm2`: the Q4_1 GGUF dequantized to
  float32).
- Task (`config.json`, problems written once with seed {CONFIG['seed']}): chat prompts "What is a + b?" with
  a, b in {t['sum_range']} and "What is a * b?" with a, b in {t['product_ranges'][0]}, plus
  "{t['instruction']}"; {t['n_problems']} distinct problems, {t['n_problems'] - t['n_test']} for training and
  {t['n_test']} held out; graded by math-verify under rlextra's operation rule.
- GRPO (TRL 1.16): {CONFIG['train']['prompts_per_step']} prompts x {CONFIG['train']['num_generations']} samples
  per step, temperature 1.0, constant lr, no KL, no lr warm-up, completions up to
  {CONFIG['train']['max_completion_length']} tokens, checkpoint every {CONFIG['train']['save_every']} steps (Adam's
  state kept only in the newest), trained in segments of 30 steps (each a resume of the last, with
  Adam's state: see "An unintended optimizer reset" below for the runs where that failed).
- Evaluation: every checkpoint, {t['n_test']} held-out problems x {K} samples, temperature
  {CONFIG['eval']['temperature']}, top-p {CONFIG['eval']['top_p']}, up to {CONFIG['eval']['max_new_tokens']} new tokens,
  rlextra's engine, sampling seed {CONFIG['eval']['seed']}: every model through one decoder and seed.
- The batch: 32 rollouts per step is what this CPU allows (about 35-50 s per step). It is 4x below
  the tiny-model demo's batch at which jumps lost or tied, and far below the paper's (its
  DeepSeek-R1-Distill runs use 128 prompts x 8 or more). On the v3 account (gradient noise sets
  linearity), this is the regime least favourable to extrapolation; a result here says little about
  the paper's 1.5B setting at its batch.

## 1. Choosing the learning rate on GRPO curves only

Candidates: the mixed task at lr {', '.join(f'{lr:g}' for lr in CONFIG['train']['candidate_lrs'])} (the paper's lr is
1e-6), {total} steps each. The criterion (see the docstring of `report.py`; "flat within noise" is
ours: gain below one paired standard error) is checked on the GRPO curves alone; no linearity or
extrapolation number was computed before the choice.

| candidate | rise, step 0 to last | rise over the second half | flat 30-step stretches | criterion | CPU hours, training + evaluation |
|---|---|---|---|---|---|
""" + "\n".join(vlines) + f"""

![held-out accuracy](accuracy_vs_step.png)

Held-out {KEY} per evaluated checkpoint:

| step | """ + " | ".join(names) + """ |
|""" + "---|" * (len(names) + 1) + "\n" + rows + """

Mean training reward (T=1.0, per logged step, averaged over each 10-step interval):

| step | """ + " | ".join(names) + """ |
|""" + "---|" * (len(names) + 1) + "\n" + "\n".join(
        f"| {s} | " + " | ".join(_fmt(reward_rows[n].get(s)) for n in names) + " |"
        for s in sorted({s for rr in reward_rows.values() for s in rr if s})) + """

## 2. At equal real steps

""" + equal_steps_section(curves) + ("""
With and without the paper's data order (its published scripts restart the data sampler with the same
seed at every cycle, so each cycle trains on the same first m batches of prompts; `--rl-extra-replay`
reproduces that):

""" + replay if replay else "") + ("""
A second training seed (`--seed 1`: another data order and other rollouts; the same held-out problems,
decoder and evaluation seed), where the budget allowed:

""" + seeds if seeds else "") + ("""
Jump by jump (each checkpoint at a jump's real step is saved after the jump):

""" + jumps if jumps else "") + ("""
rlextra's adaptive jump (`--rl-extra-auto`, ours), decision by decision: a candidate n is taken when the
in-flight weight error at its horizon (the monitor's backtest over its last rows, below 1 beats
keeping the newest weights) is below the threshold; the largest such n wins, none means no jump:

""" + auto if auto else "") + """
""" + planned_paragraph(curves, total) + """

""" + ("### An unintended optimizer reset at step " + str(RESET_STEP) + ", and the rerun\n\n" + reset_section(curves, old, record)
       if old else "") + kept(record, "retrained", retrained_section(again, rewards_again, rewards_compared), "") + """
## 3. Linearity of the chosen GRPO run (""" + CHOSEN + """), beside the paper

""" + kept(record, "analysis", analysis_section(CHOSEN), f"Not measured yet (`analyze.sh {CHOSEN}`).\n") + """
### The horizon over training

Two-point extrapolation from (0, s) to real checkpoints T, of the weights (`rlextra extrapolate`) and
of the logits (`rlextra eval --extrapolate-from`), each evaluated like every checkpoint:

""" + kept(record, "horizon", horizon_section(CHOSEN, curves.get(CHOSEN, {})), "Not measured yet.\n") + """
## 4. Past the end of the run (the paper's decode-time claim)

""" + kept(record, "beyond", beyond_section(CHOSEN, total), "Not measured yet.\n") + """
## Commands

CPU hours so far (every `work/commands.log`, kept in `record.json`; through """ + record.get("hours_through", "-") + """ as totals): """ + ", ".join(f"{k} {v:.1f}" for k, v in hours_total.items()) + """
(one torch thread per job; two jobs shared the two cores, so these are also wall hours per lane). One
exception: the training segment of rlextra-20-20-lr1e-06 from step 30 to 60 (started 2026-11-29 07:28)
was paused (SIGSTOP) for about 75 minutes while HumanEval ran on its core; its wall time overstates
its CPU time by that much. On 2026-11-29 between 09:56 and 11:00 both lanes were paused (SIGSTOP) for
about 28 minutes in all, while checkpoint benchmarks (bench/RESULTS.md) ran on a quiet machine: the
segments running then (grpo-lr6e-06 to step 30 and its evaluations, rlextra-20-20-lr1e-06 from step 90
to 120) overstate their CPU time by up to that much. On 2026-11-29 from 13:28:49 to 13:30:49 both lanes
were paused again (2 minutes, an extrapolation benchmark): grpo-lr1e-06 from step 120 to 150 and
rlextra-20-100-lr1e-06 from step 90 to 120. The training hours include the first runs' superseded
segments (steps 91-150 of the GRPO runs, see "An unintended optimizer reset"). On 2026-12-05
grpo-lr2e-06 and grpo-lr6e-06 were trained again from step 0 (`EVAL_FROM=120`: evaluated from step 120,
the earlier checkpoints' evaluations being on record), then the control and the adaptive run started
in their lanes (`STEPS=100 SEGMENT=20`, evaluated from steps 30 and 20: before those steps both are
GRPO itself); test loops (distributed test workers, about 25 minutes) and one full test suite ran
beside the lanes during the first hour, so those segments' wall hours overstate their CPU time. From
19:55 that day the control and the adaptive run resumed from step 130 to 150 (`EVAL_FROM=140`); then
replay-20-100-lr1e-06 ran from step 0 (every checkpoint evaluated) and replay-20-20-lr1e-06 was trained
again from step 0 (`EVAL_FROM=60`: evaluated from step 60, where its record ended, to check the
reproduction); then the second seed to step 50, what the machine's remaining time allowed
(`queue.sh C` split over the two lanes, `STEPS=50 SEGMENT=50 EVAL_EVERY=50 EVAL_FROM=50`). Both lanes were paused (SIGSTOP) for about 6 minutes in all between
20:03 and 20:23, and from 20:49:21 to 20:50:41, while checkpoint benchmarks ran (bench/RESULTS.md);
the segments running then overstate their CPU time by up to that much. On 2026-12-06 lane D ran
(`queue.sh D 1e-6`: GRPO at 12x the lr, grpo-lr1.2e-05, stopped at step 90 and resumed to 150 the same
day; then `--lr-auto` from the base lr, lrauto-lr1e-06, started beside it in the other lane), with
tiny-model sweeps, tests and benchmarks (vLLM, verl shards) sharing the machine: their wall hours
overstate their CPU time.

`bash experiments/smollm2/long/train_and_eval.sh NAME LR [train options]` (after
`bash experiments/smollm2/run.sh`'s setup and `rlextra convert-gguf --smollm2 -o
experiments/smollm2/work/model`); each line of `work/commands.log` records one command and its wall
time.
"""
    (HERE / "RESULTS.md").write_text(text)
    keep = {k: v for k, v in record.items() if k not in ("runs", "superseded_after_reset", "train_reward", "analysis")}
    RECORD.write_text(json.dumps(keep, indent=1) + "\n")


if __name__ == "__main__":
    write()
