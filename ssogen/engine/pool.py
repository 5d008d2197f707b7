"""Several engines behind the one `Engine` (or `Scorer`) interface, fed from one work queue.

`generate(requests)` cuts the request list into contiguous pieces (the caller's order keeps requests that share
a system prompt together, so each piece still benefits from its engine's prefix cache) and puts them on one
queue; every idle engine takes the next piece, so a fast engine simply takes more. Results come back in request
order. Per-request seeds make the answers independent of which engine ran which piece, so any `--dp` gives the
rows of `--dp 1`.

Faults: an engine that dies has its piece put back at the front of the queue and the run goes on with the
others; only when no engine is left does the run stop, with one clear error. A piece that takes far longer than
the pieces so far (a hung or very slow engine) is also given to an idle engine; the first answer wins.
While the pool runs, OUT/.ssogen/engines.json lists the engines (pid, devices, state, work done)."""

from __future__ import annotations

import logging
import statistics
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssogen.engine.options import EngineKind, EngineOptions
from ssogen.engine.placement import Placement
from ssogen.engine.workers import Died, Done, Event, Failed, ProcessBackend, Ready, Task, WorkerSpec
from ssogen.errors import UserError
from ssogen.io import write_json_atomic

log = logging.getLogger(__name__)

ENGINES_FILE = "engines.json"
# Pieces per engine and call: more balances better, fewer keeps each engine's batches large.
PIECES_PER_ENGINE = 2
# A piece is a straggler when it has run this many times longer than pieces so far took (per request) ...
STRAGGLER_FACTOR = 3.0
# ... and at least this long: short pieces are never worth running twice.
STRAGGLER_MIN_S = 30.0


@dataclass
class _Worker:
    index: int
    devices: str
    pid: int | None = None
    state: str = "starting"  # starting | ready | dead | failed | stopped
    piece: int | None = None  # the piece it is running, possibly one of an earlier call that was run twice
    started: float = 0.0
    pieces_done: int = 0
    items_done: int = 0
    error: str | None = None
    os_error: OSError | None = None  # why it failed to load, when the file system was why

    @property
    def alive(self) -> bool:
        return self.state in ("starting", "ready")


@dataclass
class _Call:
    """The pieces of one generate/score call."""

    pieces: dict[int, list[Any]]
    queue: deque[int]
    results: dict[int, list[Any]] = field(default_factory=dict)


def split_pieces(n_items: int, n_pieces: int) -> list[tuple[int, int]]:
    """[start, end) bounds of n_pieces contiguous pieces of near-equal size (larger ones first)."""
    n_pieces = max(1, min(n_pieces, n_items))
    size, extra = divmod(n_items, n_pieces)
    bounds, start = [], 0
    for i in range(n_pieces):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def is_straggler(elapsed_s: float, items: int, seconds_per_item: list[float]) -> bool:
    if not seconds_per_item or elapsed_s < STRAGGLER_MIN_S:
        return False
    return elapsed_s > STRAGGLER_FACTOR * statistics.median(seconds_per_item) * items


