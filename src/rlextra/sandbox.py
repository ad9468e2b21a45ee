"""Run an untrusted Python program (a model's answer to a code task) and report what it did.

The one place where rlextra runs code it did not write, so it is built as a security component:

* **The floor, on every machine:** a separate process in its own session and process group; limits
  on CPU seconds, address space, file size, open files and (as an unprivileged user) processes; an
  empty temporary working folder, removed afterwards; a scrubbed environment (no tokens or keys of
  the parent), with a marker by which every process the program starts is found and killed at the
  end, even one that left the process group; stdin and the captured output bounded. When rlextra
  runs as root, each program runs as its own unused uid (drawn from 200000-299999, no account), so
  that the process limit counts its processes alone (a fork bomb's leftovers do not starve the next
  run, nor one run another running beside it) and the file system's permissions protect the rest.
* **Isolation where the machine allows it:** bubblewrap (a Debian package, ``bwrap``): new
  namespaces for the network (no network at all), processes (the program cannot see or signal the
  host's), IPC and UTS; a read-only view of the file system apart from the working folder and a
  private /tmp; the process namespace dies with its parent.

``ProgramResult.layers`` records which of these were active. ``isolation="auto"`` uses bubblewrap and
fails closed: where bubblewrap cannot run, it refuses in one line that names what is missing; "none"
runs on the floor alone, and must be asked for explicitly.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlextra.errors import RLExtraError

OUTPUT_LIMIT = 1 << 20  # bytes of stdout and of stderr kept (the rest is dropped and the pipe closed)
STDIN_LIMIT = 16 << 20  # bytes a program may be given on stdin
FILE_LIMIT = 64 << 20  # largest file a program may write
OPEN_FILES = 64
PROCESSES = 64  # processes of the sandbox user (applies when the program runs as an unprivileged user)
SANDBOX_UIDS = range(200_000, 300_000)  # as root, each run gets one of these uids (no account behind it)
MARKER = "RLEXTRA_SANDBOX_ID"
STATUSES = ("ok", "error", "timeout", "memory")


@dataclass
class ProgramResult:
    status: str  # ok, error, timeout, memory
    stdout: str
    stderr: str
    returncode: int | None
    seconds: float
    truncated: bool = False  # stdout or stderr passed OUTPUT_LIMIT
    layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


_BWRAP_WORKS: bool | None = None


def bubblewrap_available() -> bool:
    """Whether ``bwrap`` is installed and can create its namespaces here (checked once)."""
    global _BWRAP_WORKS
    if _BWRAP_WORKS is None:
        exe = shutil.which("bwrap")
        _BWRAP_WORKS = bool(exe) and subprocess.run(
            [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--die-with-parent",
             "true"], capture_output=True, timeout=30).returncode == 0
    return _BWRAP_WORKS


def _world_executable(path: str) -> bool:
    """Whether any user may run this file (every folder on its path is searchable by others)."""
    p = Path(os.path.realpath(path))
    try:
        if not p.stat().st_mode & stat.S_IXOTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


def _interpreter(drop: bool) -> str:
    """The Python that runs the program: this one, unless the sandbox user cannot reach it."""
    if not drop or _world_executable(sys.executable):
        return sys.executable
    for name in ("python3", "python"):
        exe = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if exe and _world_executable(exe):
            return exe
    raise RLExtraError("sandbox: no Python interpreter that an unprivileged user may run (install python3 "
                       "system-wide)")


def _limits(timeout: float, memory_mb: int, uid: int | None):
    """The preexec function: a new session, resource limits, then (as root) the run's own uid."""
    cpu = int(timeout) + 1

    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
    return apply


def _reader(stream, sink: list, cap: int, flags: dict) -> None:
    """Read a pipe into sink up to cap bytes; past it, stop reading and close the pipe (the program
    gets SIGPIPE), so that 1 GB of output costs neither memory nor time."""
    size = 0
    try:
        while True:
            block = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not block:
                break
            if size + len(block) > cap:
                sink.append(block[: cap - size])
                flags["truncated"] = True
                break
            sink.append(block)
            size += len(block)
    except (OSError, ValueError):
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _kill_until_gone(kill, wait: float = 2.0) -> None:
    """Call ``kill()`` (it SIGKILLs what it finds and says how many) until it finds none or ``wait``
    seconds pass: a fork bomb's dying processes would otherwise still count against the next run's
    process limit."""
    deadline = time.monotonic() + wait
    while kill() and time.monotonic() < deadline:
        time.sleep(0.02)


def _kill_marked(marker: str, wait: float = 2.0) -> None:
    """SIGKILL every process whose environment carries this run's marker (a program that left its
    process group, such as a double-forked daemon), and wait until they are gone."""
    _kill_until_gone(lambda: _signal_marked(marker), wait)


