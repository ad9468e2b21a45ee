"""Generation backends, grading and metrics for checkpoints (and extrapolated checkpoints)."""

from rlextra.evaluation.metrics import pass_at_k, summarize

__all__ = ["pass_at_k", "summarize"]
