"""Math sets graded by math-verify: the bundled benchmarks (gsm8k, math500, aime24, aime25), a local
JSONL/Parquet with problem/answer fields, or a Hugging Face dataset id."""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path

from rlextra.errors import RLExtraError
from rlextra.io import read_jsonl
from rlextra.tasks.base import Problem, Task, TaskSpec

# the paper's instruction, appended to each problem after a space (its published evaluation does so)
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
# Hugging Face dataset ids for the named benchmarks (the paper's loader uses the same sets)
BUNDLED = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl", "aime24": "aime24.jsonl",
           "aime25": "aime25.jsonl"}  # shipped in rlextra/data/benchmarks (provenance: SOURCES.md there)
HUB_PREFIX = "hub:"  # hub:math500 loads the Hugging Face data set instead of the bundled copy
HUB_DATASETS = {
    "gsm8k": ("openai/gsm8k", "main", "test", "question", "answer"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "aime24": ("math-ai/aime24", None, "test", "problem", "solution"),
    "aime25": ("math-ai/aime25", None, "test", "problem", "answer"),
}




def load(spec: TaskSpec) -> Task:
    return math_task(spec.name, spec.limit, spec.n_test or None, spec.seed, spec.instruction)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        m = re.match(r"\\boxed ([^\s$]+)", text[start:])  # \boxed 5
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None  # unbalanced: no answer


_DECIMAL = re.compile(r"\d\.\d|(?<![\d.])\.\d")  # a decimal number in a gold answer: 3.5, .25
# a decimal prediction against an exact gold must agree to this many places (math-verify's own
# default, 6, accepts 4.666667 for 14/3; 15 is the most a double-precision float carries)
EXACT_GOLD_FLOAT_ROUNDING = 15


# a number as a gold answer: 42, -3, 3.5, .25, 1,000, 14/3, \frac{14}{3}, \dfrac{1}{2}, \frac12
_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?|[-+]?\.\d+|[-+]?\d+/\d+"
                     r"|[-+]?\\[dt]?frac(\{\d+\}\{\d+\}|\d\d)")
# an operation between two operands: 30 * 4, 94+91, 7 - 2, 2^3, 3 \times 4, 6 \div 2 (a leading sign is not)
_OPERATION = re.compile(r"[\d)}]\s*([-+*/×÷^]|\\times|\\cdot|\\div)\s*[\d(\\{]")
# decorations that are not operations: units in \text{}, degrees, percent, dollars
_DECORATION = re.compile(r"\\(text|mathrm|mbox)\{[^{}]*\}|\^\s*\{?\\circ\}?|\\?%|\\\$|\$")


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip().replace(" ", "")) is not None


def restates_an_operation(pred_text: str, answer: str) -> bool:
    """A predicted answer that is an unevaluated operation (30 * 4, 94 + 91) where the gold answer
    is a number: math-verify would evaluate it and call it right, so a model that echoes the
    question would be rewarded. rlextra's rule: such an answer is wrong."""
    if not _is_number(answer):
        return False
    cleaned = _DECORATION.sub(" ", pred_text)
    return not _is_number(cleaned) and _OPERATION.search(cleaned) is not None  # 14/3 is a number


def _timeout() -> int | None:
    """math-verify's timeouts use signal.alarm: main thread only."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse_unboxed(completion: str) -> list:
    """math-verify's own extraction over a whole completion without \\boxed{}: the last LaTeX
    expression ($...$, \\(...\\), after 'final answer is'...), else the last plain expression."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(completion, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=_timeout())


def extract_answer(completion: str) -> str | None:
    """The answer a completion gives: the last \\boxed{} (a truncated box is no answer), else the
    whole final expression math-verify extracts ('$\\frac{14}{3}$' gives '\\frac{14}{3}')."""
    if "\\boxed" in completion or "\\fbox" in completion:
        boxed = last_boxed(completion)  # a truncated/unbalanced box is no answer, not a fallback
        return boxed.strip() if boxed is not None else None
    found = _parse_unboxed(completion)
    return str(found[-1]).strip() if found else None


