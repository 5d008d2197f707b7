"""`make_engine`: the engine adapter for `--engine` (kept apart from the package root, which the adapters
import: the root importing them back would close an import circle)."""

from __future__ import annotations

from ssogen.engine import Engine, EngineKind, EngineOptions
from ssogen.errors import UserError


def make_engine(kind: EngineKind, model: str, options: EngineOptions | None = None) -> Engine:
    options = options or EngineOptions()
    if kind == "vllm":
        from ssogen.engine.vllm_engine import VLLMEngine

        return VLLMEngine(model, options)
    if kind == "transformers":
        from ssogen.engine.hf_engine import TransformersEngine

        return TransformersEngine(model, options)
    raise UserError(f"--engine: unknown engine {kind!r} (choose vllm or transformers)")
