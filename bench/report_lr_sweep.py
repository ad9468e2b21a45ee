"""Which learning rate? The sweep's best multiplier per cell, the headroom's prediction, and lr-auto.

The ground truth is a learning-rate sweep (GRPO at the base lr times c, every other setting equal),
run by bench_batch_sweep.py (variants ``grpo`` and ``grpo-lrC``) into its JSON files. This report
reads them and writes the markdown of bench/RESULTS.md's "Which learning rate?" section and a plot.

Fixed before any sweep result of these cells was read (the criterion, the hit, the collapse):

* **c*** of a cell: the multiplier whose run has the highest mean held-out avg@4 over its evaluated
  checkpoints after step 0 (every 10 real steps); a tie goes to the smaller multiplier. The
  multiplier best at the last step is reported beside it.
* **prediction:** ``rlextra.extrapolate.headroom.predict_multiplier`` on the base-lr (x1) run's
  monitor rows at real steps <= 20, nothing else. A **hit** is a prediction within a factor of 2 of
  c* (0.5 <= predicted / c* <= 2).
* **collapse:** a run collapses when any evaluated checkpoint falls below half its step-0 accuracy.

What was known when the rule and the criterion were written (said, so a reader can weigh it): GRPO
at lr x2 beat x1 on every cell at lr 2e-5 (on record since 2026-11-29), x6 collapsed at lr 1e-4,
and one unrecorded probe at 32 x 8 seed 1 had x4 ending highest of x4, x8, x16 by its final step.

Usage: python bench/report_lr_sweep.py [--plot bench/results/lr_sweep.png] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

# (json file, batch, seed, base lr, real steps): the cells of the sweep. Every run of the sweep is
# from 2026-12-06: the runs on record from 2026-11-29 (batch_sweep.json, rl_extra_auto.json) could not
# be reused, because the demo's warmed-up model is no longer rebuilt the same (held-out avg@4 at step 0:
# 0.586 now, 0.565 then; GRPO x1 at 32 x 8 seed 1 ends at 0.670 now, 0.644 then).
CELLS = [
    ("lr_sweep.json", "32x8", 1, 2e-5, 100),
    ("lr_sweep.json", "32x8", 2, 2e-5, 100),
    ("lr_sweep.json", "128x16", 1, 2e-5, 100),
    ("lr_sweep.json", "128x16", 2, 2e-5, 100),
    ("lr_sweep.json", "512x16", 1, 2e-5, 60),
    ("lr_sweep_1e-4.json", "32x8", 1, 1e-4, 200),
    ("lr_sweep_1e-4.json", "32x8", 2, 1e-4, 200),
]
COLLAPSE_FRACTION = 0.5
# the multipliers each cell's sweep runs (x16 too wherever x8 is the best of these)
PLANNED = {2e-5: (1.0, 2.0, 4.0, 8.0), 1e-4: (0.25, 0.5, 1.0, 2.0)}


def missing(cell: dict) -> list[float]:
    """The multipliers a cell still lacks; a cell is judged only once this is empty."""
    sweep = cell["sweep"]
    need = [c for c in PLANNED[cell["lr"]] if c not in sweep]
    if not need and best_multiplier(sweep) == 8.0 and 16.0 not in sweep:
        need = [16.0]
    return need


def multiplier_of(variant: str) -> float | None:
    """grpo -> 1, grpo-lr4 -> 4, grpo-lr0.25 -> 0.25; other variants -> None."""
    if variant == "grpo":
        return 1.0
    if variant.startswith("grpo-lr"):
        return float(variant[len("grpo-lr"):])
    return None


def mean_accuracy(curve: list[dict]) -> float:
    """The criterion's score: mean avg@4 over the evaluated checkpoints after step 0."""
    accs = [r["acc"] for r in curve if r["step"] > 0]
    return sum(accs) / len(accs)


def best_multiplier(sweep: dict[float, dict]) -> float:
    """c*: the highest mean_accuracy; ties to the smaller multiplier."""
    return max(sorted(sweep), key=lambda c: (mean_accuracy(sweep[c]["curve"]), -c))


def best_final(sweep: dict[float, dict]) -> float:
    return max(sorted(sweep), key=lambda c: (sweep[c]["curve"][-1]["acc"], -c))


def collapsed(curve: list[dict]) -> bool:
    start = curve[0]["acc"]
    return any(r["acc"] < COLLAPSE_FRACTION * start for r in curve[1:])


def hit(predicted: float, actual: float) -> bool:
    return 0.5 <= predicted / actual <= 2.0


def cell_runs(state: dict, batch: str, seed: int) -> dict[str, dict]:
    """Every run of one cell by variant (the keys bench_batch_sweep.py writes: BATCH-VARIANT-seedS)."""
    out = {}
    suffix = f"-seed{seed}"
    for key, run in state["runs"].items():
        if key.startswith(batch + "-") and key.endswith(suffix) and "-t0." not in key:
            out[key[len(batch) + 1:-len(suffix)]] = run
    return out


