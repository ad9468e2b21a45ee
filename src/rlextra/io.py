"""The output guard, atomic writes, signals and JSONL input: every output a command is asked for
(``-o``) goes through here.

Excepted, and written in place under the lock ``claim`` holds on their folder: a training run's own
files (TRL's checkpoints, ``metrics.jsonl``, ``run.json``, the RL-Extra and monitor state), which
the Trainer writes where it trains, and the demo's folder (``fresh_output_dir``).

The promise: an input is never written to; an output is either complete or absent (built beside
the target, renamed into place when complete, removed on any error); an existing target is
replaced only with ``overwrite``; two processes writing one target give one success and one
"already exists"; SIGTERM and SIGHUP unwind like Ctrl-C, so temporary files are removed.

- ``check_output``: resolve a target and refuse it (one-line ``RLExtraError``) when it is, holds
  or sits inside an input, exists without ``overwrite``, or has the wrong kind. Pure: call it
  before loading any model.
- ``atomic_output_dir`` / ``atomic_output_file``: the same check, then an exclusive claim of the
  target (a kernel lock that dies with its process), a temporary folder/file, and the final rename.
- ``write_atomic``: replace one file's content atomically (state files, no guard).
- ``fresh_output_dir``: claim a folder that is written in place (long runs that keep partial
  results), refusing what ``check_output`` refuses.
- ``interruptible``: SIGTERM/SIGHUP raise ``Terminated`` (a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from rlextra.errors import RLExtraError

try:
    import fcntl
except ImportError:  # not POSIX: fall back to an exclusively created marker file
    fcntl = None

_NAME_MAX = 100  # longest target name kept verbatim in a temporary or lock name


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ----------------------------------------------------------------------------- signals
_depth = 0
_saved: dict[int, object] = {}
_pending: int | None = None  # the signal that arrived, until the block ends or its exception is seen
_hook = None  # sys.unraisablehook before the block


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _raise_terminated(signum, frame) -> None:
    # A second signal ends the process at once (the default action, no traceback): the first one's
    # exception may land where Python swallows it (a weakref callback, a __del__), and a process that
    # then ignored every signal could only be stopped with SIGKILL. Temporaries a second signal leaves
    # behind are removed by the next run on the same target.
    global _pending
    for s in _saved:
        signal.signal(s, signal.SIG_DFL)
    _pending = signum
    raise _interrupt(signum)


def _quiet_unraisable(unraisable) -> None:
    """A signal's exception that Python could not raise (it landed in a weakref callback or __del__):
    no "Exception ignored" traceback; the block raises it again where it ends, or at a check_signal."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _pending is not None:
        return
    (_hook or sys.__unraisablehook__)(unraisable)