def _kill_where(matches) -> int:
    """SIGKILL every other process for which ``matches(pid)`` holds (it reads /proc; a process that
    went away meanwhile does not count); how many were found."""
    found = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            hit = matches(entry)
        except (OSError, ValueError):
            continue
        if hit:
            found += 1
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    return found


def _signal_marked(marker: str) -> int:
    """SIGKILL the marked processes; how many were found."""
    needle = f"{MARKER}={marker}".encode()

    def marked(pid: str) -> bool:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    return _kill_where(marked)


def _signal_uid(uid: int) -> int:
    """SIGKILL every process whose real or effective uid is the run's own (as root each run has one no
    one else uses, so this finds what dropped the marker: a daemon that execs with an empty
    environment); how many were found. A zombie (dead, its parent yet to reap it) is left alone."""
    def owned(pid: str) -> bool:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(x.split(":", 1) for x in f if x.startswith(("Uid:", "State:")))
        return fields.get("State", "").split()[:1] != ["Z"] and str(uid) in fields.get("Uid", "").split()[:2]
    return _kill_where(owned)


def _stop(proc: subprocess.Popen, marker: str, uid: int | None = None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    _kill_marked(marker)
    if uid is not None:
        _kill_until_gone(lambda: _signal_uid(uid))
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class _Launch:
    """What one sandboxed program runs with: its command, environment, folder, uid and layers."""

    cmd: list[str]
    env: dict[str, str]
    work: Path
    uid: int | None
    layers: list[str]
    marker: str
    timeout: float
    memory_mb: int


def check_arguments(timeout: float, memory_mb: int, isolation: str) -> None:
    """The one check of a sandbox run's limits and isolation (refused here, before anything runs)."""
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= 3600):
        raise RLExtraError(f"sandbox timeout {timeout}: must be in (0, 3600] seconds")
    if not (isinstance(memory_mb, int) and 32 <= memory_mb <= 1 << 20):
        raise RLExtraError(f"sandbox memory {memory_mb} MB: must be an integer >= 32")
    if isolation not in ("auto", "bwrap", "none"):
        raise RLExtraError(f"sandbox isolation '{isolation}': expected auto, bwrap or none")
    if isolation in ("bwrap", "auto") and not bubblewrap_available():
        why = "not installed" if not shutil.which("bwrap") else "installed but cannot create its namespaces"
        raise RLExtraError(f"sandbox isolation {isolation}: bubblewrap is {why} here, and without it a program keeps "
                           "the network and a shared /tmp; install it (apt-get install bubblewrap) or ask for the "
                           "floor alone explicitly (isolation='none', --sandbox-isolation none)")


def planned_layers(isolation: str = "auto") -> list[str]:
    """The layers a program run with ``isolation`` gets on this machine (what ``ProgramResult.layers``
    records)."""
    drop = os.geteuid() == 0
    layers = ["session", "rlimits", "tmpdir", "scrubbed-env", "marker-kill"] + (["own-uid"] if drop else [])
    return layers + (["bubblewrap:no-network,pid,ipc,uts,read-only-fs"] if isolation in ("bwrap", "auto") else [])


