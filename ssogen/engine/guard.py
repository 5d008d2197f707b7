"""vLLM's engine processes end with ssogen, however ssogen ends.

With vLLM's V1 multiprocessing (its default) the engine core is a process of its own, which vLLM stops when the
engine shuts down, on Ctrl-C and on `kill`. After a `kill -9` of ssogen (or the out-of-memory killer) it stayed,
idle, holding the model's memory: on a GPU, the memory that the rerun then needs. `EngineGuard` notes the child
processes that building an engine started (not multiprocessing's resource tracker, which the whole process shares)
and hands them to a small guard process, which gets SIGTERM when ssogen dies (Linux's parent-death signal) and then
stops them: SIGTERM, and SIGKILL after a grace period. It ignores Ctrl-C, which a terminal sends to ssogen's whole
process group. Shutting the engine down (or its collection) ends the guard first. Linux only; elsewhere nothing is
guarded."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
import weakref
from typing import Any

# The guard: argv = ssogen's pid, then PID:START of each process to stop (START: its start time, field 22 of
# /proc/PID/stat, so that a pid the system has since given to another process is left alone). It arms the
# parent-death signal itself (no preexec_fn, which may deadlock in a process with threads, as vLLM's is), after its
# handler is in place.
GUARD_SCRIPT = r"""
import ctypes, os, signal, sys, time
parent, processes = int(sys.argv[1]), [tuple(p.split(":")) for p in sys.argv[2:]]
def alive(process):
    pid, start = process
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and fields[19] == start
def stop(*_):
    for signum, grace in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid, _ in filter(alive, processes):
            try:
                os.kill(int(pid), signum)
            except ProcessLookupError:  # ended meanwhile
                continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(map(alive, processes)):
            time.sleep(0.1)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: ssogen, not the guard, acts on it
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:  # ssogen died before the signal was armed
    stop()
while True:
    signal.pause()
"""
GRACE_S = 10.0  # for vLLM to stop its own workers on SIGTERM
_GUARDS: weakref.WeakKeyDictionary[Any, weakref.finalize[Any, Any]] = weakref.WeakKeyDictionary()


# The command line of the helpers multiprocessing starts once per process, for every later use (its resource tracker,
# its fork server): not the engine's, and never to be stopped while ssogen runs.
_SHARED_HELPER = b"from multiprocessing."


def child_processes() -> set[int]:
    """The pids of this process's children (of every thread of it)."""
    found: set[int] = set()
    for listing in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        try:
            with open(listing) as children:
                found.update(int(pid) for pid in children.read().split())
        except OSError:  # a thread that ended meanwhile
            continue
    return found


class EngineGuard:
    """Made before an engine is built; `owned_by(engine)` guards the processes started since. In one expression,
    `EngineGuard().owned_by(build())`, the guard is made first: a callee is evaluated before its arguments."""

    def __init__(self) -> None:
        self.before = child_processes()

    def owned_by(self, engine: Any) -> Any:
        started = [f"{pid}:{start}" for pid in sorted(child_processes() - self.before)
                   if not _shared_helper(pid) and (start := _start_time(pid))]
        # The parent-death signal comes when the thread that started the guard ends: only the main thread's lasts.
        if started and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
            guard = subprocess.Popen([sys.executable, "-c", GUARD_SCRIPT.replace("GRACE_S", repr(GRACE_S)),
                                      str(os.getpid()), *started],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
            _GUARDS[engine] = weakref.finalize(engine, _end_guard, guard)
        return engine


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot): with its pid, what names it (None: it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _shared_helper(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return _SHARED_HELPER in cmdline.read()
    except OSError:  # ended meanwhile
        return True


def release_guard(engine: Any) -> None:
    """The engine is shut down: its guard ends, leaving its (former) processes alone."""
    try:
        finalizer = _GUARDS.pop(engine, None)
    except TypeError:  # an object without weak references (a stand-in `vllm.LLM`) has no guard
        return
    if finalizer is not None:
        finalizer()


def _end_guard(guard: subprocess.Popen[bytes]) -> None:
    guard.kill()
    guard.wait()
