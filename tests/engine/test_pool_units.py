"""The work queue of an engine pool, against a scripted in-process backend (no vLLM, no processes): pieces are
contiguous and come back in request order, a dead engine's piece is run again elsewhere, a straggler is run
twice and the first answer wins, and the run stops with one clear line only when no engine is left. One test
spawns a real worker process whose load fails, reported once with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ssogen.engine import pool as pool_module
from ssogen.engine.pool import WorkQueue, is_straggler, split_pieces
from ssogen.engine.workers import Died, Done, Event, Failed, Ready, WorkerSpec
from ssogen.errors import UserError


class ScriptedBackend:
    """Engines that answer `item * 10`, one event per wait, in submission order. `die_on[w] = k`: engine w dies
    when handed its k-th piece (0-based) instead of answering; `hang` engines never answer."""

    name = "scripted"

    def __init__(self, engines: int, die_on: dict[int, int] | None = None, hang: set[int] | None = None,
                 fail_load: set[int] | None = None) -> None:
        self.engines, self.die_on, self.hang = engines, die_on or {}, hang or set()
        self.fail_load = fail_load or set()
        self.queue: list[Event] = []
        self.handed: dict[int, int] = {w: 0 for w in range(engines)}
        self.log: list[tuple[int, int, list[Any]]] = []
        self.closed: bool | None = None

    def start(self) -> None:
        for w in range(self.engines):
            ready = Ready(w, 100 + w, 64, {"dtype": "float32", "engine": w})
            self.queue.append(Failed(w, None, "out of memory", False) if w in self.fail_load else ready)

    def pid(self, worker: int) -> int:
        return 100 + worker

    def submit(self, worker: int, piece: int, items: list[Any]) -> bool:
        self.log.append((worker, piece, list(items)))
        nth = self.handed[worker]
        self.handed[worker] += 1
        if self.die_on.get(worker) == nth:
            self.queue.append(Died(worker, "killed by signal 9"))
        elif worker not in self.hang:
            self.queue.append(Done(worker, piece, [x * 10 for x in items]))
        return True

    def wait(self, timeout: float | None) -> list[Event]:
        return [self.queue.pop(0)] if self.queue else []

    def close(self, *, force: bool) -> None:
        self.closed = force


def specs(n: int) -> list[WorkerSpec]:
    from ssogen.engine.options import EngineOptions

    return [WorkerSpec(index=i, task="generate", kind="vllm", model="m", options=EngineOptions(), env={},
                       devices=f"core {i}") for i in range(n)]


def test_split_pieces_is_contiguous_and_covers_everything() -> None:
    assert split_pieces(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert split_pieces(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert split_pieces(5, 1) == [(0, 5)]


def test_results_come_back_in_request_order_and_every_engine_works(tmp_path: Path) -> None:
    backend = ScriptedBackend(2)
    queue = WorkQueue(backend, specs(2), tmp_path)
    assert queue.limit == 64
    assert queue.settings == {"dtype": "float32", "engine": 0}  # the first ready engine's, for the manifest
    assert queue.run(list(range(9))) == [x * 10 for x in range(9)]
    assert {worker for worker, _, _ in backend.log} == {0, 1}
    # 2 engines x 2 pieces each, contiguous
    assert [items for _, _, items in backend.log] == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]
    queue.close()
    assert backend.closed is False  # nobody busy: a polite stop


def test_a_dead_engine_has_its_piece_run_again_and_the_state_file_says_so(tmp_path: Path) -> None:
    import json

    backend = ScriptedBackend(2, die_on={1: 0})
    queue = WorkQueue(backend, specs(2), tmp_path)
    assert queue.run(list(range(8))) == [x * 10 for x in range(8)]
    lost_piece = next(piece for worker, piece, _ in backend.log if worker == 1)
    assert [w for w, piece, _ in backend.log if piece == lost_piece] == [1, 0]  # handed again, to engine 0
    state = json.loads((tmp_path / "engines.json").read_text())
    assert state["pieces_requeued"] == 1
    assert [(e["state"], e["error"]) for e in state["engines"]] == [("ready", None), ("dead", "killed by signal 9")]
    assert queue.run([5]) == [50]  # the next call uses the engine that is left


def test_all_engines_dead_is_one_clear_error_with_exit_1(tmp_path: Path) -> None:
    queue = WorkQueue(ScriptedBackend(2, die_on={0: 0, 1: 0}), specs(2), tmp_path)
    with pytest.raises(UserError, match=r"all 2 engines stopped; engine 0 \(core 0\): killed by signal 9; "
                                        r"engine 1 \(core 1\): killed by signal 9 \(finished work is saved") as err:
        queue.run(list(range(4)))
    assert err.value.exit_code == 1


def test_no_engine_loading_fails_at_start_and_one_failed_load_is_survived(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no engine could load the model \(2 tried\); engine 0 \(core 0\): out of "
                                        r"memory; engine 1"):
        WorkQueue(ScriptedBackend(2, fail_load={0, 1}), specs(2), tmp_path)
    backend = ScriptedBackend(2, fail_load={0})
    queue = WorkQueue(backend, specs(2), tmp_path)
    assert queue.run([1, 2, 3]) == [10, 20, 30]
    assert {worker for worker, _, _ in backend.log} == {1}


def test_the_exit_of_an_engine_that_failed_to_load_hides_not_its_reason(tmp_path: Path) -> None:
    # A backend may report the process's exit after the failed load: still one loss, named by the load's error.
    backend = ScriptedBackend(2, fail_load={0, 1})
    backend.start = lambda: backend.queue.extend(  # type: ignore[method-assign]
        [Failed(0, None, "out of memory", False), Died(0, "exit code 0"), Failed(1, None, "bad model", False)])
    with pytest.raises(UserError, match=r"^no engine could load the model \(2 tried\); engine 0 \(core 0\): out of "
                                        r"memory; engine 1 \(core 1\): bad model \("):
        WorkQueue(backend, specs(2), tmp_path)


def test_a_worker_process_that_fails_to_load_is_reported_once(tmp_path: Path) -> None:
    from ssogen.engine.options import EngineOptions
    from ssogen.engine.workers import ProcessBackend

    spec = WorkerSpec(index=0, task="score", kind="transformers", model=str(tmp_path / "missing"),
                      options=EngineOptions(), env={}, devices="core 0")
    backend = ProcessBackend([spec])
    backend.start()
    events: list[Event] = []
    try:
        while not events or backend.procs[0].is_alive():
            events += backend.wait(timeout=60)
        events += backend.wait(timeout=1)  # the exit, seen after the failure
    finally:
        backend.close(force=True)
    assert [type(e).__name__ for e in events] == ["Failed"] and events[0].piece is None, events


def test_an_error_on_a_batch_stops_the_run_with_its_message(tmp_path: Path) -> None:
    backend = ScriptedBackend(1)
    queue = WorkQueue(backend, specs(1), tmp_path)
    backend.submit = lambda worker, piece, items: backend.queue.append(  # type: ignore[method-assign]
        Failed(worker, piece, "--selection guided needs vLLM structured outputs", True)) or True
    with pytest.raises(UserError, match="--selection guided needs vLLM"):
        queue.run([1])


def test_a_straggler_is_run_twice_and_the_first_answer_wins(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "STRAGGLER_MIN_S", 0.0)
    backend = ScriptedBackend(2, hang={1})
    queue = WorkQueue(backend, specs(2), tmp_path)
    queue.seconds_per_item = [1e-9]  # earlier pieces were fast, so engine 1's piece is overdue at once
    assert queue.run(list(range(4))) == [0, 10, 20, 30]
    hung_piece = next(piece for worker, piece, _ in backend.log if worker == 1)
    assert [w for w, piece, _ in backend.log if piece == hung_piece] == [1, 0]
    assert queue.hedged == 1
    queue.close()
    assert backend.closed is True  # engine 1 is still busy: stopped by force


def test_straggler_rule() -> None:
    assert not is_straggler(100.0, 10, [])  # nothing measured yet
    assert not is_straggler(5.0, 10, [0.001])  # too short to be worth running twice
    assert is_straggler(40.0, 10, [1.0, 1.0, 1.0])  # 40 s > 3 x 10 s
    assert not is_straggler(40.0, 10, [2.0, 2.0, 2.0])
