"""Evaluation: a decoder's completions on a task, graded and summarised; held-out accuracy."""

from rlextra.evaluation.evaluate import (check_summary_and_generations, eval_mode, evaluate, evaluate_checkpoint,
                                         generations_path, heldout_accuracy, in_memory_decoder)

__all__ = ["check_summary_and_generations", "eval_mode", "evaluate", "evaluate_checkpoint", "generations_path",
           "heldout_accuracy", "in_memory_decoder"]
