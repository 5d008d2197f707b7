"""`--ray-address`: the engines as Ray actors on a local Ray instance this test starts (2 logical CPUs, two CPU
engine actors, each bound to its own core) give exactly the rows of `--dp 1` (issue 13 acceptance)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from ssogen.generate.config import RunConfig
from tests.engine.test_pool import BASE, engines_state, triplets

ROWS = 6


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_actors_give_the_rows_of_dp1(local_ray: None, tiny_model: Path, tmp_path: Path) -> None:
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


def test_a_cluster_too_small_is_refused_before_any_actor_starts(local_ray: None, tiny_model: Path,
                                                                tmp_path: Path) -> None:
    from ssogen.engine.launch import make_engine
    from ssogen.engine.options import EngineOptions
    from ssogen.errors import UserError

    with pytest.raises(UserError, match=r"--dp 3 x --tp 1 needs 3 CPUs but the Ray cluster at auto has 2"):
        make_engine("vllm", str(tiny_model), EngineOptions(data_parallel_size=3, ray_address="auto"))
