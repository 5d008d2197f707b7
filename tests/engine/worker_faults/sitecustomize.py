"""File-system faults inside engine workers and Ray actors, where a test's monkeypatch cannot reach: Python imports
this module at the start of every process that has this folder on its PYTHONPATH (the workers a test spawns, the
actors of the tests' Ray instance). Inert unless the JSON file named by SSOGEN_TEST_WORKER_FAULTS exists when the
fault's place runs (tests run as root, whom a read-only folder does not stop, and without a full disk to fill):

- {"socket_folder": ERRNO}: making the engine's socket folder in the temp folder (`ssogen.engine.ipc`) fails so;
- {"generate_after": PATH}: once PATH exists, a piece of work fails as torch's compiler does on a full disk (its
  InductorError, raised while the OSError of the write, which names no file, was handled)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from typing import Any

FAULTS_ENV = "SSOGEN_TEST_WORKER_FAULTS"
_mkdtemp = tempfile.mkdtemp


def _faults() -> dict[str, Any]:
    try:
        with open(os.environ.get(FAULTS_ENV, "")) as file:
            return dict(json.load(file))
    except OSError:
        return {}


def _mkdtemp_with_faults(suffix: str | None = None, prefix: str | None = None, dir: str | None = None) -> str:
    code = _faults().get("socket_folder")
    if code is not None and prefix == "ssogen-vllm-":
        folder = os.path.join(dir or tempfile.gettempdir(), f"{prefix}fault")
        raise OSError(code, os.strerror(code), folder)
    return _mkdtemp(suffix, prefix, dir)


class InductorError(Exception):
    """Stands for torch._inductor.exc.InductorError, which ssogen knows by its name and module (without torch)."""


InductorError.__module__ = "torch._inductor.exc"


def _open_runner_with_faults(spec: Any) -> Any:
    run, limit, settings, close = _open_runner(spec)

    def run_with_faults(items: list[Any]) -> list[Any]:
        after = _faults().get("generate_after")
        if after is not None and os.path.exists(after):
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                raise InductorError(f"OSError: {exc}") from None
        return run(items)

    return run_with_faults, limit, settings, close


if os.environ.get(FAULTS_ENV):
    tempfile.mkdtemp = _mkdtemp_with_faults  # type: ignore[assignment]
    from ssogen.engine import workers

    _open_runner = workers.open_runner
    workers.open_runner = _open_runner_with_faults