def _prepare(source: str, timeout: float, memory_mb: int, isolation: str) -> _Launch:
    """The program's folder (its source in main.py), uid, environment and command, layers recorded."""
    use_bwrap = isolation in ("bwrap", "auto")  # check_arguments refused both where bubblewrap cannot run
    drop = os.geteuid() == 0
    uid = SANDBOX_UIDS[uuid.uuid4().int % len(SANDBOX_UIDS)] if drop else None
    layers = planned_layers(isolation)
    marker = uuid.uuid4().hex
    work = Path(tempfile.mkdtemp(prefix="rlextra-sandbox-"))
    try:
        (work / "main.py").write_text(source, encoding="utf-8", errors="replace")
        if uid is not None:
            os.chown(work, uid, uid)
            os.chown(work / "main.py", uid, uid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", MARKER: marker}
        python = _interpreter(drop)
        cmd = [python, "-I", "-S", "main.py"] if not use_bwrap else [python, "-I", "-S", str(work / "main.py")]
        if use_bwrap:
            cmd = [shutil.which("bwrap"), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                   "--bind", str(work), str(work), "--chdir", str(work), "--unshare-all", "--die-with-parent",
                   "--new-session", "--clearenv", *[a for k, v in env.items() for a in ("--setenv", k, v)], *cmd]
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _Launch(cmd, env, work, uid, layers, marker, timeout, memory_mb)


def _popen(launch: _Launch) -> subprocess.Popen:
    return subprocess.Popen(launch.cmd, cwd=launch.work, env=launch.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_limits(launch.timeout, launch.memory_mb, launch.uid), close_fds=True)


def isolated_from_each_other(isolation: str = "auto") -> bool:
    """Whether two programs run at once cannot reach each other's processes: each has its own uid
    (rlextra runs as root) or its own process namespace (bubblewrap)."""
    return os.geteuid() == 0 or (isolation in ("bwrap", "auto") and bubblewrap_available())


class RunningProgram:
    """A sandboxed program to talk to through its stdin and stdout (binary pipes), with every layer of
    ``run_program``; ``close()`` stops it and every process it started, and removes its folder.
    Its stderr is collected (up to OUTPUT_LIMIT) into ``stderr()``."""

    def __init__(self, launch: _Launch) -> None:
        self.launch = launch
        self.proc = _popen(launch)
        self._err: list[bytes] = []
        self._flags = {"truncated": False}
        self._reader = threading.Thread(target=_reader, args=(self.proc.stderr, self._err, OUTPUT_LIMIT, self._flags),
                                        daemon=True)
        self._reader.start()
        self._buffer = b""
        self.closed = False

    @property
    def layers(self) -> list[str]:
        return self.launch.layers

    def send(self, line: str) -> bool:
        """Write one line; False when the program no longer reads."""
        try:
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def read_line(self, deadline: float, limit: int = OUTPUT_LIMIT) -> str | None:
        """The next line of its stdout, or None when it closed stdout, passed ``limit`` bytes in one line,
        or ``deadline`` (time.monotonic) came first."""
        import select

        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._buffer) > limit:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            block = os.read(fd, 65536)
            if not block:
                return None
            self._buffer += block
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def stderr(self, wait: float = 0.0) -> str:
        """What it wrote to stderr so far (after up to ``wait`` seconds for the pipe to close)."""
        if wait:
            self._reader.join(timeout=wait)
        return b"".join(self._err).decode("utf-8", "replace")

    def close(self) -> int | None:
        """Stop the program and everything it started; its exit code (None if it was still running)."""
        if self.closed:
            return self.proc.returncode
        self.closed = True
        code = self.proc.poll()
        _stop(self.proc, self.launch.marker, self.launch.uid)
        self._reader.join(timeout=2)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.launch.work, ignore_errors=True)
        return code


def start_program(source: str, timeout: float = 5.0, memory_mb: int = 512, *,
                  isolation: str = "auto") -> RunningProgram:
    """Start ``source`` in the sandbox (the layers of ``run_program``) for a conversation over its
    stdin and stdout; the caller closes it. ``timeout`` bounds its CPU seconds; wall time is the
    caller's (``read_line``'s deadline)."""
    check_arguments(timeout, memory_mb, isolation)
    return RunningProgram(_prepare(source, timeout, memory_mb, isolation))


def run_program(source: str, stdin: str = "", timeout: float = 5.0, memory_mb: int = 512, *,
                isolation: str = "auto") -> ProgramResult:
    """Run ``source`` as a Python program with ``stdin``; at most ``timeout`` seconds (wall and CPU)
    and ``memory_mb`` of address space. Never raises for what the program does; bad arguments are a
    one-line RLExtraError. ``isolation``: auto or bwrap (bubblewrap; refused where it cannot run), none
    (the floor alone, asked for explicitly)."""
    check_arguments(timeout, memory_mb, isolation)
    data = stdin.encode("utf-8", "replace")
    if len(data) > STDIN_LIMIT:
        raise RLExtraError(f"sandbox stdin of {len(data)} bytes: at most {STDIN_LIMIT}")
    launch = _prepare(source, timeout, memory_mb, isolation)
    try:
        t0 = time.monotonic()
        proc = _popen(launch)
        out: list[bytes] = []
        err: list[bytes] = []
        flags = {"truncated": False}
        readers = [threading.Thread(target=_reader, args=(proc.stdout, out, OUTPUT_LIMIT, flags), daemon=True),
                   threading.Thread(target=_reader, args=(proc.stderr, err, OUTPUT_LIMIT, flags), daemon=True)]
        for t in readers:
            t.start()

        def feed() -> None:
            try:
                proc.stdin.write(data)
            except (BrokenPipeError, OSError, ValueError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _stop(proc, launch.marker, launch.uid)  # the group, every marked process and the run's uid
        for t in readers:
            t.join(timeout=2)
        seconds = time.monotonic() - t0
        stdout = b"".join(out).decode("utf-8", "replace")
        stderr = b"".join(err).decode("utf-8", "replace")
        code = proc.returncode
        if timed_out or code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            status = "timeout"
        elif code != 0 and "MemoryError" in stderr:
            status = "memory"
        else:
            status = "ok" if code == 0 else "error"
        return ProgramResult(status, stdout, stderr, code, round(seconds, 4), flags["truncated"], launch.layers)
    finally:
        shutil.rmtree(launch.work, ignore_errors=True)
