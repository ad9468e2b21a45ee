"""Linearity analyses over a checkpoint series (weights now; outputs build on the same kernel)."""

from rlextra.analysis.report import merge_weight_reports
from rlextra.analysis.weights import analyze_weights, parse_shard

__all__ = ["analyze_weights", "merge_weight_reports", "parse_shard"]
