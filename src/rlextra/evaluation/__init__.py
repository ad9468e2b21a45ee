"""Evaluation: a decoder's completions on a task, graded and summarised; held-out accuracy."""

from rlextra.evaluation.evaluate import evaluate, generations_path, heldout_accuracy, write_atomic

__all__ = ["evaluate", "generations_path", "heldout_accuracy", "write_atomic"]
