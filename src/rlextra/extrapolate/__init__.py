"""Extrapolation of a run to future steps without training."""

from rlextra.extrapolate.weights import EXTRAPOLATE_CHUNK_SIZE, Extrapolation, extrapolate_weights, is_norm_weight

__all__ = ["EXTRAPOLATE_CHUNK_SIZE", "Extrapolation", "extrapolate_weights", "is_norm_weight"]
