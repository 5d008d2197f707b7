"""ssogen.engine.guard: the processes an engine started end with ssogen; a shut-down engine's guard ends quietly.
(The `kill -9` of a generate with vLLM's own engine process: tests/generate/test_generate.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from ssogen.engine.guard import EngineGuard, child_processes, release_guard


class FakeEngine:
    """What `owned_by` is given: any object (the guard ends with it)."""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_shutting_the_engine_down_ends_its_guard_and_leaves_the_processes_alone() -> None:
    guard = EngineGuard()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        engine = guard.owned_by(FakeEngine())
        guards = child_processes() - guard.before - {worker.pid}
        assert len(guards) == 1 and all(map(_running, guards))  # one guard, for the one process started
        release_guard(engine)
        release_guard(engine)  # twice is fine
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_running, guards)):
            time.sleep(0.05)
        assert not any(map(_running, guards)) and worker.poll() is None
    finally:
        worker.kill()
        worker.wait()


def test_releasing_an_object_that_takes_no_weak_reference_is_a_no_op() -> None:
    """`shutdown_vllm_llm` releases the guard of whatever it is given: a stand-in `vllm.LLM` (a SimpleNamespace, as
    in tests/engine/test_close.py) raised "cannot create weak reference" there."""
    release_guard(SimpleNamespace())


def test_an_engine_that_started_no_process_gets_no_guard() -> None:
    guard = EngineGuard()
    guard.owned_by(FakeEngine())  # vLLM with its V1 multiprocessing off: the engine core runs in-process
    assert child_processes() == guard.before


# A process that builds a "engine" (a sleeping child) with a guard, starts multiprocessing's resource tracker
# meanwhile (vLLM does so on its first engine), prints the pids and waits to be killed.
OWNER = """
import subprocess, sys, time
from multiprocessing import resource_tracker
from ssogen.engine.guard import _GUARDS, EngineGuard
class Engine: pass
guard = EngineGuard()
resource_tracker.ensure_running()
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
engine = guard.owned_by(Engine())
started = [finalizer.peek()[2][0] for finalizer in _GUARDS.values()]  # (engine, function, args, kwargs)
print(worker.pid, resource_tracker._resource_tracker._pid, *(p.pid for p in started), flush=True)
print(*(pid for p in started for pid in p.args[4:]), flush=True)  # python -c SCRIPT SSOGEN_PID PIDS...
time.sleep(120)
"""


def test_a_ctrl_c_leaves_the_guard_quiet_and_armed_and_multiprocessings_helpers_are_not_guarded() -> None:
    """A terminal's Ctrl-C reaches the guard too (one process group): it printed a KeyboardInterrupt traceback
    (into the command's log) and ended, leaving the engine unguarded. The resource tracker that multiprocessing
    starts with the first engine serves the whole process: it is no engine process to stop."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    worker, tracker, *guards = map(int, owner.stdout.readline().split())
    guarded = list(map(int, owner.stdout.readline().split()))
    try:
        assert len(guards) == 1 and guarded == [worker], (tracker, guarded)
        time.sleep(1.0)  # the guard has set its handlers
        os.kill(guards[0], signal.SIGINT)
        time.sleep(0.5)
        assert _running(guards[0])
        owner.kill()  # as `kill -9` of ssogen: the guard stops the worker
        _, errors = owner.communicate(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _running(worker):
            time.sleep(0.05)
        assert not _running(worker) and "KeyboardInterrupt" not in errors, errors
    finally:
        for pid in (worker, *guards):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
