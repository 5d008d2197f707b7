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

from ssogen.engine.guard import EngineGuard, _start_time, child_processes, release_guard


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
Engine = type("Engine", (), {})  # a stand-in for vllm.LLM: any object an engine guard can be tied to
guard = EngineGuard()
resource_tracker.ensure_running()
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
engine = guard.owned_by(Engine())
started = [finalizer.peek()[2][0] for finalizer in _GUARDS.values()]  # (engine, function, args, kwargs)
print(worker.pid, resource_tracker._resource_tracker._pid, *(p.pid for p in started), flush=True)
print(*(pid for p in started for pid in p.args[4:]), flush=True)  # python -c SCRIPT SSOGEN_PID PID:START...
time.sleep(120)
"""


def test_a_ctrl_c_leaves_the_guard_quiet_and_armed_and_multiprocessings_helpers_are_not_guarded() -> None:
    """A terminal's Ctrl-C reaches the guard too (one process group): it printed a KeyboardInterrupt traceback
    (into the command's log) and ended, leaving the engine unguarded. The resource tracker that multiprocessing
    starts with the first engine serves the whole process: it is no engine process to stop."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    worker, tracker, *guards = map(int, owner.stdout.readline().split())
    guarded = [int(process.split(":")[0]) for process in owner.stdout.readline().split()]  # PID:START
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


def test_a_pid_given_to_another_process_since_is_left_alone() -> None:
    """The guard names each process by pid and start time: after an engine process ended on its own, the system
    may give its pid to an unrelated process, which a `kill -9` of ssogen must not bring down."""
    from ssogen.engine.guard import GRACE_S, GUARD_SCRIPT

    engine, stranger = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2))
    try:
        other_start = int(_start_time(stranger.pid) or 0) - 1
        processes = [f"{engine.pid}:{_start_time(engine.pid)}", f"{stranger.pid}:{other_start}"]
        # Its parent is not the pid given (as after ssogen died): the guard stops what it names at once.
        guard = subprocess.run([sys.executable, "-c", GUARD_SCRIPT.replace("GRACE_S", repr(GRACE_S)), "1",
                                *processes], timeout=30, check=False)
        assert guard.returncode == 0 and engine.wait(timeout=10) == -signal.SIGTERM
        assert stranger.poll() is None  # the same pid, another start time: not the process the guard was given
    finally:
        for process in (engine, stranger):
            process.kill()
            process.wait()
