"""``rlextra.code_tasks`` is now ``rlextra.tasks.code``; this name stays for imports users already have.

The module object is the same one, so attributes (and a test's monkeypatching) behave identically.
"""

import sys

from rlextra.tasks import code as _code

sys.modules[__name__] = _code