def check_signal() -> None:
    """A safe point: raise the signal that arrived if its exception was lost (long loops call this)."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise _interrupt(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within this block SIGTERM and SIGHUP raise ``Terminated``; handlers are restored after.

    Ctrl-C raises KeyboardInterrupt as usual, once: after the first of these signals a second one
    ends the process at once, quietly (no traceback). Where Python swallows the first one's exception
    (a weakref callback, a __del__), nothing is printed and the exception is raised again at the next
    ``check_signal`` or where the block ends, so the command still stops as interrupted.
    Only the main thread can own signal handlers; elsewhere, and where the program installed its
    own handlers, this does nothing.
    """
    global _depth, _pending, _hook
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if s is not None and signal.getsignal(s) in (signal.SIG_DFL, None):
                _saved[s] = signal.signal(s, _raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            _saved[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_terminated)
        _pending, _hook = None, sys.unraisablehook
        sys.unraisablehook = _quiet_unraisable
    _depth += 1
    try:
        yield
        if _depth == 1:
            check_signal()  # the block's work ended, but a signal came whose exception was lost
    finally:
        _depth -= 1
        if _depth == 0:
            for s, old in _saved.items():
                signal.signal(s, old)
            _saved.clear()
            sys.unraisablehook, _hook, _pending = _hook or sys.__unraisablehook__, None, None


# ----------------------------------------------------------------------------- the guard
def _short(name: str) -> str:
    """A target's name as used in hidden sibling names, shortened (with a hash) when long."""
    if len(name) <= _NAME_MAX:
        return name
    return f"{name[:_NAME_MAX]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _resolve(path: str | Path, what: str) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # symlink loop
        raise RLExtraError(f"{path}: cannot resolve the {what} path ({exc})") from None


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output(target: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                 kind: str = "dir", option: str = "-o") -> Path:
    """The resolved target, or a one-line error: nothing is written.

    Refused: a target that is an input, sits inside an input folder, or holds an input (replacing
    it would delete the input); an existing target without ``overwrite``; an existing target of
    the other kind (``kind`` is 'dir' or 'file'); the current folder or one above it; a parent
    that is a file. ``option`` names the command-line option in messages.
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    if str(target).strip() == "":
        raise RLExtraError(f"{option}: empty path")
    try:
        str(target).encode("utf-8")
    except UnicodeEncodeError:
        raise RLExtraError(f"{option} {str(target).encode('utf-8', 'surrogateescape')!r}: the path is not valid "
                           "UTF-8; choose a name in UTF-8") from None
    out = _resolve(target, "output")
    for inp in inputs:
        src = _resolve(inp, "input")
        if _contains(src, out) or _contains(out, src):
            raise RLExtraError(f"{out}: {option} would be written into or over input {src}; "
                               "choose another output path")
    if _contains(out, Path.cwd().resolve()):
        raise RLExtraError(f"{out}: {option} is the current folder or holds it; choose a new path")
    if len(out.name.encode()) > 255:
        raise RLExtraError(f"{out}: {option} name is longer than 255 bytes")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RLExtraError(f"{parent}: not a folder, so {option} {out} cannot be created in it")
    if out.is_symlink() or out.exists():
        if kind == "dir" and not out.is_dir():
            raise RLExtraError(f"{out}: {option} exists and is not a folder")
        if kind == "file" and not out.is_file():
            raise RLExtraError(f"{out}: {option} exists and is not a file")
        if not overwrite:
            raise RLExtraError(f"{out}: already exists; pass --overwrite to replace it")
    return out


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p; return the folders it created, deepest first, to remove them on failure."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        try:
            d.mkdir()
        except FileExistsError:
            pass
    return made


def _remove_empty(folders: Sequence[Path]) -> None:
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            break


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _claim(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a hidden lock file beside it) for the block.

    With fcntl the lock is the kernel's: it dies with the process, so a killed run leaves at
    most an empty lock file that the next run reuses. The inode check closes the window in which
    a waiting process could lock a lock file already unlinked by its previous holder.
    """
    lock = target.parent / f".{_short(target.name)}.lock"
    while True:
        if fcntl is None:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise RLExtraError(f"{target}: being written by another process (lock {lock})") from None
            break
        fd = os.open(lock, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RLExtraError(f"{target}: being written by another process (lock {lock}); "
                                   "try again when it has finished") from None
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def remove_stale(target: Path) -> list[Path]:
    """Remove the temporaries (``.NAME.tmp-*``, ``.NAME.old-*``) a killed writer left beside target.

    Call with target's lock held: every writer holds it while its temporaries exist, so any found
    then belong to a writer that died without cleaning up (SIGKILL, power loss). Says so in one line.
    """
    stale = sorted(target.parent.glob(f".{glob_escape(_short(target.name))}.tmp-*")) + \
        sorted(target.parent.glob(f".{glob_escape(_short(target.name))}.old-*"))
    for p in stale:
        _remove(p)
    if stale:
        print(f"rlextra: removed {len(stale)} stale temporar{'y' if len(stale) == 1 else 'ies'} of an "
              f"interrupted run beside {target} ({stale[0].name}{', ...' if len(stale) > 1 else ''})",
              file=sys.stderr, flush=True)
    return stale


def glob_escape(name: str) -> str:
    """A literal name inside a glob pattern."""
    import glob

    return glob.escape(name)


@contextlib.contextmanager
def claim(target: str | Path) -> Iterator[Path]:
    """Hold ``target``'s lock (the one every rlextra writer takes) for a command that writes into it
    in place for a long time, such as a training run: a second such command gets a one-line
    "being written by another process" instead of overwriting the first one's files."""
    out = _resolve(target, "output")
    _make_parents(out.parent)
    with _claim(out):
        yield out


@contextlib.contextmanager
def _atomic(target: str | Path, kind: str, inputs: Sequence[str | Path], overwrite: bool,
            option: str) -> Iterator[Path]:
    out = check_output(target, inputs=inputs, overwrite=overwrite, kind=kind, option=option)
    with interruptible():
        made = _make_parents(out.parent)
        tmp = None
        try:
            with _claim(out):
                # authoritative under the lock: another writer may have finished meanwhile
                out = check_output(out, inputs=inputs, overwrite=overwrite, kind=kind, option=option)
                remove_stale(out)
                tmp = out.parent / f".{_short(out.name)}.tmp-{uuid.uuid4().hex[:8]}"
                if kind == "dir":
                    tmp.mkdir()
                yield tmp
                if kind == "file" and not tmp.exists():
                    raise RuntimeError(f"nothing was written to the temporary file for {out}")
                _replace(tmp, out)
                tmp = None
        except BaseException as exc:
            if tmp is not None:
                _remove(tmp)
                if isinstance(exc, OSError) and isinstance(exc.filename, str) \
                        and exc.filename.startswith(str(tmp)):  # name the target, not the temporary
                    exc.filename = str(out) + exc.filename[len(str(tmp)):]
            _remove_empty(made)
            raise


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back Ctrl-C/SIGTERM/SIGHUP for a few system calls that must not be split."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace(tmp: Path, out: Path) -> None:
    """Move tmp to out; an old out is moved aside first and put back if the move fails."""
    with _signals_deferred():  # never stop between moving the old target aside and the new one in
        _swap(tmp, out)


def _swap(tmp: Path, out: Path) -> None:
    old = None
    if out.is_dir() and not out.is_symlink():
        old = out.parent / f".{_short(out.name)}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_output_dir(target: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                      option: str = "-o") -> contextlib.AbstractContextManager[Path]:
    """``with atomic_output_dir(out, inputs=[...], overwrite=...) as tmp:`` write into tmp.

    Checks the target (``check_output``), claims it exclusively, yields an empty temporary folder
    beside it, and renames that to the target when the block ends without error. On any error
    or signal the temporary folder (and any parent folders created) are removed.
    """
    return _atomic(target, "dir", inputs, overwrite, option)


def atomic_output_file(target: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                       option: str = "-o") -> contextlib.AbstractContextManager[Path]:
    """As ``atomic_output_dir`` for one file: yields a temporary path to write (not yet created)."""
    return _atomic(target, "file", inputs, overwrite, option)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace the content of one file atomically (readers see the old or the new content)."""
    with atomic_output_file(path, overwrite=True) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def fresh_output_dir(target: str | Path, *, inputs: Sequence[str | Path] = (), overwrite: bool = False,
                     option: str = "-o") -> Path:
    """Create an empty folder to be written in place (its partial content is kept on failure).

    The same refusals as ``check_output``; with ``overwrite`` an existing folder is replaced. The
    folder is created with an exclusive mkdir, so of two concurrent runs one gets "already exists".
    """
    out = check_output(target, inputs=inputs, overwrite=overwrite, kind="dir", option=option)
    with interruptible():
        _make_parents(out.parent)
        with _claim(out):
            out = check_output(out, inputs=inputs, overwrite=overwrite, kind="dir", option=option)
            remove_stale(out)
            if out.exists():
                old = out.parent / f".{_short(out.name)}.old-{uuid.uuid4().hex[:8]}"
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            try:
                out.mkdir()
            except FileExistsError:
                raise RLExtraError(f"{out}: already exists; pass --overwrite to replace it") from None
    return out


# ----------------------------------------------------------------------------- input
def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file, or a one-line error naming it."""
    path = Path(path)
    if path.is_dir():
        raise RLExtraError(f"{path}: is a folder; expected a {what}")
    if not path.is_file():
        raise RLExtraError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RLExtraError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_json(path: str | Path, what: str = "JSON file") -> object:
    """A JSON file, or a one-line error naming it."""
    try:
        return json.loads(read_text(path, what))
    except ValueError as exc:
        raise RLExtraError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RLExtraError(f"{path}: JSON nested too deeply to read") from None


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line of a JSONL file."""
    path = Path(path)
    rows = []
    for i, line in enumerate(read_text(path, "JSONL file").splitlines(), 1):
        if line.strip():
            try:
                rows.append((i, json.loads(line)))
            except ValueError as exc:
                raise RLExtraError(f"{path}:{i}: not valid JSON ({exc})") from None
            except RecursionError:
                raise RLExtraError(f"{path}:{i}: JSON nested too deeply to read") from None
    return rows


def append_run_log(path: str | Path, row: dict) -> None:
    """Append one row to a run's own JSONL log (metrics, linearity, rl_extra, lr_auto)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def restore_run_log(path: str | Path, rows: list[dict]) -> None:
    """A resumed run's log is the rows saved with the checkpoint it resumes from: those a stopped run
    wrote after it go (they are written again)."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def truncate_run_log(path: str | Path, last_step: int, key: str = "step") -> None:
    """Drop the rows of a run's own JSONL log written after ``last_step`` (by a run that was stopped
    after its last checkpoint), so a resumed run does not log them twice. A row whose line cannot be
    read (cut off mid-write) is dropped too. No file: nothing to do."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get(key), (int, float)) and row[key] <= last_step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))
