"""Tables and plots of bench_batch_sweep.py's runs: does the payoff of a jump grow with the batch?

Reads the sweep's JSON (every run's curve, jumps and monitor rows) and prints the markdown of the
RESULTS.md section; writes the plots beside the JSON:

  <out>.accuracy.png   held-out avg@4 against real steps, one panel per batch size
  <out>.vs_batch.png   against rollouts per step: the monitor's window R^2 and in-flight weight
                       error on the GRPO runs, and each variant's gain over GRPO at the last step

Standard errors of a difference are paired over the 200 held-out problems (each problem's avg@4 in
both runs) where the run stored per-problem counts, else the binomial bound sqrt(2 * 0.25 / 800).

Usage: python bench/report_batch_sweep.py [--json bench/results/batch_sweep.json] [--select-seed 100]
       [--compact] [--monitor-plot KEY]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANT_ORDER = ["grpo", "grpo-lr2", "grpo-lr6", "paper", "auto", "auto-safe"]
LABELS = {"grpo": "GRPO", "grpo-lr2": "GRPO, lr x2", "grpo-lr6": "GRPO, lr x6", "paper": "the paper's RL-Extra {m},{n}",
          "auto": "auto (rlextra's), M,N = {m},{n}", "auto-safe": "auto + safe mode, M,N = {m},{n}"}


def label(cell: dict) -> str:
    m, n = cell.get("cycle") or (20, 20)
    return LABELS[cell["variant"]].format(m=m, n=n)


def paired_se(a: dict, b: dict) -> float:
    """Standard error of acc(a) - acc(b) at one checkpoint, paired over problems."""
    from rlextra.metrics import paired_difference

    if "n_correct" in a and "n_correct" in b:
        return paired_difference(a["n_correct"], b["n_correct"], 4)[1]
    return math.sqrt(2 * 0.25 / 800)


def _in_se(gap: float, se: float) -> float:
    """A gap in standard errors (identical runs: 0)."""
    return gap / se if se > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))


def first_reach(curve: list[dict], target: float) -> dict | None:
    return next((r for r in curve if r["acc"] >= target), None)


def steps_to(curve, target):
    r = first_reach(curve, target)
    return (r["step"], r["seconds"]) if r else (None, None)


def monitor_means(run: dict) -> dict:
    rows = [r for r in run["monitor"] if "event" not in r and r.get("mean_r2") is not None]
    if not rows:
        return {}
    err = [e["weight_error"] for r in rows for e in r["backtest_ladder"].get("two-point", [])
           if e["alpha"] == 2.0 and e["weight_error"] is not None]
    last = rows[-1]
    train = run["curve"][-1]["seconds"]
    return {"mean_r2": sum(r["mean_r2"] for r in rows) / len(rows),
            "frac_r2_above_0.7": sum(r["frac_r2_above_0.7"] for r in rows) / len(rows),
            "weight_error_alpha2": sum(err) / len(err) if err else None,
            "overhead": last.get("monitor_seconds", 0.0) / train if train and "monitor_seconds" in last else None}


def analyse(state: dict, select_seed: int) -> dict:
    runs = state["runs"]
    table = defaultdict(dict)  # (batch, seed) -> variant -> run
    selection = []
    for key, run in runs.items():
        batch = "x".join(str(x) for x in run["batch"])
        if run["seed"] == select_seed:
            selection.append((key, run))
            continue
        table[(batch, run["seed"])][run["variant"]] = run
    out = {"cells": [], "selection": []}
    sel_grpo = {("x".join(map(str, r["batch"]))): r for k, r in selection if r["variant"] == "grpo"}
    for key, run in sorted(selection):
        grpo = sel_grpo.get("x".join(map(str, run["batch"])))
        if grpo is None or run["variant"] == "grpo":
            continue
        accs = [r["acc"] for r in run["curve"][1:]]
        out["selection"].append({"key": key, "batch": "x".join(map(str, run["batch"])),
                                 "threshold": run.get("threshold"), "mean_acc": sum(accs) / len(accs),
                                 "grpo_mean_acc": sum(r["acc"] for r in grpo["curve"][1:]) / len(accs),
                                 "final": run["curve"][-1]["acc"], "grpo_final": grpo["curve"][-1]["acc"],
                                 "jumps": [j["n"] for j in run["jumps"]]})
    for (batch, seed), variants in sorted(table.items(), key=lambda kv: (int(kv[0][0].split("x")[0]), kv[0][1])):
        grpo = variants.get("grpo")
        if grpo is None:
            continue
        g_curve = grpo["curve"]
        target = g_curve[-1]["acc"]
        at40 = next((r["acc"] for r in g_curve if r["step"] == 40), None)
        g_steps, g_secs = steps_to(g_curve, target)
        g40 = steps_to(g_curve, at40)[0] if at40 is not None else None
        for name in VARIANT_ORDER:
            run = variants.get(name)
            if run is None:
                continue
            curve = run["curve"]
            by_step = {r["step"]: r for r in curve}
            gaps = [(r["step"], round(by_step[r["step"]]["acc"] - r["acc"], 4),
                     round(paired_se(by_step[r["step"]], r), 4)) for r in g_curve if r["step"] in by_step and r["step"]]
            s, secs = steps_to(curve, target)
            s40 = steps_to(curve, at40)[0] if at40 is not None else None
            out["cells"].append({
                "batch": batch, "seed": seed, "variant": name, "cycle": run.get("cycle"), "lr": run["lr"],
                "steps": run["steps"],
                "curve": [(r["step"], r["acc"]) for r in curve], "final": curve[-1]["acc"], "grpo_final": target,
                "gap_final": gaps[-1][1] if gaps else None, "se_final": gaps[-1][2] if gaps else None,
                "worst_gap_in_se": min((_in_se(g, se) for _, g, se in gaps), default=None),
                "steps_to_grpo_final": s, "seconds_to_grpo_final": secs, "grpo_steps": g_steps, "grpo_seconds": g_secs,
                "grpo_acc_at_40": at40, "steps_to_grpo_at_40": s40, "grpo_steps_to_its_40": g40,
                "jumps": [{"step": j["real_step"], "n": j["n"], "decision": j.get("decision")} for j in run["jumps"]],
                "monitor": monitor_means(run)})
    return out


def plots(state: dict, res: dict, base: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = res["cells"]
    batches = sorted({c["batch"] for c in cells}, key=lambda b: int(b.split("x")[0]))
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    colors = dict(zip(VARIANT_ORDER, ["#222222", "#999933", "#aa7733", "#cc3311", "#4477aa", "#66ccee"]))
    for ax, batch in zip(axes[0], batches):
        for c in cells:
            if c["batch"] != batch:
                continue
            xs, ys = zip(*c["curve"])
            ax.plot(xs, ys, "o-", ms=2.5, lw=1, color=colors[c["variant"]], alpha=0.85,
                    label=f"{label(c)} (seed {c['seed']})")
        ax.set_title(f"{batch} rollouts per step")
        ax.set_xlabel("real optimizer steps")
        ax.set_ylabel("held-out avg@4")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(base.with_suffix(".accuracy.png"), dpi=110)
    plt.close(fig)

    def per_batch(variant, fn):
        xs, ys = [], []
        for batch in batches:
            vals = [fn(c) for c in cells if c["batch"] == batch and c["variant"] == variant and fn(c) is not None]
            if vals:
                a, b = (int(x) for x in batch.split("x"))
                xs.append(a * b)
                ys.append(sum(vals) / len(vals))
        return xs, ys

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, text in (("mean_r2", "window mean R²"), ("frac_r2_above_0.7", "fraction R² > 0.7")):
        axes[0].plot(*per_batch("grpo", lambda c: c["monitor"].get(key)), "o-", label=text)
    axes[0].set_title("GRPO runs: the monitor's window R²")
    axes[1].plot(*per_batch("grpo", lambda c: c["monitor"].get("weight_error_alpha2")), "o-", color="#cc3311")
    axes[1].axhline(1, ls="--", lw=1, color="grey")
    axes[1].set_title("GRPO runs: in-flight weight error, two-point, alpha 2")
    for v in VARIANT_ORDER[1:]:
        xs, ys = per_batch(v, lambda c: c["gap_final"])
        if xs:
            axes[2].plot(xs, ys, "o-", color=colors[v], label=LABELS[v].format(m=20, n=20))
    axes[2].axhline(0, lw=1, color="grey")
    axes[2].set_title("held-out avg@4 minus GRPO's at the last real step")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rollouts per step (prompts x samples)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    fig.savefig(base.with_suffix(".vs_batch.png"), dpi=110)
    plt.close(fig)


def markdown(res: dict, json_path: Path) -> str:
    def f(x, fmt="%.3f"):
        return "-" if x is None else fmt % x

    long = any(c["steps"] > 100 for c in res["cells"])
    lines = [f"| rollouts per step | seed | run | lr | avg@4 at real steps {'40 / 80 / 120 / 160 / 200' if long else '20 / 40 / 60 / 80 / 100'} | minus GRPO at the "
             "last step (paired SE) | worst gap / SE | steps to GRPO's last (GRPO's) | steps to GRPO's step-40 "
             "accuracy | jumps taken (n per cycle) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        accs = dict(c["curve"])
        marks = (20, 40, 60, 80, 100) if c["steps"] <= 100 else (40, 80, 120, 160, 200)
        pts = " / ".join(f(accs.get(s)) for s in marks if s <= c["steps"])
        jumps = ", ".join(str(j["n"]) + ("r" if j["decision"] == "rolled back" else "") for j in c["jumps"]) or "-"
        lines.append(
            f"| {c['batch']} | {c['seed']} | {label(c)} | {c['lr']:g} | {pts} | "
            f"{'' if c['variant'] == 'grpo' else f(c['gap_final'], '%+.3f') + ' (' + f(c['se_final']) + ')'} | "
            f"{'' if c['variant'] == 'grpo' else f(c['worst_gap_in_se'], '%+.1f')} | "
            f"{c['steps_to_grpo_final'] if c['steps_to_grpo_final'] is not None else 'not reached'} "
            f"({c['grpo_steps']}) | {c['steps_to_grpo_at_40'] if c['steps_to_grpo_at_40'] is not None else 'not reached'}"
            f" ({c['grpo_steps_to_its_40']}) | {jumps if c['variant'] != 'grpo' else '-'} |")
    mon = ["| rollouts per step | seed | window mean R² | R² > 0.7 | in-flight weight error (two-point, alpha 2) | "
           "monitor's time / training time |", "|---|---|---|---|---|---|"]
    for c in res["cells"]:
        if c["variant"] == "grpo" and c["monitor"]:
            m = c["monitor"]
            mon.append(f"| {c['batch']} | {c['seed']} | {f(m['mean_r2'])} | {f(m['frac_r2_above_0.7'])} | "
                       f"{f(m['weight_error_alpha2'])} | {f(m['overhead'] and 100 * m['overhead'], '%.2f%%')} |")
    sel = ["| run | threshold | mean avg@4 over checkpoints 10..100 (GRPO's) | last (GRPO's) | jumps taken |",
           "|---|---|---|---|---|"]
    for s in res["selection"]:
        sel.append(f"| {s['key']} | {f(s['threshold'], '%g')} | {f(s['mean_acc'])} ({f(s['grpo_mean_acc'])}) | "
                   f"{f(s['final'])} ({f(s['grpo_final'])}) | {', '.join(map(str, s['jumps'])) or '-'} |")
    by_t = defaultdict(dict)
    for x in res["selection"]:
        by_t[x["threshold"]][x["batch"]] = x["mean_acc"] - x["grpo_mean_acc"]
    batches = sorted({x["batch"] for x in res["selection"]}, key=lambda b: int(b.split("x")[0]))
    worst = [f"| threshold | {' | '.join('gain at ' + b for b in batches)} | worst gain |",
             "|---|" + "---|" * (len(batches) + 1)]
    for t in sorted(by_t):
        gains = [by_t[t].get(b) for b in batches]
        worst.append(f"| {t:g} | {' | '.join(f(g, '%+.3f') for g in gains)} | "
                     f"{f(min(gains), '%+.3f') if None not in gains else '-'} |")
    return "\n".join(["Selection seed:", "", *sel, "", *worst, "", "Reported seeds:", "", *lines, "",
                      "The monitor on the GRPO runs (means over the run's rows):", "", *mon])


def _round(x, digits: int = 4):
    return None if x is None else round(x, digits)


def compact(state: dict) -> dict:
    """The committed form: monitor rows keep the figures the tables and plots read (two-point ladder),
    rounded to 4 decimals."""
    for run in state["runs"].values():
        rows = []
        for r in run["monitor"]:
            if "event" in r:
                rows.append(r)
                continue
            rows.append({"step": r["step"], "window_steps": r["window_steps"], "segment": r.get("segment"),
                         "mean_r2": _round(r["mean_r2"]), "frac_r2_above_0.7": _round(r["frac_r2_above_0.7"]),
                         "backtest": {m: {"alpha": e["alpha"], "weight_error": _round(e["weight_error"])}
                                      for m, e in r["backtest"].items()},
                         "monitor_seconds": r.get("monitor_seconds"),
                         "backtest_ladder": {"two-point": [{"alpha": e["alpha"], "weight_error": _round(e["weight_error"])}
                                                           for e in r["backtest_ladder"].get("two-point", [])]}})
        run["monitor"] = rows
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "batch_sweep.json")
    ap.add_argument("--select-seed", type=int, default=100)
    ap.add_argument("--compact", action="store_true", help="rewrite the JSON in its committed, compact form")
    ap.add_argument("--monitor-plot", metavar="KEY", help="also plot this run's monitor rows to <json>.monitor.png")
    a = ap.parse_args()
    state = json.loads(a.json.read_text())
    if a.compact:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(compact(state), separators=(",", ":")) + "\n")
        tmp.replace(a.json)
    res = analyse(state, a.select_seed)
    plots(state, res, a.json.with_suffix(""))
    if a.monitor_plot:
        from rlextra.analysis.plots import plot_linearity_vs_step

        run = state["runs"][a.monitor_plot]
        plot_linearity_vs_step(run["monitor"], a.json.with_suffix(".monitor.png"),
                               title=f"{a.monitor_plot}: the monitor's window R² and in-flight weight error")
    summary = a.json.with_name(a.json.stem + "_summary.json")
    summary.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res, a.json))


if __name__ == "__main__":
    main()
