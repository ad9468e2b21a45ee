"""Learning-rate headroom: how much larger a step the run's own path says it could take (rlextra's heuristic).

Why it could work: on a straight path, a jump to alpha times a window's span covers what alpha times
the learning rate would cover in the same real steps (Adam's step scales with the lr). So if the
monitor's in-flight backtest still predicts the newest snapshot well at horizon alpha (weight error
below the threshold: the prediction beats stopping by a margin), the path the run is on has room
for a step alpha times larger. The headroom is the largest such alpha of the monitor's ladder.

Why it may not: raising the lr scales a window's drift and its noise alike, so a relative error
can barely move with the lr; the rule also knows nothing of the accuracy a run can reach. How well
it names the best learning rate of a sweep is measured in bench/RESULTS.md ("Which learning rate?").

This is rlextra's heuristic, not the paper's: the paper measures linearity and jumps; it never sets
a learning rate from it. The rule was written, with its constants below, before any learning-rate
sweep that judges it was run (the jump threshold 0.8 was chosen earlier, on seed 100, for
``--rl-extra-auto``).
"""

from __future__ import annotations

from typing import Iterable, Mapping

HEADROOM_THRESHOLD = 0.8  # the same number as --rl-extra-auto-threshold's default (chosen on seed 100)
PREDICTION_STEPS = 20  # the prediction reads the base-lr run's rows over its first 20 real steps only
HEADROOM_METHOD = "two-point"
HEADROOM_ROWS = 3  # in flight, the headroom reads the newest rows of the window's segment (as auto's evidence)
HEURISTIC = ("rlextra's heuristic (not the paper's): within 2x of a sweep's best lr in 6 of 7 tiny-model cells (a "
             "constant x2 guess: 4 of 7), x2 against a better x6 on SmolLM2; bench/RESULTS.md, 'Which learning rate?'")


def _rows(rows: Iterable[Mapping]) -> list[Mapping]:
    return [r for r in rows if "event" not in r and r.get("backtest_ladder")]


def alpha_errors(rows: Iterable[Mapping], method: str = HEADROOM_METHOD) -> dict[float, float]:
    """Mean in-flight weight error per horizon alpha over ``rows`` (monitor rows; events and rows of
    a diverged window, whose errors are None, are skipped): the evidence of the lr headroom and of
    adaptive RL-Extra's jump."""
    errs: dict[float, list[float]] = {}
    for r in _rows(rows):
        for e in r["backtest_ladder"].get(method, []):
            if e.get("weight_error") is not None:
                errs.setdefault(float(e["alpha"]), []).append(float(e["weight_error"]))
    return {a: sum(v) / len(v) for a, v in sorted(errs.items())}


def lr_headroom(rows: Iterable[Mapping], threshold: float = HEADROOM_THRESHOLD,
                method: str = HEADROOM_METHOD) -> dict:
    """The headroom over ``rows``: the largest alpha whose mean in-flight error is below ``threshold``
    (1.0 when none is: no evidence that a larger step stays on the path), with its evidence."""
    rows = _rows(rows)
    errors = alpha_errors(rows, method)
    passing = [a for a, e in errors.items() if e < threshold]
    return {"multiplier": max(passing, default=1.0), "threshold": threshold, "method": method,
            "rows": [r["step"] for r in rows], "weight_error": {f"{a:g}": round(e, 4) for a, e in errors.items()},
            "label": HEURISTIC}


def predict_multiplier(rows: Iterable[Mapping], first_steps: int = PREDICTION_STEPS,
                       threshold: float = HEADROOM_THRESHOLD) -> dict:
    """The prediction a sweep is judged against: the headroom of the base-lr run's first segment
    (before any jump or lr change), over its rows at real steps <= ``first_steps``."""
    early = [r for r in _rows(rows) if r.get("segment", 0) == 0 and r["step"] <= first_steps]
    return lr_headroom(early, threshold)


def recent_headroom(segment_rows: list[Mapping], row: Mapping, threshold: float = HEADROOM_THRESHOLD) -> dict:
    """The in-flight headroom logged with ``row``: over it and the rows of its segment before it, the
    newest ``HEADROOM_ROWS`` in all."""
    return lr_headroom(list(segment_rows[-(HEADROOM_ROWS - 1):]) + [row], threshold)


def describe(headroom: Mapping) -> str:
    """One line for a console or report: 'lr headroom x2 (in-flight error 0.74 at alpha 2)'."""
    mult = headroom["multiplier"]
    errs = headroom.get("weight_error") or {}
    if not errs:
        return "lr headroom: not measured yet"
    key = f"{mult:g}" if mult > 1 else min(errs, key=float)
    return f"lr headroom x{mult:g} (in-flight error {errs[key]:.2f} at alpha {key})"
