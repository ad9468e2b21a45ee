"""The RLVR harness: verifiable tasks, small models, GRPO training through TRL, and RL-Extra.

``train``/``TrainConfig`` run (or resume) GRPO into a checkpoint series; ``RLExtraCallback`` (with
``SafeMode``) plugs the RL-Extra jump into any transformers/TRL trainer. Imported eagerly, although
transformers takes seconds to import: the function ``train`` shares its name with the module
``rlextra.rl.train``, which a lazy export would let the submodule shadow. So ``rlextra.rl.train``
is the function; the module's other names come with ``from rlextra.rl.train import ...``.
"""

from rlextra.rl.rl_extra import RLExtraCallback, SafeMode
from rlextra.rl.train import TrainConfig, train

__all__ = ["RLExtraCallback", "SafeMode", "TrainConfig", "train"]
