"""Extrapolation of a run to future steps without training."""

from rlextra.extrapolate.weights import extrapolate_weights, is_norm_weight

__all__ = ["extrapolate_weights", "is_norm_weight"]
