"""Linearity analyses over a checkpoint series: weights, token outputs and activations, all read
off the same streaming line-fit kernel."""

from rlextra.analysis.activations import analyze_activations
from rlextra.analysis.outputs import analyze_outputs
from rlextra.analysis.report import merge_weight_reports
from rlextra.analysis.weights import analyze_weights, parse_shard

__all__ = ["analyze_activations", "analyze_outputs", "analyze_weights", "merge_weight_reports", "parse_shard"]
