"""`ssogen score`: mean token log-probs of y+ and y- under x, x+ and x- (yo: under x), then optionally the likelihood
filter (`ssogen.dataset.likelihood`).

Resumable like generate: finished rows are cached per model and tokenization settings (`score_cache` decides
which scores a rerun may reuse). The seven requests of a row and their token conventions are in `score_requests`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from ssogen.dataset.card import card_templates
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.kept_scores import scored_rows, too_long_rows
from ssogen.dataset.likelihood import LIKELIHOOD, LikelihoodFilterOptions, has_pair_scores, likelihood_candidate
from ssogen.dataset.options import templates_option
from ssogen.dataset.refresh import refresh
from ssogen.dataset.score_cache import cached_scores, earlier_setup, score_setup
from ssogen.dataset.score_loop import EngineChoice, ScoreCache, ScoreProgress, Scores, score_pending
from ssogen.dataset.score_requests import CONVENTION
from ssogen.dataset.shards import ShardStore
from ssogen.dataset.splits import SplitSpec
from ssogen.engine.dtypes import engine_dtype, expected_dtype
from ssogen.engine.options import CHUNK_ROWS_PER_ENGINE, EngineFields, EngineKind, EngineOptions
from ssogen.fingerprint import model_fingerprint, model_record
from ssogen.models import ModelRef, load_error, require_available, resolve_model
from ssogen.records import TripletRecord
from ssogen.settings import command_settings, flag_name, option


# pydantic lists the last base's fields first: the help shows the filter stages, then the engine options.
@command_settings("ssogen score")
class ScoreConfig(EngineFields, LikelihoodFilterOptions):
    """Every option of `ssogen score`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    model: str = option(..., "Model folder or hub id to score with (normally the policy).")
    filter: Literal["none", "likelihood"] = option(
        "none", "'likelihood' applies the paper code's likelihood filter after scoring; 'none' only adds the "
        "log-probs.")
    chunk_rows: int | None = option(None, "Rows per batch (7 sequences each); saved after each.", ge=1,
                                    default_text=f"{CHUNK_ROWS_PER_ENGINE} per engine ({CHUNK_ROWS_PER_ENGINE} x --dp)")
    templates: Path | None = templates_option("when the card is refreshed")

    @model_validator(mode="after")
    def _stages_need_the_filter(self) -> ScoreConfig:
        given = [name for name in LikelihoodFilterOptions.model_fields if name in self.model_fields_set]
        if given and self.filter != LIKELIHOOD:  # they would be ignored
            flags = [flag_name(ScoreConfig, name) for name in given]
            shown = [f"--no-{f[2:]}" if getattr(self, n) is False else f for n, f in zip(given, flags, strict=True)]
            raise ValueError(f"{', '.join(shown)} only appl{'ies' if len(shown) == 1 else 'y'} with --filter "
                             "likelihood")
        return self

    @property
    def resolved_chunk_rows(self) -> int:
        return self.chunk_rows or CHUNK_ROWS_PER_ENGINE * self.dp

    def filter_options(self) -> LikelihoodFilterOptions | None:
        fields = LikelihoodFilterOptions.model_fields
        return LikelihoodFilterOptions(**{k: getattr(self, k) for k in fields}) if self.filter == LIKELIHOOD else None


class ScoreReport(BaseModel):
    rows: int
    scored_now: int
    from_cache: int
    too_long: int
    dropped_by_reason: dict[str, int]
    counts: dict[str, int]
    cache_dir: str


def _load_tokenizer(model: ModelRef) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as exc:
        raise load_error(model, exc, what="load its tokenizer") from None


def score_folder(
    out_dir: str | Path,
    model: str | ModelRef,
    *,
    engine: EngineKind = "vllm",
    engine_options: EngineOptions | None = None,
    chunk_rows: int = 64,
    filter_options: LikelihoodFilterOptions | None = None,
    progress: Callable[[ScoreProgress], None] | None = None,
    scorer: Any = None,
    templates: str | Path | None = None,
) -> ScoreReport:
    """Score every row the cheap filters kept (plus rows an earlier likelihood filter dropped), optionally
    apply the likelihood filter, rewrite the configs, and refresh manifest, stats, plots and card.

    `model`: a folder or hub id, or the `ModelRef` a caller checked (`check_model_available`: the hub is not asked
    again for its commit); `progress` is called once when the cached rows are known (before any engine loads) and
    after each chunk; `scorer` lets a caller reuse a built engine; `templates` is a folder whose card.md.jinja
    replaces the bundled card template."""
    folder = OutputFolder(out_dir)
    folder.read_manifest()  # not an ssogen output folder: one line, before the folder is locked
    card_templates(templates)  # a bad --templates fails now, not after the scoring
    model_ref = model if isinstance(model, ModelRef) else resolve_model(model)  # a ModelRef: checked by the caller
    require_available(model_ref)
    # One writer per folder: a generate or another score writing it fails this one at once.
    with folder.claim("ssogen score"):
        return _score_claimed(folder, model_ref, engine=engine, engine_options=engine_options, chunk_rows=chunk_rows,
                              filter_options=filter_options, progress=progress, scorer=scorer, templates=templates)


