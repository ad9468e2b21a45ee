"""One error type for bad input, so the CLI can print it as a single line and exit non-zero.

Anything a user can pass in (a file, a folder, an option, an argument of a public function) that is
wrong raises ``RLExtraError`` with the file, tensor or option named. A plain ``ValueError`` is left
only for internal misuse of the low-level kernels (``linefit``) and helpers' own arguments: a bug,
which the CLI reports as an internal error.
"""


class RLExtraError(Exception):
    """A user-facing problem with inputs or options; the message names the file/tensor at fault."""
