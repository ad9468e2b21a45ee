"""The ``rlextra`` command (and ``python -m rlextra``): a Ctrl-C while the command's modules load ends it
quietly with exit code 130, as a Ctrl-C later does, instead of a traceback from inside an import."""

import os
import signal
import sys


def run() -> None:
    def early(signum, frame) -> None:
        sys.stderr.write("rlextra: interrupted; nothing was written\n")
        os._exit(130)

    previous = signal.signal(signal.SIGINT, early)
    from rlextra.cli import main

    try:
        signal.signal(signal.SIGINT, previous)
        code = main()
    except KeyboardInterrupt:  # in the instant between the two handlers
        sys.stderr.write("rlextra: interrupted; nothing was written\n")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
