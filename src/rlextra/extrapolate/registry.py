"""The extrapolation methods, one entry each: what every layer (extrapolate, the backtest, RL-Extra,
the CLI's choices) reads about a method. Adding a method is one entry here plus its arithmetic in
``methods.WindowPredictor``. Light to import: the CLI builds its choices from it."""

from __future__ import annotations

from dataclasses import dataclass

from rlextra.errors import RLExtraError


@dataclass(frozen=True)
class Method:
    name: str
    min_checkpoints: int  # snapshots a window needs
    max_checkpoints: int | None  # None: any number
    chunked: bool  # elementwise, so it streams chunk by chunk (else it needs whole matrices)
    formula: str  # as written into rlextra.json
    origin: str  # whose method it is


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("two-point", 2, 2, True, "W_T = W_b + alpha * (W_s - W_b)", "the paper's"),
    Method("lsq", 3, None, True, "W_T = a + b*T, per-parameter least-squares line over K checkpoints", "rlextra's"),
    Method("low-rank", 2, None, False,
           "W_T = W_s + U_r (C_T - C_s) V_r^T; U_r, V_r: top-r singular vectors of W_s - W_b; "
           "C_k = U_r^T (W_k - W_b) V_r fitted linearly in the step; 1-D tensors: their own line", "rlextra's"),
)}
METHODS = tuple(REGISTRY)
# older names, still accepted everywhere a method is named (results keep the name they were written with)
ALIASES = {"rank1": "low-rank"}
MIN_CHECKPOINTS = {name: m.min_checkpoints for name, m in REGISTRY.items()}
FORMULAS = {name: m.formula for name, m in REGISTRY.items()}

# what happens to norm weights (LayerNorm/RMSNorm) in a jump or an extrapolation
NORMS = ("copy", "extrapolate")


def method(name: str, option: str = "--method") -> Method:
    """The registry entry of a method name (or an older alias), or a one-line error listing the known ones."""
    entry = REGISTRY.get(canonical(name))
    if entry is None:
        raise RLExtraError(f"unknown {option} '{name}' ({', '.join(METHODS)})")
    return entry


def canonical(name: str) -> str:
    """The current name of a method named by its current name or an alias (unknown names pass through
    unchanged, for the caller's own check to name)."""
    return ALIASES.get(name, name)


def check_norms(norms: str, option: str = "--norms") -> str:
    """The one check of a norms policy."""
    if norms not in NORMS:
        raise RLExtraError(f"unknown {option} '{norms}' ({', '.join(NORMS)})")
    return norms
