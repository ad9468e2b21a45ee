"""rlextra: measure and exploit the linearity of RLVR training.

See the README for the CLI; the public library entry points are
``rlextra.checkpoints.load_series``, ``rlextra.analysis`` (``analyze_weights``,
``merge_weight_reports``, ``analyze_outputs``, ``analyze_activations``),
``rlextra.extrapolate.extrapolate_weights`` and ``rlextra.rl`` (``train``, ``TrainConfig``,
``RLExtraCallback``, ``SafeMode``).
"""

__version__ = "0.1.0"
