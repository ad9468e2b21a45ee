import threading

import numpy as np
from math import comb

import pytest

from rlextra.errors import RLExtraError
from rlextra.metrics import pass_at_k, summarize
from rlextra.tasks import (TaskSpec, arithmetic_task, extract_answer, grade_math, last_boxed, load_task,
                              math_task)



@pytest.mark.parametrize("completion,answer,ok", [
    (r"so x = \boxed{\frac{1}{2}}", "0.5", True),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt2}{2}", True),          # nested braces
    (r"first \boxed{3}, corrected: \boxed{5}", "5", True),                # last box wins
    (r"first \boxed{3}, corrected: \boxed{5}", "3", False),
    (r"The side is \boxed{5 \text{ cm}}.", "5", True),                    # units
    (r"\boxed{106^\circ}", "106", True),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"(3,\frac{\pi}{2})", True),
    ("I am not sure.", "5", False),                                       # no answer
    (r"\boxed{\frac{1}{", "1", False),                                    # unbalanced LaTeX
    (r"\boxed{\frac{}{}}", "2", False),                                   # parses to nothing useful
    ("The final answer is 42.", "42", True),                              # fallbacks
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", True),
    ("so she has 7 apples left", "7", True),
    (r"\boxed{4}", "5", False),
    # a rounded decimal is not an exact fraction or surd, unless the gold is itself a decimal
    (r"\boxed{4.666666666}", r"\frac{14}{3}", False),
    (r"\boxed{0.0535714}", r"\frac{3}{56}", False),
    (r"\boxed{1.41421356}", r"\sqrt{2}", False),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),                                # exact: still right
    (r"\boxed{0.125}", r"\frac18", True),
    (r"\boxed{2.0}", "2", True),
    (r"\boxed{3.5}", "3.5", True),
    (r"\boxed{\frac{7}{2}}", "3.5", True),
    (r"\boxed{4.6666667}", "4.6666667", True),
    ("x = 4.666666666", r"\frac{14}{3}", False),                           # same without a box
    # without a box, the whole final expression is the answer, not a number inside it
    (r"so the result is $\frac{14}{3}$", r"\frac{14}{3}", True),
    (r"so the result is $\frac{14}{3}$", "3", False),
    (r"Therefore $x = \frac{14}{3}$.", r"\frac{14}{3}", True),
    (r"The answer is \(\frac{3}{56}\)", r"\frac{3}{56}", True),
    # an answer that is still the operation is not an answer (math-verify would evaluate it)
    ("30 * 4 is calculated by", "120", False),
    ("94 + 91 is a", "185", False),
    (r"\boxed{3 \times 4}", "12", False),
    ("12 - 5", "7", False),
    ("The answer is 120.", "120", True),
    (r"\boxed{14/3}", r"\frac{14}{3}", True),                             # a fraction is a number
    (r"\boxed{-3}", "-3", True),
    (r"\boxed{1,000}", "1000", True),
    (r"\boxed{x+1}", "x+1", True),                                        # gold not a number: no rule
])
def test_grade_math_hard_cases(completion, answer, ok):
    assert grade_math(completion, answer) is ok


def test_last_boxed_and_extract():
    assert last_boxed(r"a \boxed{x^{2}} b \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed("none") is None
    assert extract_answer("answer is: 1,234") == "1234"
    assert extract_answer("we get 1,234 and 56") == "56"
    assert extract_answer(r"so the result is $\frac{14}{3}$") == r"\frac{14}{3}"
    assert extract_answer(r"first \boxed{3} then \boxed{\frac{1}{") is None  # truncated box: no answer
    assert extract_answer("I am not sure.") is None


def test_default_instruction_is_the_papers_after_a_space(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"problem": "What is 2+2?", "answer": "4"}\n')
    assert math_task(str(f)).test[0].prompt == (
        "What is 2+2? Let's think step by step and output the final answer within \\boxed{}.")
    assert math_task(str(f), instruction="").test[0].prompt == "What is 2+2?"


def test_grade_math_off_the_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(grade_math(r"\boxed{\frac{2}{4}}", "0.5")))
    t.start()
    t.join()
    assert out == [True]


def test_pass_at_k_matches_closed_form():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
    with pytest.raises(RLExtraError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)


def test_summarize_avg_and_pass():
    s = summarize([[True, False, False, False], [False] * 4, [True] * 4], ks=[1, 2, 4])
    assert s["avg@4"] == pytest.approx(5 / 12)
    assert s["pass@1"] == pytest.approx(5 / 12)
    assert s["pass@4"] == pytest.approx(2 / 3)
    assert s["pass@2"] == pytest.approx((0.5 + 0 + 1) / 3)


