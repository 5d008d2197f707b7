"""On vLLM's CPU build the engine runs in ssogen's process unless the user set VLLM_ENABLE_V1_MULTIPROCESSING:
vLLM's engine-core process took ~26 s more to start and 2.5 GiB more memory there (docs/cpu-vllm-notes.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssogen.engine import vllm_llm
from ssogen.engine.vllm_llm import MULTIPROCESSING_ENV, build_vllm_llm, shutdown_vllm_llm

pytestmark = pytest.mark.skipif(not vllm_llm.is_cpu_build(), reason="the CPU build of vLLM only")


def test_the_cpu_build_runs_the_engine_in_process_by_default(tiny_model: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESSING_ENV, raising=False)  # the tests' conftest sets it; a user's shell does not
    llm = build_vllm_llm(str(tiny_model))
    try:
        assert type(llm.llm_engine.engine_core).__name__ == "InprocClient"
    finally:
        shutdown_vllm_llm(llm)


def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stop(Exception):
        """Raised where vLLM would be imported: the engine itself (its own process) is not what is tested."""

    def stop() -> None:
        raise Stop

    monkeypatch.setenv(MULTIPROCESSING_ENV, "1")
    monkeypatch.setattr(vllm_llm, "import_vllm", stop)
    with pytest.raises(Stop):
        build_vllm_llm("any-model")
    assert os.environ[MULTIPROCESSING_ENV] == "1"
