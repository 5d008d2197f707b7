"""The engines of a pool as Ray actors (`--ray-address`): one actor per engine, each holding one ordinary
engine of `--tp` GPUs (on the CPU build: `--tp` CPUs, its threads bound to its own cores), fed by the same
work queue as local engine processes (pool.py). Ray is an optional dependency, imported only here.

vLLM's own Ray executor and Ray Data's LLM stage are not used: the first refuses the CPU build, the second
asks for GPUs by default; an actor that builds a plain engine runs on both."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ssogen.engine.ipc import remove_private_socket_folder
from ssogen.engine.workers import Died, Done, Event, Failed, Ready, WorkerSpec, failure, open_runner
from ssogen.errors import UserError

CLOSE_TIMEOUT_S = 60.0  # for the actors to shut their engines down before they are killed


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray-address needs Ray: pip install 'ssogen[ray]'", exit_code=1) from None
    return ray


class EngineActor:
    """Errors are returned as values (the events of workers.py), not raised: the pool tells a failed load or batch
    from a dead actor."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.index = spec.index
        self.run_fn: Any = None
        self.close_fn: Any = None
        self.loaded: Ready | Failed
        try:
            self.run_fn, limit, settings, self.close_fn = open_runner(spec)
        except Exception as exc:  # noqa: BLE001
            self.loaded = failure(spec.index, None, exc)
        else:
            self.loaded = Ready(spec.index, os.getpid(), limit, settings)

    def ready(self) -> Ready | Failed:
        return self.loaded

    def run(self, piece: int, items: list[Any]) -> Done | Failed:
        try:
            return Done(self.index, piece, self.run_fn(items))
        except Exception as exc:  # noqa: BLE001
            return failure(self.index, piece, exc)

    def close(self) -> None:
        """Shut the engine down and remove the actor's socket folder (`ipc`): `ray.kill`, which ends the actor
        next, runs no exit handler, so both the folder and vLLM's `vllm_dist_*` file would stay in the node's
        temp folder."""
        try:
            if self.close_fn is not None:
                self.close_fn()
        finally:
            remove_private_socket_folder()


class RayBackend:
    name = "ray"

    def __init__(self, specs: list[WorkerSpec], address: str, *, cpu: bool, tensor_parallel_size: int) -> None:
        self.specs, self.address, self.cpu, self.tp = specs, address, cpu, tensor_parallel_size
        self.ray = import_ray()
        self.actors: list[Any] = []
        self.pending: dict[Any, tuple[int, int | None]] = {}  # object ref -> (worker, piece or None = ready)
        self.gone: set[int] = set()
        self.connected_here = False

    def start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"--ray-address {self.address}: cannot connect to a Ray cluster "
                                f"({str(exc).splitlines()[0]})", exit_code=1) from None
            self.connected_here = True
        resource, per_actor = ("CPU", self.tp) if self.cpu else ("GPU", self.tp)
        total = ray.cluster_resources().get(resource, 0)
        if total < per_actor * len(self.specs):
            raise UserError(f"--dp {len(self.specs)} x --tp {self.tp} needs {per_actor * len(self.specs)} "
                            f"{resource}s but the Ray cluster at {self.address} has {total:g}", exit_code=1)
        actor_class = ray.remote(EngineActor)
        for spec in self.specs:
            resources = {"num_cpus": self.tp, "num_gpus": 0} if self.cpu else {"num_gpus": self.tp}
            actor = actor_class.options(max_restarts=0, max_task_retries=0, **resources).remote(spec)
            self.actors.append(actor)
            self.pending[actor.ready.remote()] = (spec.index, None)

    def pid(self, worker: int) -> int | None:
        return None  # known once the actor reports ready

    def submit(self, worker: int, piece: int, items: list[Any]) -> bool:
        self.pending[self.actors[worker].run.remote(piece, items)] = (worker, piece)
        return True

    def wait(self, timeout: float | None) -> list[Event]:
        if not self.pending:
            return []
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        events: list[Event] = []
        for ref in done:
            worker, piece = self.pending.pop(ref)
            if worker in self.gone:
                continue
            try:
                value = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                self.gone.add(worker)
                events.append(Died(worker, str(exc).splitlines()[0]))
                continue
            if isinstance(value, Failed) and value.piece is None:
                self.gone.add(worker)
            events.append(value)
        return events

    def close(self, *, force: bool) -> None:
        if self.actors and not force:  # each actor tidies up first; a dead or silent one is killed all the same
            with contextlib.suppress(Exception):  # the cluster is gone: the kills below fail as quietly
                closing = [actor.close.remote() for actor in self.actors]
                self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                continue
        self.actors, self.pending = [], {}
        if self.connected_here:
            self.ray.shutdown()
