"""`--ray-address`: the engines as Ray actors on a local Ray instance this test starts (2 logical CPUs, two CPU
engine actors, each bound to its own core) give exactly the rows of `--dp 1` (issue 13 acceptance)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from ssogen.engine import ipc
from ssogen.generate.config import RunConfig
from tests.engine.test_pool import BASE, engines_state, triplets
from tests.engine.test_pool_file_system import FAULTS, FULL, READ_ONLY
from tests.engine.worker_faults.sitecustomize import FAULTS_ENV

ROWS = 6


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray instance whose actors' temp folder (TMPDIR) is this fixture's own folder, yielded. Its actors
    load `worker_faults`, inert until a test writes the faults file `ACTOR_FAULTS` of that folder. Ray's own files
    go to a folder with a short path (its socket paths have at most 107 bytes), removed after."""
    actors_temp = tmp_path_factory.mktemp("actors-temp")
    python_path = os.pathsep.join([str(FAULTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    try:
        with pytest.MonkeyPatch.context() as env:
            # The actors make their own socket folders, as on a cluster, not the one an earlier test's in-process
            # engine left in this process's environment (Ray's processes would inherit it).
            env.delenv("VLLM_RPC_BASE_PATH", raising=False)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_temp,
                     runtime_env={"env_vars": {"TMPDIR": str(actors_temp), "PYTHONPATH": python_path,
                                               FAULTS_ENV: str(actors_temp / ACTOR_FAULTS)}})
        yield actors_temp
        ray.shutdown()
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


ACTOR_FAULTS = "faults.json"


@pytest.fixture
def actor_faults(local_ray: Path) -> Iterator[Path]:
    """The faults file the actors read: write it to inject a fault (removed after the test)."""
    faults = local_ray / ACTOR_FAULTS
    yield faults
    faults.unlink(missing_ok=True)


def _all_cpus_free() -> bool:
    """Every actor is gone, its CPU given back (Ray reports it a moment later)."""
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    return ray.available_resources().get("CPU") == 2


def _left_by_engines(temp: Path) -> set[str]:
    """ssogen's socket folders (`ipc`) and vLLM's torch.distributed rendezvous files in a temp folder."""
    return {path.name for path in temp.iterdir() if path.name.startswith((ipc.PREFIX, "vllm_dist_"))}


def test_ray_actors_give_the_rows_of_dp1(local_ray: Path, tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.generate.run import run_generate

    reference = run_generate(RunConfig(model=str(tiny_model), out=str(tmp_path / "dp1"), limit=ROWS, **BASE))
    result = run_generate(RunConfig(model=str(tiny_model), out=str(tmp_path / "ray"), limit=ROWS, dp=2,
                                    ray_address="auto", **BASE))
    assert triplets(result.out) == triplets(reference.out)
    assert result.manifest["engine_settings"] == reference.manifest["engine_settings"]  # reported by the actors
    state: Any = engines_state(result.out)
    assert state["backend"] == "ray"
    assert [(e["devices"], e["state"], e["error"]) for e in state["engines"]] == [
        ("CPU cores 0", "stopped", None), ("CPU cores 1", "stopped", None)]
    assert sum(e["requests_done"] for e in state["engines"]) == ROWS * 4
    assert ray.is_initialized()  # a Ray session the caller started is left to the caller


def test_a_cluster_too_small_is_refused_before_any_actor_starts(local_ray: Path, tiny_model: Path,
                                                                tmp_path: Path) -> None:
    from ssogen.engine.launch import make_engine
    from ssogen.engine.options import EngineOptions
    from ssogen.errors import UserError

    with pytest.raises(UserError, match=r"--dp 3 x --tp 1 needs 3 CPUs but the Ray cluster at auto has 2"):
        make_engine("vllm", str(tiny_model), EngineOptions(data_parallel_size=3, ray_address="auto"))


def test_the_actors_leave_nothing_in_the_temp_folder(local_ray: Path, tiny_model: Path, tmp_path: Path) -> None:
    """The actors ended by `ray.kill` alone, which runs no exit handler: each left its socket folder and vLLM's
    `vllm_dist_*` file in the node's temp folder, one of each per engine and run."""
    from ssogen.generate.run import run_generate

    before = _left_by_engines(local_ray)
    result = run_generate(RunConfig(model=str(tiny_model), out=str(tmp_path / "ray"), limit=2, dp=2,
                                    ray_address="auto", **BASE))
    assert [e["state"] for e in engines_state(result.out)["engines"]] == ["stopped", "stopped"]  # type: ignore[index]
    assert _left_by_engines(local_ray) - before == set()


def test_actors_that_cannot_make_their_socket_folder_say_so_in_one_line(local_ray: Path, actor_faults: Path,
                                                                        tiny_model: Path, tmp_path: Path) -> None:
    """As a single engine's load says it, not "no engine could load the model (2 tried); engine 0 (CPU cores 0):
    OSError: [Errno 30] Read-only file system: '...'; engine 1 (...): OSError: ..." with each actor's raw error."""
    from ssogen.errors import UserError
    from ssogen.generate.run import run_generate

    actor_faults.write_text(json.dumps({"socket_folder": errno.EROFS}))
    with pytest.raises(UserError) as caught:
        run_generate(RunConfig(model=str(tiny_model), out=str(tmp_path / "ray"), limit=2, dp=2,
                               ray_address="auto", **BASE))
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"{local_ray / 'ssogen-vllm-fault'}: {READ_ONLY}"
    assert _all_cpus_free()


def test_a_full_disk_inside_an_actor_stops_the_run_and_the_rerun_resumes(local_ray: Path, actor_faults: Path,
                                                                        tiny_model: Path, tmp_path: Path) -> None:
    """The actor's error is raised as a single engine's OSError, which the command words (was a RuntimeError:
    "engine 0 failed on a batch: CompileError: OSError: [Errno 28] No space left on device")."""
    from ssogen.dataset.shards import ShardStore
    from ssogen.errors import file_system_error, wrapped_writing
    from ssogen.generate.run import run_generate

    out = tmp_path / "ray"
    run = {"model": str(tiny_model), "out": str(out), "engine": "transformers", "limit": 4, "chunk_size": 2, **BASE}
    actor_faults.write_text(json.dumps({"generate_after": str(out / ".ssogen" / "rows-00000.jsonl")}))
    with pytest.raises(OSError) as caught:
        run_generate(RunConfig(**run, dp=2, ray_address="auto"))
    # the actor's InductorError said its compile cache (on its node) was being written: its copy of the error says so
    assert (wrapped_writing(caught.value) or "").startswith("writing torch's compile cache in /")
    assert str(file_system_error(caught.value)) == FULL
    assert _all_cpus_free()
    assert len(ShardStore(out).load("rows")) == 2  # the first chunk, finished before the disk filled
    actor_faults.unlink()
    assert run_generate(RunConfig(**run)).manifest["resumed"] is True