def _score_claimed(folder: OutputFolder, model_ref: ModelRef, *, engine: EngineKind,
                   engine_options: EngineOptions | None, chunk_rows: int,
                   filter_options: LikelihoodFilterOptions | None, progress: Callable[[ScoreProgress], None] | None,
                   scorer: Any, templates: str | Path | None) -> ScoreReport:
    records = folder.read_triplets()
    manifest = folder.read_manifest()
    targets = [r for r in records if likelihood_candidate(r)]
    # The cache lookup, the cache key and the manifest each hashed the model's files: once now, when first asked.
    fingerprint = functools.cache(lambda: model_fingerprint(model_ref).digest)
    choice = EngineChoice(model_ref, engine, engine_options)
    cache = _open_cache(folder, manifest, model_ref, fingerprint, targets, choice, scorer)
    scorer = score_pending(folder, cache, targets, engine=choice, chunk_rows=chunk_rows, progress=progress,
                           scorer=scorer)
    from_cache, scored_now = cache.reused, len(targets) - cache.reused  # once the engine's dtype is known
    too_long = too_long_rows(cache.scores)
    updated, filter_options, counts = _rewrite_data(folder, manifest, records, cache.scores, filter_options)
    earlier = manifest.get("score") or {}
    manifest["score"] = _score_entry(earlier, model_record(model_ref, fingerprint), scorer, engine, cache, {
        "rows_scored": sum(1 for r in updated if has_pair_scores(r)), "rows_too_long": too_long,
        # Without --filter the rows an earlier filter dropped stay dropped: its settings still describe the data.
        "filter": filter_options.model_dump() if filter_options is not None else earlier.get("filter"),
        "configs": counts, "cache": folder.relative(cache.store.dir),
    })
    manifest["configs"] = counts  # the data files as they are now
    folder.write_manifest(manifest)
    refresh(folder.root, templates=templates)
    dropped = Counter(r.drop_reason or "" for r in updated if not r.kept)
    return ScoreReport(rows=len(targets), scored_now=scored_now, from_cache=from_cache, too_long=too_long,
                       dropped_by_reason=dict(dropped.most_common()), counts=counts,
                       cache_dir=str(cache.store.dir))


def _open_cache(folder: OutputFolder, manifest: dict[str, Any], model_ref: ModelRef, fingerprint: Callable[[], str],
                targets: list[TripletRecord], engine: EngineChoice, scorer: Any) -> ScoreCache:
    """The cache of this model and tokenization with the scores it holds for the targets at the dtype the engine
    runs at (a caller's scorer says it; else `expected_dtype` resolves --dtype, auto included, as the engine will).

    It is looked up before any engine loads, by the model's files alone when an earlier score of this model left
    its key in the manifest, else with the tokenizer: a fully scored folder loads neither."""
    options = engine.options
    max_model_len = options.max_model_len if options else None
    said = engine_dtype(getattr(scorer, "settings", None)) if scorer is not None else None
    dtype = said or expected_dtype(engine.kind, model_ref.path, options)
    setup = earlier_setup(manifest, model_ref, fingerprint) if scorer is None else None
    if setup is not None:
        store = ShardStore(folder, folder.score_cache(setup.key))
        scores = cached_scores(store, targets, max_model_len, dtype)
        if len(scores) == len(targets):
            return ScoreCache(setup, store, dtype, scores)
    # Some rows are to be scored: the tokenizer decides their requests.
    tokenizer = scorer.tokenizer if scorer is not None else _load_tokenizer(model_ref)
    setup = score_setup(fingerprint(), tokenizer)
    store = ShardStore(folder, folder.score_cache(setup.key))
    return ScoreCache(setup, store, dtype, cached_scores(store, targets, max_model_len, dtype))


def _rewrite_data(folder: OutputFolder, manifest: dict[str, Any], records: list[TripletRecord], scores: Scores,
                  filter_options: LikelihoodFilterOptions | None,
                  ) -> tuple[list[TripletRecord], LikelihoodFilterOptions | None, dict[str, int]]:
    """Rewrite the data files with the scores (filtered when a filter applies): the rows, the filter applied and
    the rows per data file. The folder is left marked unfinished, for the caller's manifest to finish."""
    # The data files are rewritten one by one: until the manifest is written, the folder is not to be used as
    # finished. A score stopped there left a finished run in_progress: this one finishes it again, and the filter it
    # began unless given one of its own (some files may hold its drops already, the manifest must name it).
    if manifest.pop("rewriting", None) == "score":
        manifest["status"] = "complete"
        begun = (manifest.pop("rewriting_with", None) or {}).get("filter")
        filter_options = filter_options or (LikelihoodFilterOptions.model_validate(begun) if begun else None)
    updated = scored_rows(records, scores, filter_options)  # as a rewrite of generate's keeps them (`kept_scores`)
    folder.mark_incomplete(rewriter="score", filter=filter_options.model_dump() if filter_options else None)
    # The queries keep their split, and the `pairs` prompts the chat template the policy sampled with (not the
    # scorer's: the prompts are the contexts the responses came from).
    counts = folder.write_configs(updated, SplitSpec.from_manifest(manifest),
                                  system_supported=not manifest.get("system_role_merged", False))
    return updated, filter_options, counts


def _score_entry(earlier: dict[str, Any], model: dict[str, str], scorer: Any, engine: EngineKind, cache: ScoreCache,
                 outcome: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `score` entry: the model (its `model_record`), the engine, the dtype of every score and the
    conventions, then `outcome` (rows and files)."""
    same_model = all(earlier.get(key) == value for key, value in model.items())
    # Every row from the cache (no scorer): the engine and settings of the run that scored them, when that run's
    # engine ran at the dtype of these scores (an earlier run at another dtype made other scores).
    carried = same_model and scorer is None and engine_dtype(earlier.get("engine_settings")) == cache.dtype
    setup = cache.setup
    return {
        **model, "engine": getattr(scorer, "name", None) or (earlier.get("engine") if carried else None) or engine,
        "convention": CONVENTION, "dtype": cache.dtype,
        "engine_settings": getattr(scorer, "settings", None) or (earlier.get("engine_settings") if carried
                                                                 else None),
        "system_role_supported": setup.system_supported, "end_of_turn": setup.end_of_turn, **outcome,
    }
