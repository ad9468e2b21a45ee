"""One error type for bad input, so the CLI can print it as a single line and exit non-zero."""


class RLExtraError(Exception):
    """A user-facing problem with inputs or options; the message names the file/tensor at fault."""
