"""rlextra: measure and exploit the linearity of RLVR training.

See the README for the CLI; the public library entry points are
``rlextra.checkpoints.load_series``, ``rlextra.analysis.analyze_weights`` and
``rlextra.extrapolate.extrapolate_weights``.
"""

__version__ = "0.1.0"
