"""What a command asked for: one engine (or scorer) in this process, or with --dp > 1 / --ray-address a pool of
them (ssogen.engine.pool) that `close_engine` must stop. Both check the placement before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ssogen.engine import Engine
from ssogen.engine.factory import make_single_engine
from ssogen.engine.options import EngineKind, EngineOptions, check_kind, is_pooled
from ssogen.engine.placement import plan_placement
from ssogen.engine.scoring import Scorer, make_single_scorer


def _launch(role: Literal["generate", "score"], kind: EngineKind, model: str, options: EngineOptions | None,
            state_dir: Path | None, single: Callable[[EngineKind, str, EngineOptions], Any],
            check_single: bool) -> Any:
    options = options or EngineOptions()
    check_kind(kind)
    if is_pooled(options) or check_single:
        placement = plan_placement(model, options, kind, memory=kind == "vllm")
        placement.check()
    if is_pooled(options):
        from ssogen.engine.pool import start_pool

        return start_pool(role, kind, model, options, placement, state_dir)
    return single(kind, model, options)


def make_engine(kind: EngineKind, model: str, options: EngineOptions | None = None, *,
                state_dir: Path | None = None) -> Engine:
    """Engines for generate and judge; `state_dir` receives a pool's engines.json. The placement (devices,
    memory) is checked even for one engine, before it loads."""
    return _launch("generate", kind, model, options, state_dir, make_single_engine, check_single=True)


def make_scorer(kind: EngineKind, model: str, options: EngineOptions | None = None, *,
                state_dir: Path | None = None) -> Scorer:
    """Like `make_engine`, for `ssogen score` (the placement is checked for pools)."""
    return _launch("score", kind, model, options, state_dir, make_single_scorer, check_single=False)
