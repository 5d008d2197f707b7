"""`make_single_engine`: one engine adapter in this process for `--engine` (what a pool's workers run too).

Kept apart from the package root, which the adapters import (the root importing them back would close a
circle), and from `launch`, which imports the pool (whose workers import this module)."""

from __future__ import annotations

from ssogen.engine import Engine
from ssogen.engine.options import EngineKind, EngineOptions, check_kind


def make_single_engine(kind: EngineKind, model: str, options: EngineOptions) -> Engine:
    check_kind(kind)
    if kind == "vllm":
        from ssogen.engine.vllm_engine import VLLMEngine

        return VLLMEngine(model, options)
    from ssogen.engine.hf_engine import TransformersEngine

    return TransformersEngine(model, options)