def test_arithmetic_task_is_seeded_and_split():
    a, b = arithmetic_task(seed=3), arithmetic_task(seed=3)
    assert [p.prompt for p in a.test] == [p.prompt for p in b.test]
    assert not {p.prompt for p in a.test} & {p.prompt for p in a.train}
    p = a.test[0]
    x, y = p.prompt[:-1].split("+")
    assert int(p.answer) == int(x) + int(y)
    assert a.reward([p.answer + "\n", "nope"], [p.answer, p.answer]) == [1.0, 0.0]
    # conversational completions as TRL passes them
    assert a.reward([[{"role": "assistant", "content": p.answer}]], [p.answer]) == [1.0]
    with pytest.raises(RLExtraError, match="distinct problems"):
        arithmetic_task(digits=1, n_train=500)


def test_bundled_benchmarks_load_offline_and_grade_their_own_gold():
    sizes = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30}
    for name, n in sizes.items():
        task = load_task(TaskSpec(name=name))
        assert len(task.test) == n and task.source.startswith(f"bundled copy rlextra/data/benchmarks/")
        assert all(task.grade(rf"\boxed{{{p.answer}}}", p.answer) for p in task.test[:40]), name
    gsm = math_task("gsm8k", limit=30)
    assert len(gsm.test) == 30 and gsm.conversational
    assert all(gsm.grade(f"... #### {p.answer}", p.answer) for p in gsm.test)
    m500 = load_task(TaskSpec(name="math500", limit=60))
    assert all(m500.grade(rf"Thus \boxed{{{p.answer}}}.", p.answer) for p in m500.test)
    assert sum(m500.grade(r"\boxed{7}", p.answer) for p in m500.test) < 5
    rows = m500.dataset_rows("test")
    assert rows[0]["prompt"][0]["role"] == "user" and "boxed" in rows[0]["prompt"][0]["content"]


def test_bad_math_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"problem": "1+1"}\n')
    with pytest.raises(RLExtraError, match="lacks"):
        math_task(str(f))
    f.write_text("{oops\n")
    with pytest.raises(RLExtraError, match=r"x.jsonl:1"):
        math_task(str(f))


def test_evaluation_summary_names_the_copy_of_the_task_it_used():
    from rlextra.evaluation import evaluate

    task = load_task(TaskSpec(name="aime24", limit=2))
    summary = evaluate(None, task, completions=[[r"\boxed{0}"], [r"\boxed{0}"]])
    assert summary["task_source"].startswith("bundled copy rlextra/data/benchmarks/aime24.jsonl (sha256 594a81dbb496")


def test_paired_difference_is_the_mean_and_error_of_per_problem_differences():
    from rlextra.errors import RLExtraError
    from rlextra.metrics import paired_difference

    a, b = [4, 3, 0, 2, 1], [2, 3, 1, 2, 0]
    d = np.array([2, 0, -1, 0, 1]) / 4
    diff, se = paired_difference(a, b, 4)
    assert diff == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    assert paired_difference(a, a, 4) == (0.0, 0.0)
    # a constant shift has no spread: pairing removes the problems' own variance
    assert paired_difference([1, 2, 3], [0, 1, 2], 4) == (0.25, 0.0)
    with pytest.raises(RLExtraError, match="same problems"):
        paired_difference([1, 2], [1, 2, 3], 4)


def test_the_registry_maps_each_name_to_one_family_and_imports_it_only_when_needed():
    import subprocess
    import sys

    from rlextra.tasks import FAMILIES

    def family(name):
        return next(mod for serves, mod in FAMILIES if serves(name)).rsplit(".", 1)[1]

    assert [family(n) for n in ("arithmetic", "humaneval", "humaneval-chat", "mbpp:x.json", "lcb:y.jsonl",
                                "math500", "data/train.jsonl", "hub:gsm8k")] == \
        ["arithmetic", "code", "code", "code", "code", "math_sets", "math_sets", "math_sets"]
    code = ("import sys; from rlextra.tasks import TaskSpec, load_task; load_task(TaskSpec()); "
            "print(sorted(m for m in sys.modules if m.startswith('rlextra.tasks.') or m in ('math_verify', 'rlextra.sandbox')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['rlextra.tasks.arithmetic', 'rlextra.tasks.base']"
    import rlextra.code_tasks
    import rlextra.tasks.code

    assert rlextra.code_tasks is rlextra.tasks.code  # the former name is the same module