# ---- below: the report (tables, plot); the criterion above is what judges


def load_cells(results: Path) -> list[dict]:
    """Each cell with its sweep (multiplier -> run) and its other runs (lr-auto, prodigy)."""
    cells = []
    for name, batch, seed, lr, steps in CELLS:
        path = results / name
        if not path.exists():
            continue
        runs = cell_runs(json.loads(path.read_text()), batch, seed)
        sweep = {multiplier_of(v): r for v, r in runs.items() if multiplier_of(v) is not None}
        if 1.0 not in sweep:
            continue
        cells.append({"name": f"{batch}, lr {lr:g}, seed {seed}", "batch": batch, "seed": seed, "lr": lr,
                      "steps": steps, "sweep": dict(sorted(sweep.items())),
                      "others": {v: r for v, r in runs.items() if v in ("lr-auto", "prodigy")}})
    return cells


def diff(a: dict, b: dict) -> tuple[float, float]:
    """acc(a) - acc(b) at one checkpoint and its paired SE over the held-out problems."""
    from rlextra.metrics import paired_difference

    return paired_difference(a["n_correct"], b["n_correct"], 4)


def early_evidence(run: dict, first: int = 20) -> dict:
    """What the first ``first`` real steps of a run show: the candidates for separating the cells."""
    rows = [r for r in run["monitor"] if "event" not in r and r.get("segment", 0) == 0 and r["step"] <= first
            and r.get("mean_r2") is not None]
    from rlextra.extrapolate.headroom import alpha_errors

    errs = alpha_errors(rows)
    upd = [r["relative_update"] for r in rows if r.get("relative_update") is not None]
    log = [x for x in run.get("train_log", []) if x["step"] <= first]
    slope = None
    if len(log) >= 3:
        xs, ys = [x["step"] for x in log], [x["reward"] for x in log]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    late = [r for r in run["monitor"] if "event" not in r and r.get("segment", 0) == 0 and r["step"] > first]
    late_err = alpha_errors(late)
    return {"err2": errs.get(2.0), "err6": errs.get(6.0), "r2": sum(r["mean_r2"] for r in rows) / len(rows) if rows
            else None, "update": sum(upd) / len(upd) if upd else None, "reward_slope": slope,
            "err2_later": late_err.get(2.0)}


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def overhead(run: dict) -> float | None:
    """The monitor's own seconds over the run's training seconds (monitor on in every run)."""
    secs = [r["monitor_seconds"] for r in run["monitor"] if "monitor_seconds" in r]
    train = run["curve"][-1].get("seconds")
    return secs[-1] / train if secs and train else None


def lr_auto_path(run: dict) -> str:
    """The multipliers an lr-auto run took, as 'x1 -> x2 (step 20) -> ...'."""
    out, last = ["x1"], 1.0
    for ev in run.get("lr_auto", []):
        if ev["multiplier"] != last:
            out.append(f"x{ev['multiplier']:g} ({ev['step']})")
            last = ev["multiplier"]
    return " -> ".join(out)


