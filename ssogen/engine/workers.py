"""Engine workers: what one engine of a pool runs, and the backend that runs them as local processes.

A worker builds one ordinary engine (or scorer) with `--dp 1` settings after setting its environment (the
GPUs it may see, or the CPU cores it binds to), then answers pieces of work one at a time. The Ray backend
(`ray_pool.py`) runs the same `open_runner` inside Ray actors."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from ssogen.engine import close_engine
from ssogen.engine.options import EngineKind, EngineOptions
from ssogen.errors import UserError, file_system_cause, file_system_copy, file_system_error, wrapped_writing

Task = Literal["generate", "score"]


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    task: Task
    kind: EngineKind
    model: str
    options: EngineOptions  # a single engine's settings (data_parallel_size 1, no Ray)
    env: dict[str, str]
    devices: str


# What a backend reports to the pool.
@dataclass
class Ready:
    worker: int
    pid: int | None
    limit: int  # the engine's max_model_len, or the scorer's max_sequence_length
    settings: dict[str, Any] = field(default_factory=dict)  # the engine's `settings` (for the manifest)


@dataclass
class Done:
    worker: int
    piece: int
    results: list[Any]


@dataclass
class Died:
    worker: int
    reason: str


@dataclass
class Failed:
    """An exception in the worker: while loading (piece None) the engine is gone; on a piece it would fail the
    same way on any engine, so the run stops. A full, read-only or forbidden file system travels as its OSError
    (`os_error`), which the pool raises as a single engine would have, for the command's one line (exit 1)."""

    worker: int
    piece: int | None
    message: str
    user_error: bool
    exit_code: int = 2  # a UserError's
    os_error: OSError | None = None


Event = Ready | Done | Died | Failed


Runner = tuple[Callable[[list[Any]], list[Any]], int, dict[str, Any], Callable[[], None]]


def open_runner(spec: WorkerSpec) -> Runner:
    """Build the worker's engine; (function answering a piece, its length limit, its settings, function shutting
    it down). Sets the environment first:
    CUDA_VISIBLE_DEVICES and the CPU thread binding only act if set before vLLM (and CUDA) start."""
    os.environ.update(spec.env)  # on the CPU build the engine then runs inside this worker (`build_vllm_llm`)
    if spec.task == "generate":
        from ssogen.engine.factory import make_single_engine

        engine = make_single_engine(spec.kind, spec.model, spec.options)
        return engine.generate, engine.max_model_len, engine.settings, partial(close_engine, engine)
    from ssogen.engine.scoring import make_single_scorer

    scorer = make_single_scorer(spec.kind, spec.model, spec.options)
    return scorer.mean_logprobs, scorer.max_sequence_length, scorer.settings, partial(close_engine, scorer)


def describe(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    if (cause := file_system_cause(exc)) is not None:
        return str(file_system_error(cause, writing=wrapped_writing(exc)))
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last.splitlines()[0] if last else type(exc).__name__


def failure(worker: int, piece: int | None, exc: BaseException) -> Failed:
    """What a worker (a process or a Ray actor) reports of an exception while loading (piece None) or on a piece."""
    if isinstance(exc, UserError):
        return Failed(worker, piece, str(exc), True, exc.exit_code)
    if (cause := file_system_cause(exc)) is not None:  # a plain copy travels, saying what was being written
        cause = file_system_copy(exc, cause)
    return Failed(worker, piece, describe(exc), False, os_error=cause)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a spawned engine process."""
    # Its own session: Ctrl-C in the terminal reaches only the parent, which stops the workers itself (a worker
    # interrupted mid-batch would only print a traceback).
    os.setsid()
    try:
        run, limit, settings, _ = open_runner(spec)  # the process's exit shuts the engine down
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(failure(spec.index, None, exc))
        return
    conn.send(Ready(spec.index, os.getpid(), limit, settings))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        piece, items = message
        try:
            reply: Event = Done(spec.index, piece, run(items))
        except Exception as exc:  # noqa: BLE001
            reply = failure(spec.index, piece, exc)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class ProcessBackend:
    """One spawned process per engine, one pipe each. Spawn, not fork: CUDA and vLLM must start fresh."""

    name = "processes"

    def __init__(self, specs: list[WorkerSpec]) -> None:
        self.specs = specs
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.gone: set[int] = set()

    def start(self) -> None:
        for spec in self.specs:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=worker_main, args=(spec, child), name=f"ssogen-engine-{spec.index}")
            proc.start()
            child.close()  # so that the parent sees EOF when the worker dies
            self.procs.append(proc)
            self.conns.append(parent)

    def pid(self, worker: int) -> int | None:
        return self.procs[worker].pid

    def submit(self, worker: int, piece: int, items: list[Any]) -> bool:
        try:
            self.conns[worker].send((piece, items))
            return True
        except (BrokenPipeError, OSError):
            return False

    def _death(self, worker: int) -> Died:
        self.gone.add(worker)
        proc = self.procs[worker]
        proc.join(timeout=5)
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Died(worker, how)

    def wait(self, timeout: float | None) -> list[Event]:
        live = [i for i in range(len(self.procs)) if i not in self.gone]
        handles: dict[Any, int] = {self.conns[i]: i for i in live}
        handles.update({self.procs[i].sentinel: i for i in live})
        events: list[Event] = []
        for handle in wait(list(handles), timeout):
            worker = handles[handle]
            if worker in self.gone:
                continue
            conn = self.conns[worker]
            try:
                # A result sent just before the process ended is still in the pipe: read it before the death.
                while conn.poll():
                    event = conn.recv()
                    events.append(event)
                    if isinstance(event, Failed) and event.piece is None:  # a failed load ends the worker: its
                        self.gone.add(worker)  # exit is not a second loss (and would hide the load's error)
                        break
            except (EOFError, OSError):
                events.append(self._death(worker))
                continue
            if worker not in self.gone and not self.procs[worker].is_alive():
                events.append(self._death(worker))
        return events

    def close(self, *, force: bool) -> None:
        for worker, conn in enumerate(self.conns):
            if worker not in self.gone and not force:
                with contextlib.suppress(BrokenPipeError, OSError):  # gone already: the join below sees it
                    conn.send(None)
        for worker, proc in enumerate(self.procs):
            proc.join(timeout=0 if force else 10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(timeout=5)
            self.conns[worker].close()
            self.gone.add(worker)
