"""ssogen.engine.guard: the processes an engine started end with ssogen; a shut-down engine's guard ends quietly.
(The `kill -9` of a generate with vLLM's own engine process: tests/generate/test_generate.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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


def test_an_engine_that_started_no_process_gets_no_guard() -> None:
    guard = EngineGuard()
    guard.owned_by(FakeEngine())  # vLLM with its V1 multiprocessing off: the engine core runs in-process
    assert child_processes() == guard.before
