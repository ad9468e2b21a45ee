"""Signals end rlextra quietly: a second signal always ends the process, even when the first one's
exception was lost, and a Ctrl-C while the command's modules load exits 130 without a traceback."""

import os
import signal
import subprocess
import sys
import time

import pytest

SWALLOWS_THE_FIRST = """
import sys, time
from rlextra.io import interruptible
with interruptible():
    try:
        print("ready", flush=True)  # inside the try: the signal may come the moment the line is out
        time.sleep(10)
    except KeyboardInterrupt:  # where Python would swallow it: a weakref callback, a __del__
        print("swallowed", flush=True)
    time.sleep(10)
print("survived", flush=True)
"""


def _line(proc, deadline=20.0):
    t0 = time.monotonic()
    line = proc.stdout.readline()
    assert time.monotonic() - t0 < deadline
    return line.strip()


@pytest.mark.parametrize("first, second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT),
                                           (signal.SIGINT, signal.SIGTERM)])
def test_a_second_signal_ends_the_process_even_when_the_first_was_swallowed(first, second):
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWS_THE_FIRST], stdout=subprocess.PIPE, text=True)
    try:
        assert _line(proc) == "ready"
        proc.send_signal(first)
        assert _line(proc) == "swallowed"
        proc.send_signal(second)
        proc.wait(timeout=5)
        assert proc.returncode == -second  # ended by the signal's default action, no traceback
        assert "survived" not in proc.stdout.read()
    finally:
        proc.kill()


@pytest.mark.parametrize("delay", [0.15, 0.3])
def test_ctrl_c_while_the_command_loads_is_quiet_and_130(delay):
    proc = subprocess.Popen([sys.executable, "-m", "rlextra", "analyze", "weights", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # it had loaded and printed its help before the signal came
        return
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() in ("rlextra: interrupted; nothing was written", "")
