"""The engine loop of `ssogen score`: the rows the cache lacks, scored chunk by chunk, each chunk appended to the
cache as soon as it is scored (so that a stopped run resumes from there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.score_cache import Scores, ScoreSetup, cache_line, cached_scores
from ssogen.dataset.score_requests import SCORED, build_requests
from ssogen.dataset.shards import ShardStore
from ssogen.engine import close_engine
from ssogen.engine.dtypes import engine_dtype
from ssogen.engine.options import EngineKind, EngineOptions
from ssogen.errors import STOPPED, UserError
from ssogen.models import ModelRef, engine_load_errors
from ssogen.records import TripletRecord


@dataclass
class ScoreProgress:
    rows_done: int  # scored rows, those found in the cache included
    rows_total: int
    engine_s: float  # since the first engine call (0 while the engine loads)


@dataclass
class ScoreCache:
    """The cache of one model and tokenization: its settings, its store, the dtype the scores are made at (the
    engine's, once it loaded; before, `ssogen.engine.dtypes.expected_dtype`) and the scores it holds for the rows
    at that dtype; `reused`: how many of them came from the store."""

    setup: ScoreSetup
    store: ShardStore
    dtype: str | None
    scores: Scores
    reused: int = field(init=False)

    def __post_init__(self) -> None:
        self.reused = len(self.scores)


@dataclass(frozen=True)
class EngineChoice:
    """Which engine scores the rows, when the caller brings none."""

    model: ModelRef
    kind: EngineKind
    options: EngineOptions | None


def score_pending(folder: OutputFolder, cache: ScoreCache, targets: list[TripletRecord], *, engine: EngineChoice,
                  chunk_rows: int, progress: Callable[[ScoreProgress], None] | None, scorer: Any) -> Any:
    """Score the targets missing from `cache.scores` into it and its store, then close the store and any scorer
    built here. Returns the scorer that scored (the caller's, or None when the cache held every row)."""
    pending = [r for r in targets if r.id not in cache.scores]
    owns_scorer = scorer is None  # a scorer built here (maybe a pool of engine processes) is stopped here
    try:
        if progress is not None:
            progress(ScoreProgress(cache.reused, len(targets), 0.0))
        if pending and scorer is None:
            scorer = _make_scorer(folder, engine)
            if _keep_the_engines_dtype(cache, targets, scorer, engine.options):
                pending = [r for r in targets if r.id not in cache.scores]
        from_cache = cache.reused
        first_call = time.monotonic()
        for start in range(0, len(pending), chunk_rows):
            lines = _score_chunk(pending[start:start + chunk_rows], scorer, cache, engine.options)
            cache.store.append("scores", lines)
            cache.scores.update({line["id"]: line["lp"] for line in lines})
            if progress is not None:
                progress(ScoreProgress(from_cache + min(start + chunk_rows, len(pending)), len(targets),
                                       time.monotonic() - first_call))
    except STOPPED:  # the finally below closes the store
        raise UserError(f"interrupted: {len(cache.scores)} of {len(targets)} rows are scored and saved in "
                        f"{cache.store.dir}; run the same command again to resume", exit_code=130) from None
    finally:
        cache.store.close()
        if owns_scorer and scorer is not None:
            close_engine(scorer)
    return scorer


def _make_scorer(folder: OutputFolder, engine: EngineChoice) -> Any:
    from ssogen.engine.launch import make_scorer

    max_model_len = engine.options.max_model_len if engine.options else None
    with engine_load_errors(engine.model, engine.kind, max_model_len=max_model_len):
        return make_scorer(engine.kind, engine.model.path, engine.options, state_dir=folder.work_dir)


def _keep_the_engines_dtype(cache: ScoreCache, targets: list[TripletRecord], scorer: Any,
                            options: EngineOptions | None) -> bool:
    """When the engine just loaded runs at another dtype than the one the cache was read for (guessed before it
    loaded: a GPU without bfloat16, a config naming no dtype), keep only the cached scores of the engine's dtype,
    so that every score of this run is of one precision. True when the cache's scores changed."""
    ran = engine_dtype(getattr(scorer, "settings", None))
    if ran is None or ran == cache.dtype:
        return False
    cache.dtype = ran
    cache.scores = cached_scores(cache.store, targets, options.max_model_len if options else None, ran)
    cache.reused = len(cache.scores)
    return True


def _score_chunk(chunk: list[TripletRecord], scorer: Any, cache: ScoreCache,
                 options: EngineOptions | None) -> list[dict[str, Any]]:
    """The cache lines of a chunk: the rows too long for the engine first (left unscored), then the others."""
    max_model_len, dtype, setup = options.max_model_len if options else None, cache.dtype, cache.setup
    requests: list[Any] = []
    fitting: list[TripletRecord] = []
    lines: list[dict[str, Any]] = []
    for record in chunk:
        row_requests = build_requests(record, scorer.tokenizer, setup.system_supported, setup.end_of_turn["ids"])
        if max(r.length for r in row_requests) > scorer.max_sequence_length:
            lines.append(cache_line(record, dtype, None, max_model_len))
            continue
        fitting.append(record)
        requests.extend(row_requests)
    means = scorer.mean_logprobs(requests)
    for number, record in enumerate(fitting):
        values = means[number * len(SCORED):(number + 1) * len(SCORED)]
        lp = {name: value for (name, _, _), value in zip(SCORED, values, strict=True)}
        lines.append(cache_line(record, dtype, lp, max_model_len))
    return lines