def report(cells: list[dict]) -> tuple[str, dict]:
    lines, summary = [], {"cells": []}
    lines += ["| cell | multiplier | lr | mean avg@4 (ckpts 10..) | final avg@4 | collapsed | early: error a2 | "
              "error a6 | R^2 | rel. update / step | reward slope / step | error a2 after step 20 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        for c, run in cell["sweep"].items():
            ev = early_evidence(run)
            lines.append(f"| {cell['name']} | x{c:g} | {run['lr']:g} | {mean_accuracy(run['curve']):.3f} | "
                         f"{run['curve'][-1]['acc']:.3f} | {'yes' if collapsed(run['curve']) else 'no'} | "
                         f"{_f(ev['err2'])} | {_f(ev['err6'])} | {_f(ev['r2'])} | {_f(ev['update'], '{:.2e}')} | "
                         f"{_f(ev['reward_slope'], '{:+.4f}')} | {_f(ev['err2_later'])} |")
    lines += ["", "The best multiplier per cell, and the headroom's prediction from the x1 run:", "",
              "| cell | multipliers run | c* (mean) | best at the last step | predicted (headroom, x1 run, "
              "steps <= 20) | its evidence (mean error per alpha) | hit (within 2x of c*) |", "|---|---|---|---|---|---|---|"]
    hits = 0
    from rlextra.extrapolate.headroom import predict_multiplier

    judged = [c for c in cells if not missing(c)]
    for cell in cells:
        sweep = cell["sweep"]
        cstar, cfin = best_multiplier(sweep), best_final(sweep)
        pred = predict_multiplier(sweep[1.0]["monitor"])
        if missing(cell):
            lines.append(f"| {cell['name']} | {', '.join(f'x{c:g}' for c in sweep)} | not judged: "
                         f"{', '.join(f'x{c:g}' for c in missing(cell))} not run | - | x{pred['multiplier']:g} | "
                         f"{', '.join(f'{a}: {e:.3f}' for a, e in pred['weight_error'].items())} | - |")
            continue
        h = hit(pred["multiplier"], cstar)
        hits += h
        edge = " (top of the sweep)" if cstar == max(sweep) else ""
        lines.append(f"| {cell['name']} | {', '.join(f'x{c:g}' for c in sweep)} | x{cstar:g}{edge} | x{cfin:g} | "
                     f"x{pred['multiplier']:g} | {', '.join(f'{a}: {e:.3f}' for a, e in pred['weight_error'].items())} | "
                     f"{'hit' if h else 'miss'} |")
        summary["cells"].append({"cell": cell["name"], "c_star": cstar, "best_final": cfin,
                                 "predicted": pred["multiplier"], "hit": h, "evidence": pred["weight_error"]})
    summary["hits"], summary["n"] = hits, len(judged)
    cstars = [best_multiplier(c["sweep"]) for c in judged]
    consts = {c: sum(hit(c, x) for x in cstars) for c in (1.0, 2.0, 4.0, 8.0)}
    summary["constant_hits"] = {f"x{c:g}": n for c, n in consts.items()}
    lines += ["", f"Hits: **{hits} of {len(judged)}** judged cells. The same criterion gives a constant guess, the "
              f"same in every cell: " + ", ".join(f"x{c:g} {n} of {len(judged)}" for c, n in consts.items()) + ".", ""]
    lines += ["At equal real steps and seeds: GRPO at the base lr, the sweep-best, `--lr-auto` and Prodigy:", "",
              "| cell | run | final avg@4 | minus sweep-best at the last step (paired SE) | mean avg@4 | "
              "worst gap to x1 over checkpoints / SE | collapsed | runs | lr multipliers taken | monitor's time / "
              "training time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        sweep = cell["sweep"]
        best = sweep[best_multiplier(sweep)]
        base = sweep[1.0]
        tag = "sweep-best" if not missing(cell) else "best so far: sweep incomplete"
        rows = [(f"GRPO x1 (also the {tag})", base)] if best is base else \
            [("GRPO x1", base), (f"GRPO x{best_multiplier(sweep):g} ({tag})", best)]
        rows += [("lr-auto (rlextra's)", cell["others"]["lr-auto"])] if "lr-auto" in cell["others"] else []
        rows += [("Prodigy, lr 1.0", cell["others"]["prodigy"])] if "prodigy" in cell["others"] else []
        for label, run in rows:
            d, se = diff(run["curve"][-1], best["curve"][-1])
            worst = min((diff(a, b)[0] / diff(a, b)[1] if diff(a, b)[1] > 0 else 0.0)
                        for a, b in zip(run["curve"][1:], base["curve"][1:]))
            n = len(sweep) if "sweep" in label else 1
            lines.append(f"| {cell['name']} | {label} | {run['curve'][-1]['acc']:.3f} | {d:+.3f} ({se:.3f}) | "
                         f"{mean_accuracy(run['curve']):.3f} | {worst:+.1f} | "
                         f"{'yes' if collapsed(run['curve']) else 'no'} | {n} | "
                         f"{lr_auto_path(run) if label.startswith('lr-auto') else '-'} | {_f(overhead(run), '{:.2%}')} |")
    lines += ["", "Targets of --lr-auto (judged cells): at the last step within one paired SE of the sweep-best; "
              "at no evaluated checkpoint below GRPO x1 by more than one SE; no collapse where x1 does not.", "",
              "| cell | last step minus sweep-best (SE) | within 1 SE | worst gap to x1 / SE | never below by > 1 SE | "
              "collapsed | Prodigy: last minus sweep-best (SE) |", "|---|---|---|---|---|---|---|"]
    for cell in cells:
        if missing(cell) or "lr-auto" not in cell["others"]:
            continue
        sweep, run = cell["sweep"], cell["others"]["lr-auto"]
        best, base = sweep[best_multiplier(sweep)], sweep[1.0]
        d, se = diff(run["curve"][-1], best["curve"][-1])
        worst = min(diff(a, b)[0] / diff(a, b)[1] if diff(a, b)[1] > 0 else 0.0
                    for a, b in zip(run["curve"][1:], base["curve"][1:]))
        prod = cell["others"].get("prodigy")
        pd = diff(prod["curve"][-1], best["curve"][-1]) if prod else None
        lines.append(f"| {cell['name']} | {d:+.3f} ({se:.3f}) | {'yes' if d >= -se else 'no'} | {worst:+.1f} | "
                     f"{'yes' if worst >= -1 else 'no'} | {'yes' if collapsed(run['curve']) else 'no'} | "
                     f"{'-' if pd is None else f'{pd[0]:+.3f} ({pd[1]:.3f})'} |")
        summary.setdefault("lr_auto", []).append({"cell": cell["name"], "last_minus_best": round(d, 4), "se": round(se, 4),
                                                  "worst_vs_x1_in_se": round(worst, 2),
                                                  "collapsed": collapsed(run["curve"])})
    return "\n".join(lines), summary


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rlextra.extrapolate.headroom import predict_multiplier

    cols = min(4, len(cells))
    rows = -(-len(cells) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    for ax, cell in zip(axes.flat, cells):
        cs = list(cell["sweep"])
        ax.plot(cs, [mean_accuracy(cell["sweep"][c]["curve"]) for c in cs], "o-", label="mean over checkpoints")
        ax.plot(cs, [cell["sweep"][c]["curve"][-1]["acc"] for c in cs], "s--", label="last step")
        cstar = best_multiplier(cell["sweep"])
        ax.plot([cstar], [mean_accuracy(cell["sweep"][cstar]["curve"])], "k*", ms=12, label="c* (sweep)")
        pred = predict_multiplier(cell["sweep"][1.0]["monitor"])["multiplier"]
        ax.axvline(pred, color="#cc3311", lw=1.5, label="predicted (headroom)")
        for name, style in (("lr-auto", "#228833"), ("prodigy", "#aa3377")):
            if name in cell["others"]:
                ax.axhline(cell["others"][name]["curve"][-1]["acc"], color=style, ls=":", lw=1.5,
                           label=f"{name}, last step")
        ax.set_xscale("log", base=2)
        ax.set_title(cell["name"] + (" (sweep incomplete)" if missing(cell) else ""), fontsize=8)
        ax.set_xlabel("lr multiplier")
    axes[0][0].set_ylabel("held-out avg@4")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compact_row(r: dict) -> dict:
    """A monitor row in its committed form: what this report and the plots read, rounded."""
    if "event" in r:
        return {k: v for k, v in r.items() if k in ("step", "event", "segment", "lr_multiplier")}
    out = {"step": r["step"], "segment": r.get("segment", 0), "window_steps": r.get("window_steps"),
           "mean_r2": None if r.get("mean_r2") is None else round(r["mean_r2"], 6),
           **({"frac_r2_above_0.7": round(r["frac_r2_above_0.7"], 6)} if r.get("frac_r2_above_0.7") is not None else {}),
           "relative_update": None if r.get("relative_update") is None else float(f"{r['relative_update']:.4g}"),
           "backtest_ladder": {"two-point": [
               {"alpha": e["alpha"], "weight_error": None if e["weight_error"] is None else round(e["weight_error"], 6)}
               for e in r.get("backtest_ladder", {}).get("two-point", [])]}}
    if r.get("lr_headroom"):
        out["lr_headroom"] = {"multiplier": r["lr_headroom"]["multiplier"]}
    if r.get("lr_multiplier") is not None:
        out["lr_multiplier"] = r["lr_multiplier"]
    if "monitor_seconds" in r:
        out["monitor_seconds"] = r["monitor_seconds"]
    return out


def compact(path: Path) -> None:
    """Rewrite a sweep JSON in its committed form (under the sweep's lock: a sweep may be writing)."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        for run in state["runs"].values():
            run["monitor"] = [compact_row(r) for r in run["monitor"]]
            for d in run.get("lr_auto", []):
                d["headroom"] = {k: d["headroom"][k] for k in ("multiplier", "weight_error", "rows")}
        tmp = path.with_suffix(".tmp")
        tmp.write_text("{\"runs\": {\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}"
                                                  for k, v in state["runs"].items()) + "\n}}\n")
        tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--plot", type=Path, default=HERE / "results" / "lr_sweep.png")
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "lr_sweep_summary.json")
    ap.add_argument("--compact", action="store_true", help="rewrite the sweep JSONs in their committed form first")
    a = ap.parse_args()
    if a.compact:
        for name in sorted({c[0] for c in CELLS}):
            if (a.results / name).exists():
                compact(a.results / name)
    cells = load_cells(a.results)
    text, summary = report(cells)
    print(text)
    a.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    plot(cells, a.plot)
    auto = next((c["others"]["lr-auto"] for c in cells if "lr-auto" in c["others"]), None)
    if auto is not None:  # the monitor of the first lr-auto run: headroom and the multiplier it took
        from rlextra.analysis.plots import plot_linearity_vs_step

        plot_linearity_vs_step(auto["monitor"], a.plot.with_name(a.plot.stem + ".lr_auto_monitor.png"),
                               title=f"--lr-auto, {cells[0]['name']}: monitor rows")


if __name__ == "__main__":
    main()
