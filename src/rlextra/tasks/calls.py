"""Grading a code completion that cannot reach its own verdict: the candidate and the check run apart.

Why: when the completion runs in the same process as the tests, before them, it can read or
rewrite whatever decides the grade (a pass token among its own code's constants, ``check`` itself,
``AssertionError``, an object whose ``__eq__`` always says True). In RL the policy searches for
exactly that. So (rlextra's design):

* the **candidate** (the problem's prompt and the completion) runs in one sandboxed process and then
  serves calls: each request names a function it defined and carries its arguments;
* the **check** (the benchmark's own test code, trusted) runs in another sandboxed process, where
  the function under test is a proxy: each call crosses to the candidate and back;
* arguments and results cross as **plain values only** (None, bool, int, float, str, bytes,
  complex and lists, tuples, dicts, sets of them), encoded as tagged JSON and rebuilt as fresh
  built-in objects on the other side: no pickle, no object of the candidate's own class ever
  reaches the check;
* the **verdict** is the check process's last message to rlextra, on its own pipe. The candidate's
  process has no pipe to rlextra but the one for its answers, holds no secret, and cannot see or
  open the check's process: each runs as its own uid (rlextra as root) or in its own process
  namespace (bubblewrap). Where neither holds, grading is refused (``allow_shared_uid`` turns that
  protection off explicitly).

A completion that exits, crashes or hangs before or while serving fails ("error", "timeout" or
"memory"); a wrong answer or an assertion fails ("failed"); exceptions raised by the candidate's
function fail as "error".
"""

from __future__ import annotations

import json
import time

from rlextra.errors import RLExtraError

# Shared by both programs (exec'd there) and by the tests: the only values that cross.
ENCODING = r'''
def _enc(x):
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return x if x == x and x not in (float("inf"), float("-inf")) else {"f": repr(x)}
    if t is list:
        return [_enc(v) for v in x]
    if t is tuple:
        return {"t": [_enc(v) for v in x]}
    if t is dict:
        return {"d": [[_enc(k), _enc(v)] for k, v in x.items()]}
    if t is set:
        return {"s": [_enc(v) for v in x]}
    if t is frozenset:
        return {"fs": [_enc(v) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t is complex:
        return {"c": [_enc(x.real), _enc(x.imag)]}
    raise TypeError(t.__name__ + " is not a plain value (None, bool, int, float, str, bytes, complex, "
                    "and lists, tuples, dicts, sets of them)")


def _dec(x):
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is list:
        return [_dec(v) for v in x]
    if t is dict and len(x) == 1:
        (k, v), = x.items()
        if k == "f" and v in ("inf", "-inf", "nan"):
            return float(v)
        if k == "t" and type(v) is list:
            return tuple(_dec(e) for e in v)
        if k == "d" and type(v) is list:
            return {_dec(a): _dec(b) for a, b in v}
        if k == "s" and type(v) is list:
            return set(_dec(e) for e in v)
        if k == "fs" and type(v) is list:
            return frozenset(_dec(e) for e in v)
        if k == "b" and type(v) is str:
            return bytes.fromhex(v)
        if k == "c" and type(v) is list and len(v) == 2:
            return complex(_dec(v[0]), _dec(v[1]))
    raise ValueError("not an encoded plain value")
'''

# Both programs keep their stdin/stdout as the channel to rlextra and point fd 0 at /dev/null and
# fd 1 at stderr before any other code runs, so a print or input() of the code never touches it.
_CHANNEL = r'''
import os as _os, sys as _sys, json as _json
_ch_in = _os.fdopen(_os.dup(0), "r", encoding="utf-8")
_ch_out = _os.fdopen(_os.dup(1), "w", encoding="utf-8")
_os.dup2(_os.open(_os.devnull, _os.O_RDONLY), 0)
_os.dup2(2, 1)


def _send(msg):
    _ch_out.write(_json.dumps(msg) + "\n")
    _ch_out.flush()
'''

_SERVER = r'''
_ns = {"__name__": "__main__"}
try:
    exec(compile(_SOURCE, "candidate.py", "exec"), _ns)
    _send({"ready": True})
except BaseException as _e:
    _send({"ready": False, "error": (type(_e).__name__ + ": " + str(_e))[:500]})
    _os._exit(1)
for _line in _ch_in:
    try:
        _req = _json.loads(_line)
        _res = {"ok": _enc(_ns[_req["name"]](*_dec(_req["args"]), **_dec(_req["kwargs"])))}
    except BaseException as _e:
        _res = {"error": (type(_e).__name__ + ": " + str(_e))[:500]}
    try:
        _send(_res)
    except (TypeError, ValueError) as _e:
        _send({"error": "result not encodable: " + str(_e)[:200]})
'''