class WorkQueue:
    """Hands pieces of calls to the engines of a backend and gathers their answers (see the module docstring)."""

    def __init__(self, backend: Any, specs: list[WorkerSpec], state_dir: Path | None = None) -> None:
        self.backend, self.state_dir = backend, state_dir
        self.workers = [_Worker(s.index, s.devices) for s in specs]
        self.next_piece = 0
        self.requeued = self.hedged = 0
        self.seconds_per_item: list[float] = []
        self.limit = 0
        self.settings: dict[str, Any] = {}  # the first ready engine's (all run the same options)
        self.closed = False
        self._finalizer = weakref.finalize(self, backend.close, force=True)
        try:
            backend.start()
            for worker in self.workers:
                worker.pid = backend.pid(worker.index)
            self._write_state()
            while not any(w.state == "ready" for w in self.workers):
                self._handle(backend.wait(1.0), None)
        except BaseException:
            self.close(force=True)
            raise

    # -- bookkeeping
    def _write_state(self) -> None:
        if self.state_dir is None:
            return
        state = {"backend": self.backend.name, "pieces_requeued": self.requeued, "pieces_run_twice": self.hedged,
                 "engines": [{"index": w.index, "pid": w.pid, "devices": w.devices, "state": w.state,
                              "busy": w.piece is not None, "pieces_done": w.pieces_done,
                              "requests_done": w.items_done, "error": w.error} for w in self.workers]}
        write_json_atomic(self.state_dir / ENGINES_FILE, state)

    def _alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive]

    def _all_gone(self) -> Exception:
        """Every engine failed to load for one and the same reason of the file system (the same full disk or
        unreadable file, as on one machine): that OSError, which the command words as for a single engine.
        Otherwise one line with each engine's reason."""
        os_error = self.workers[0].os_error
        if os_error is not None and all(w.os_error is not None and w.error == self.workers[0].error
                                        for w in self.workers):
            return os_error
        errors = [f"engine {w.index} ({w.devices}): {w.error}" for w in self.workers if w.error]
        loaded = any(w.pieces_done or w.state == "dead" for w in self.workers)
        head = (f"all {len(self.workers)} engines stopped" if loaded else
                f"no engine could load the model ({len(self.workers)} tried)")
        return UserError(f"{head}; {'; '.join(errors) or 'no error was reported'} (finished work is saved: the "
                         "same command resumes it)", exit_code=1)

    def _handle(self, events: list[Event], call: _Call | None) -> None:
        for event in events:
            worker = self.workers[event.worker]
            if isinstance(event, Ready):
                worker.state, worker.pid = "ready", event.pid or worker.pid
                self.limit = self.limit or event.limit
                self.settings = self.settings or event.settings
            elif isinstance(event, Done):
                worker.piece = None
                worker.pieces_done += 1
                worker.items_done += len(event.results)
                if len(event.results):
                    self.seconds_per_item.append((time.monotonic() - worker.started) / len(event.results))
                if call is not None and event.piece in call.pieces:
                    call.results.setdefault(event.piece, event.results)
            elif isinstance(event, Died):
                if worker.alive:  # an engine that failed to load is lost already, with its reason
                    self._lost(worker, "dead", event.reason, call)
            elif isinstance(event, Failed):
                if event.piece is not None:  # as a single engine's exception: a full disk is the machine's
                    raise (event.os_error or (UserError(event.message, event.exit_code) if event.user_error else
                           RuntimeError(f"engine {worker.index} failed on a batch: {event.message}")))
                worker.os_error = event.os_error
                self._lost(worker, "failed", event.message, call)
            self._write_state()
        if not self._alive():
            raise self._all_gone()

    def _lost(self, worker: _Worker, state: str, reason: str, call: _Call | None) -> None:
        piece, worker.piece, worker.state, worker.error = worker.piece, None, state, reason
        left = len(self._alive())
        what = "died" if state == "dead" else "failed to start"
        log.warning("ssogen: engine %d (%s, pid %s) %s: %s; %d engine(s) left", worker.index, worker.devices,
                    worker.pid, what, reason, left)
        if call is None or piece is None or piece not in call.pieces or piece in call.results:
            return
        if not any(w.piece == piece for w in self.workers) and piece not in call.queue:
            call.queue.appendleft(piece)
            self.requeued += 1

    def _assign(self, call: _Call) -> None:
        for worker in self.workers:
            if worker.state != "ready" or worker.piece is not None:
                continue
            piece = call.queue.popleft() if call.queue else self._straggler(call)
            if piece is None:
                return
            worker.piece, worker.started = piece, time.monotonic()
            if not self.backend.submit(worker.index, piece, call.pieces[piece]):
                worker.piece = None  # its death is reported by the next wait
                call.queue.appendleft(piece)
            self._write_state()

    def _straggler(self, call: _Call) -> int | None:
        now = time.monotonic()
        for worker in self.workers:
            piece = worker.piece
            if piece is None or piece not in call.pieces or piece in call.results:
                continue
            if sum(w.piece == piece for w in self.workers) == 1 and \
                    is_straggler(now - worker.started, len(call.pieces[piece]), self.seconds_per_item):
                self.hedged += 1
                log.warning("ssogen: engine %d is slow on a piece of %d requests; running it on another engine "
                            "too", worker.index, len(call.pieces[piece]))
                return piece
        return None

    # -- the interface
    def run(self, items: list[Any]) -> list[Any]:
        if self.closed:
            raise RuntimeError("the engine pool is closed")
        if not items:
            return []
        bounds = split_pieces(len(items), PIECES_PER_ENGINE * len(self._alive()))
        pieces = {}
        for start, end in bounds:
            pieces[self.next_piece] = items[start:end]
            self.next_piece += 1
        call = _Call(pieces=pieces, queue=deque(pieces))
        while len(call.results) < len(pieces):
            self._assign(call)
            self._handle(self.backend.wait(1.0), call)
        return [item for piece in sorted(call.results) for item in call.results[piece]]

    def wait_all_ready(self) -> None:
        """Block until every engine has loaded or failed (benchmarks: time only the work)."""
        while any(w.state == "starting" for w in self.workers):
            self._handle(self.backend.wait(1.0), None)

    def close(self, *, force: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        busy = any(w.piece is not None for w in self.workers)
        self._finalizer.detach()
        self.backend.close(force=force or busy)
        for worker in self.workers:
            if worker.alive:
                worker.state = "stopped"
        self._write_state()


class EnginePool:
    """A WorkQueue behind the `Engine` interface (a pool of generation engines: `generate`) or the `Scorer`
    interface (a pool of scorers: `mean_logprobs`); either way the requests go to the queue as they are."""

    def __init__(self, name: str, tokenizer: Any, queue: WorkQueue) -> None:
        self.name, self.tokenizer, self.queue = name, tokenizer, queue
        self.max_model_len = self.max_sequence_length = queue.limit
        self.settings = queue.settings

    def generate(self, requests: list[Any]) -> list[Any]:
        return self.queue.run(requests)

    def mean_logprobs(self, requests: list[Any]) -> list[float]:
        return self.queue.run(requests)

    def close(self) -> None:
        self.queue.close()


def start_pool(task: Task, kind: EngineKind, model: str, options: EngineOptions, placement: Placement,
               state_dir: Path | None = None) -> EnginePool:
    """Start the engines of `placement` (local processes, or Ray actors with `options.ray_address`); returns
    once the first engine is ready, the others join as they finish loading."""
    from transformers import AutoTokenizer

    single = options.model_copy(update={"data_parallel_size": 1, "ray_address": None})
    specs = [WorkerSpec(index=slot.index, task=task, kind=kind, model=model, options=single, env=slot.env,
                        devices=slot.devices) for slot in placement.engines]
    if options.ray_address is not None:
        from ssogen.engine.ray_pool import RayBackend

        backend: Any = RayBackend(specs, options.ray_address, cpu=placement.cpu,
                                  tensor_parallel_size=options.tensor_parallel_size)
    else:
        backend = ProcessBackend(specs)
    # The parent tokenizes and renders chat templates exactly as a single engine does; workers only sample.
    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=options.trust_remote_code)
    queue = WorkQueue(backend, specs, state_dir)
    return EnginePool(kind, tokenizer, queue)