def grade_math(completion: str, answer: str) -> bool:
    """math-verify: the extracted answer of ``completion`` equals the gold ``answer``.

    A decimal answer matches an exact gold (fraction, surd, integer) only when it is that value
    (to 15 places): '0.5' for '\\frac{1}{2}' is right, '4.666666666' for '\\frac{14}{3}' is not. When
    the gold is itself a decimal, math-verify's default rounding (6 places) applies. When the gold is
    a number, an answer that is still an operation ('30 * 4' for 120) is wrong (rlextra's rule).
    """
    from math_verify import parse, verify

    timeout = _timeout()
    if "\\boxed" in completion or "\\fbox" in completion:
        pred_text = extract_answer(completion)
        if pred_text is None:
            return False
        pred = parse(f"${pred_text}$", parsing_timeout=timeout)
    else:
        pred = _parse_unboxed(completion)
        if not pred:
            return False
        pred_text = str(pred[-1])
    if restates_an_operation(pred_text, answer):
        return False
    gold = parse(f"${answer}$", parsing_timeout=timeout)
    if not gold or not pred:
        return pred_text.strip() == answer.strip()
    rounding = 6 if _DECIMAL.search(answer) else EXACT_GOLD_FLOAT_ROUNDING
    return bool(verify(gold, pred, float_rounding=rounding, timeout_seconds=timeout))


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        if not path.is_file():
            raise RLExtraError(f"{path}: no such file")
        import datasets

        return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))
    return [row for _, row in read_jsonl(path)]


def _rows_to_problems(rows: list[dict], source: str, qkey: str = "problem", akey: str = "answer",
                      gsm8k: bool = False, instruction: str = MATH_INSTRUCTION) -> list[Problem]:
    problems = []
    for i, r in enumerate(rows):
        if qkey not in r or akey not in r:
            raise RLExtraError(f"{source}: row {i} lacks '{qkey}' or '{akey}'")
        ans = str(r[akey])
        if gsm8k and "####" in ans:
            ans = ans.split("####")[-1].strip().replace(",", "")
        elif akey == "solution":
            ans = last_boxed(ans) or ans
        problems.append(Problem(f"{r[qkey]} {instruction}" if instruction else str(r[qkey]), ans))
    return problems


def math_task(name_or_path: str, limit: int | None = None, n_test: int | None = None,
              seed: int = 0, instruction: str | None = None) -> Task:
    """A math set from a local JSONL/Parquet (fields problem, answer), a named benchmark, or a
    Hugging Face dataset id. Benchmarks are evaluation sets: train and test are the same list
    unless n_test splits off a held-out part."""
    path = Path(name_or_path)
    instruction = MATH_INSTRUCTION if instruction is None else instruction
    if name_or_path in BUNDLED:
        bundled = bundled_benchmark(name_or_path)
        problems = _rows_to_problems(_read_rows(bundled), str(bundled), instruction=instruction)
        source = f"bundled copy rlextra/data/benchmarks/{bundled.name} (sha256 {_sha256(bundled)[:16]}...)"
    elif path.suffix in (".jsonl", ".json", ".parquet"):
        problems = _rows_to_problems(_read_rows(path), str(path), instruction=instruction)
        source = str(path)
    else:
        import datasets

        hub_name = name_or_path[len(HUB_PREFIX):] if name_or_path.startswith(HUB_PREFIX) else name_or_path
        repo, config, split, q, a = HUB_DATASETS.get(hub_name, (hub_name, None, "test", "problem", "answer"))
        try:
            rows = list(datasets.load_dataset(repo, config, split=split))
        except Exception as exc:  # offline, unknown id, ...
            raise RLExtraError(f"cannot load dataset '{repo}' ({str(exc).splitlines()[0]}); "
                               "pass a local .jsonl with problem/answer fields instead") from None
        problems = _rows_to_problems(rows, repo, q, a, gsm8k=hub_name == "gsm8k", instruction=instruction)
        source = f"hub {repo}" + (f" ({config})" if config else "") + f", split {split}"
    if limit:
        problems = problems[:limit]
    if not problems:
        raise RLExtraError(f"{name_or_path}: no problems")
    if n_test and n_test > len(problems):
        raise RLExtraError(f"--n-test {n_test}: {name_or_path} has only {len(problems)} problems")
    spec = TaskSpec(name=str(name_or_path), limit=limit, seed=seed, n_test=n_test, n_train=0,
                    instruction=instruction)
    if n_test:
        rng = random.Random(seed)
        order = list(range(len(problems)))
        rng.shuffle(order)
        test = [problems[i] for i in order[:n_test]]
        train = [problems[i] for i in order[n_test:]]
    else:
        train = test = problems
    return Task(spec, train, test, grade_math, extract_answer, conversational=True, source=source)


def bundled_benchmark(name: str) -> Path:
    """The bundled copy of a benchmark (gsm8k, math500, aime24, aime25)."""
    from importlib.resources import files

    return Path(str(files("rlextra") / "data" / "benchmarks" / BUNDLED[name]))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


