"""Tasks with verifiable rewards, and the one registry that maps a ``TaskSpec`` to its family.

``base`` holds what every task is (``Problem``, ``TaskSpec``, ``Task``, its TRL reward); each family is
one module with ``load(spec) -> Task``: ``arithmetic`` (synthetic, exact match), ``code`` (HumanEval,
MBPP, LiveCodeBench, graded in rlextra's sandbox), ``math_sets`` (benchmarks and files graded by
math-verify). A new family is one module and one line of ``FAMILIES``. Families are imported when a
spec needs them (the code tasks and math-verify are not light), so ``TaskSpec`` stays cheap to import.
"""

from __future__ import annotations

import importlib

from rlextra.tasks.base import Problem, Task, TaskSpec, completion_text, task_inputs

# (does this family serve a task name?, its module), first match wins; the math sets take the rest
FAMILIES = (
    (lambda name: name == "arithmetic", "rlextra.tasks.arithmetic"),
    (lambda name: name in ("humaneval", "humaneval-chat") or name.startswith(("mbpp:", "lcb:")), "rlextra.tasks.code"),
    (lambda name: True, "rlextra.tasks.math_sets"),
)

# names users import from rlextra.tasks, and the family module that defines each
_FROM_FAMILY = {
    "arithmetic_task": "arithmetic", "first_line": "arithmetic", "grade_exact": "arithmetic",
    "MATH_INSTRUCTION": "math_sets", "BUNDLED": "math_sets", "HUB_PREFIX": "math_sets", "HUB_DATASETS": "math_sets",
    "last_boxed": "math_sets", "extract_answer": "math_sets", "grade_math": "math_sets", "math_task": "math_sets",
    "bundled_benchmark": "math_sets", "restates_an_operation": "math_sets",
    "EXACT_GOLD_FLOAT_ROUNDING": "math_sets",
}

__all__ = ["FAMILIES", "Problem", "Task", "TaskSpec", "completion_text", "load_task", "task_inputs",
           *sorted(_FROM_FAMILY)]


def load_task(spec: TaskSpec) -> Task:
    """Build the task a spec describes, through its family's ``load``."""
    module = next(mod for serves, mod in FAMILIES if serves(spec.name))
    return importlib.import_module(module).load(spec)


def __getattr__(name: str):
    if name in _FROM_FAMILY:
        return getattr(importlib.import_module(f"rlextra.tasks.{_FROM_FAMILY[name]}"), name)
    raise AttributeError(f"module 'rlextra.tasks' has no attribute {name!r}")
