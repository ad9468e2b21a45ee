"""Synthetic arithmetic: seeded 'a+b=' problems, disjoint train and held-out sets, exact-match reward."""

from __future__ import annotations

import random

from rlextra.errors import RLExtraError
from rlextra.tasks.base import Problem, Task, TaskSpec


def load(spec: TaskSpec) -> Task:
    return arithmetic_task(spec.ops, spec.digits, spec.n_train, spec.n_test or 200, spec.seed)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic_task(ops: str = "+", digits: int = 2, n_train: int = 4000, n_test: int = 200,
                    seed: int = 0) -> Task:
    """Seeded 'a+b=' problems with disjoint train and held-out sets; exact-match reward."""
    if not ops or any(o not in "+-*" for o in ops):
        raise RLExtraError(f"arithmetic ops must be drawn from '+-*', got '{ops}'")
    if not 1 <= digits <= 6:
        raise RLExtraError(f"arithmetic digits must be 1..6, got {digits}")
    hi = 10 ** digits
    space = len(ops) * hi * hi
    if n_train + n_test > space:
        raise RLExtraError(f"only {space} distinct problems with ops '{ops}' and {digits} digits; "
                           f"asked for {n_train + n_test}")
    rng = random.Random(seed)
    seen: set[tuple[int, str, int]] = set()
    problems = []
    while len(problems) < n_train + n_test:
        a, b, op = rng.randrange(hi), rng.randrange(hi), rng.choice(ops)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        problems.append(Problem(f"{a}{op}{b}=", str(_apply(a, op, b))))
    spec = TaskSpec("arithmetic", ops, digits, n_train, n_test, seed)
    return Task(spec, problems[n_test:], problems[:n_test], grade_exact, first_line,
                source=f"generated (seed {seed})")


def first_line(completion: str) -> str:
    """The answer of an arithmetic completion: its first line, stripped."""
    return completion.strip().split("\n")[0].strip()


def grade_exact(completion: str, answer: str) -> bool:
    """The completion's first line, stripped, equals the answer."""
    return first_line(completion) == answer.strip()


