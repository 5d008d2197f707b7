"""`close_engine` shuts a single vLLM engine's core down at once, for generate's engine and score's scorer alike."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ssogen.engine import close_engine
from ssogen.engine.scoring import VLLMScorer
from ssogen.engine.vllm_engine import VLLMEngine


@pytest.mark.parametrize("kind", [VLLMEngine, VLLMScorer])
def test_closing_a_vllm_engine_or_scorer_shuts_its_engine_core_down(kind: type) -> None:
    """Walkthrough: `ssogen score` left its scorer's engine core to the interpreter's exit, which killed the core
    process first, so a successful score ended with vLLM's "[shutdown] MPClient: engine core exited unexpectedly"
    on stderr. A stand-in `vllm.LLM` records the shutdown (the real one is exercised by the score tests)."""
    shutdowns: list[str] = []
    engine = kind.__new__(kind)
    engine.llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(
        shutdown=lambda: shutdowns.append("core"))))
    close_engine(engine)
    assert shutdowns == ["core"]