_CHECK = r'''
class CandidateError(Exception):
    """The candidate raised, could not answer, or is gone."""


def _call(_name, *args, **kwargs):
    _send({"op": "call", "name": _name, "args": _enc(list(args)), "kwargs": _enc(kwargs)})
    _line = _ch_in.readline()
    if not _line:
        raise CandidateError("no answer")
    _res = _json.loads(_line)
    if type(_res) is not dict or not ("ok" in _res or "error" in _res):
        raise CandidateError("not an answer")
    if "error" in _res:
        raise CandidateError(str(_res["error"]))
    return _dec(_res["ok"])


class _Proxy:
    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        return _call(self.name, *args, **kwargs)


_status, _detail = "passed", ""
try:
    _run_check()
except CandidateError as _e:
    _status, _detail = "error", str(_e)
except AssertionError as _e:
    _status, _detail = "failed", "AssertionError " + str(_e)
except BaseException as _e:
    _status, _detail = "failed", type(_e).__name__ + ": " + str(_e)
_send({"op": "done", "status": _status, "detail": _detail[:500]})
'''


def candidate_program(source: str) -> str:
    """The candidate's program: run ``source`` (untrusted), then answer calls of its functions."""
    return _CHANNEL + ENCODING + f"_SOURCE = {source!r}\n" + _SERVER


def humaneval_check_program(prompt: str, test: str, entry_point: str) -> str:
    """HumanEval's check: the prompt (signature, docstring, helpers the test may use) and the test's
    ``check``, called on a proxy of the candidate's ``entry_point`` (the name itself is the proxy too,
    as one of the 164 tests compares the candidate with the function by name)."""
    run = (f"def _run_check():\n    _g = {{'__name__': '__check__'}}\n"
           f"    exec(compile({prompt!r}, 'prompt.py', 'exec'), _g)\n"
           f"    _g[{entry_point!r}] = _Proxy({entry_point!r})  # a test that names the function gets the candidate's\n"
           f"    exec(compile({test!r}, 'test.py', 'exec'), _g)\n"
           f"    _g['check'](_Proxy({entry_point!r}))\n")
    return _CHANNEL + ENCODING + run + _CHECK


def assertion_check_program(imports: list[str], asserts: list[str]) -> str:
    """MBPP's check: its imports and asserts, where every name that neither they nor the builtins define
    is a proxy of the candidate's function of that name."""
    code = "\n".join(imports) + "\n" + "\n".join(asserts) + "\n"
    run = ("import builtins as _builtins\n\n\n"
           "class _Names(dict):\n"
           "    def __missing__(self, key):\n"
           "        if hasattr(_builtins, key):\n"
           "            return getattr(_builtins, key)\n"
           "        return _Proxy(key)\n\n\n"
           f"def _run_check():\n    exec(compile({code!r}, 'test.py', 'exec'), _Names(__name__='__check__'))\n")
    return _CHANNEL + ENCODING + run + _CHECK


def grade_by_calls(candidate_source: str, check_source: str, timeout: float = 10.0, *,
                   isolation: str = "auto", allow_shared_uid: bool = False) -> str:
    """Run the candidate and the check apart, relay the check's calls, and return the check's verdict:
    passed, failed, error, timeout or memory (module docstring)."""
    from rlextra.sandbox import isolated_from_each_other, start_program

    if not allow_shared_uid and not isolated_from_each_other(isolation):
        raise RLExtraError("code grading refused: the candidate and the check would run as the same user without "
                           "bubblewrap, so the candidate could reach the check's verdict; install bubblewrap, run as "
                           "root (each program gets its own uid), or pass allow_shared_uid=True")
    deadline = time.monotonic() + timeout
    cand = start_program(candidate_program(candidate_source), timeout, isolation=isolation)
    check = None
    try:
        check = start_program(check_source, timeout, isolation=isolation)
        ready = _message(cand.read_line(deadline))
        if ready is not None and ready.get("ready") is not True:
            return "memory" if str(ready.get("error", "")).startswith("MemoryError") else "error"
        if ready is None:
            return _failure(cand, deadline)
        while True:
            line = check.read_line(deadline)
            msg = _message(line)
            if msg is None:
                return "timeout" if time.monotonic() >= deadline else "error"
            if msg.get("op") == "done":
                status = msg.get("status")
                if status == "error" and str(msg.get("detail", "")).startswith("MemoryError"):
                    return "memory"  # the candidate's function ran out of memory
                return status if status in ("passed", "failed", "error") else "error"
            if msg.get("op") != "call":
                return "error"
            answer = cand.read_line(deadline) if cand.send(line) else None
            if answer is None:
                return _failure(cand, deadline)
            if not check.send(answer):
                return "error"
    finally:
        cand.close()
        if check is not None:
            check.close()


def _message(line: str | None) -> dict | None:
    if line is None:
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _failure(cand, deadline: float) -> str:
    """Why the candidate gave no answer: it ran out of time, of memory, or exited or failed."""
    if time.monotonic() >= deadline:
        return "timeout"
    try:
        cand.proc.wait(timeout=1.0)  # it is exiting: let its last words reach stderr
    except Exception:
        pass
    return "memory" if "MemoryError" in cand.stderr(wait=1.0) else "error"
