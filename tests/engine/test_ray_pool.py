"""`--ray-address`: the engines as Ray actors on a local Ray instance this test starts (2 logical CPUs, two CPU
engine actors, each bound to its own core) give exactly the rows of `--dp 1` (issue 13 acceptance)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from ssogen.engine import ipc
from ssogen.generate.config import RunConfig
from tests.engine.test_pool import BASE, engines_state, triplets

ROWS = 6


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray instance whose actors' temp folder (TMPDIR) is this fixture's own folder, yielded."""
    actors_temp = tmp_path_factory.mktemp("actors-temp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TMPDIR": str(actors_temp)}})
    yield actors_temp
    ray.shutdown()


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
