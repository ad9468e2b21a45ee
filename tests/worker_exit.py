"""How the torchrun test workers end: together, and without Python's teardown of gloo objects.

At interpreter exit the DDP Reducer (which keeps its own reference to the gloo process group) is
freed while the main thread holds the GIL; ~ProcessGroupGloo joins gloo's worker thread, and that
thread may still be freeing a finished barrier whose tensors need the GIL: both wait forever. This
hung a DDP test for 300 s in CI and once in three tries on a loaded 2-core machine (py-spy:
``~ProcessGroupGloo -> thread::join`` against ``AsyncBarrierWork dtor -> gil_scoped_acquire``).
The workers' results are written and closed before this runs, so skipping the teardown loses nothing.
Measured on that machine (2026-12-05, two training jobs beside it): the DDP worker with the teardown
hung in 2 of 30 runs, with ``leave`` in 0 of 60.
"""

from __future__ import annotations

import faulthandler
import os
import sys

HANG_SECONDS = 240  # below the tests' 300 s timeout: a hang ends with every thread's stack in the rank's log


def arm_watchdog() -> None:
    """Dump every thread's Python stack and exit if the worker is still running after HANG_SECONDS."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)


def leave(dist) -> None:
    """Meet the peers (none tears gloo down while another still talks to it), then exit at once."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
