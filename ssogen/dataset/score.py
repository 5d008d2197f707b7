"""`ssogen score`: mean token log-probs of y+, y- (and yo) under x, x+ and x-, then optionally the likelihood
filter (`ssogen.dataset.likelihood`).

Conventions (shared with `ssogen train`, which builds its sequences with the same ssogen.chat helpers):
* contexts are rendered by ssogen.chat exactly as generate sampled from them: x = [user], x+ = [system S+,
  user], x- = [system S-, user], with the system text merged into the user turn when the chat template rejects
  a system role; the prompt text is tokenized with add_special_tokens=False (the template writes any BOS);
* a response is its text's tokens (add_special_tokens=False) followed, when it is complete, by the chat template's
  end-of-turn token(s) (`ssogen.chat.end_of_turn`), where sampling stopped; a response cut at --max-tokens
  (finish reason "length") gets none; the mean is over all of these tokens, end token(s) included.

Resumable like generate: finished rows are appended (fsynced) to OUT/.ssogen/score/<key>/scores-<n>.jsonl, where
the key hashes the model's identity and the tokenization settings, and every cached row carries a hash of its
texts, so a rerun scores only what is missing and never reuses a score of other text or another model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ssogen.dataset.card import card_templates
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.likelihood import (
    LIKELIHOOD,
    LikelihoodFilterOptions,
    apply_likelihood_filter,
    has_pair_scores,
    likelihood_candidate,
)
from ssogen.dataset.refresh import refresh
from ssogen.dataset.shards import ShardStore
from ssogen.dataset.splits import SplitSpec
from ssogen.engine import CHUNK_ROWS_PER_ENGINE, EngineFields, EngineKind, EngineOptions, close_engine
from ssogen.errors import UserError
from ssogen.fingerprint import model_fingerprint, model_record
from ssogen.models import ModelRef, load_error, require_available, resolve_model
from ssogen.records import TripletRecord
from ssogen.settings import option

# (field, context, response) in request order: the requests of one context are adjacent, so sequences that share
# a prompt prefix sit next to each other in every batch.
SCORED = (
    ("lp_good_plain", "plain", "good"), ("lp_bad_plain", "plain", "bad"), ("lp_raw_plain", "plain", "raw"),
    ("lp_good_good", "good", "good"), ("lp_bad_good", "good", "bad"),
    ("lp_good_bad", "bad", "good"), ("lp_bad_bad", "bad", "bad"),
)
CONVENTION = ("mean over response tokens + the template's end-of-turn token(s) (none after a response cut at the "
              "token limit); chat-template prompt, add_special_tokens=False")


# pydantic lists the last base's fields first: the help shows the filter stages, then the engine options.
class ScoreConfig(EngineFields, LikelihoodFilterOptions):
    """Every option of `ssogen score`."""

    model_config = ConfigDict(extra="forbid")

    model: str = option(..., "Model folder or hub id to score with (normally the policy).")
    filter: Literal["none", "likelihood"] = option(
        "none", "'likelihood' applies the paper code's likelihood filter after scoring; 'none' only adds the "
        "log-probs.")
    chunk_rows: int | None = option(None, "Rows per batch (7 sequences each); saved after each.", ge=1,
                                    default_text=f"{CHUNK_ROWS_PER_ENGINE} per engine ({CHUNK_ROWS_PER_ENGINE} x --dp)")

    @property
    def resolved_chunk_rows(self) -> int:
        return self.chunk_rows or CHUNK_ROWS_PER_ENGINE * self.dp

    def filter_options(self) -> LikelihoodFilterOptions | None:
        fields = LikelihoodFilterOptions.model_fields
        return LikelihoodFilterOptions(**{k: getattr(self, k) for k in fields}) if self.filter == LIKELIHOOD else None


@dataclass
class ScoreProgress:
    rows_done: int  # scored rows, those found in the cache included
    rows_total: int
    engine_s: float  # since the first engine call (0 while the engine loads)


class ScoreReport(BaseModel):
    rows: int
    scored_now: int
    from_cache: int
    too_long: int
    dropped_by_reason: dict[str, int]
    counts: dict[str, int]
    cache_dir: str


def row_text_hash(record: TripletRecord) -> str:
    """What a cached score depends on in the row: the query, both system prompts, the three responses and which of
    them were cut at the token limit (a cut response is scored without the end-of-turn token)."""
    cut = "".join("1" if getattr(record, f"finish_reason_{v}") == "length" else "0" for v in ("good", "bad", "raw"))
    parts = [record.prompt, record.system_good, record.system_bad, record.response_good, record.response_bad,
             record.response_raw, cut]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _load_tokenizer(model: ModelRef) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as exc:
        raise load_error(model, exc, what="load its tokenizer") from None


def cache_key(model_id: str, tokenizer: Any, system_supported: bool) -> str:
    from ssogen.chat import end_of_turn

    parts = {"model": model_id, "system_supported": system_supported, "end_of_turn": list(end_of_turn(tokenizer).ids),
             "template": hashlib.sha256((getattr(tokenizer, "chat_template", None) or "").encode()).hexdigest(),
             "convention": CONVENTION, "format": 2}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _Setup:
    """What scoring with one model needs before any engine: the cache key and the chat template's behaviour."""

    key: str
    system_supported: bool
    end_of_turn: dict[str, Any]


def _setup(model: ModelRef, tokenizer: Any) -> _Setup:
    from ssogen.chat import end_of_turn, supports_system_role

    system_supported = supports_system_role(tokenizer)
    return _Setup(cache_key(model_fingerprint(model).digest, tokenizer, system_supported), system_supported,
                  end_of_turn(tokenizer).as_dict())


def _earlier_setup(manifest: dict[str, Any], model: ModelRef) -> _Setup | None:
    """The setup of the folder's last score when it was made with these very model files (a local folder with
    the same fingerprint) and this version's conventions; None otherwise (then the tokenizer decides)."""
    earlier = manifest.get("score")
    if not model.local or not isinstance(earlier, dict) or earlier.get("convention") != CONVENTION:
        return None
    fingerprint = model_record(model).get("model_fingerprint")
    cache, turn_end = earlier.get("cache"), earlier.get("end_of_turn")
    if earlier.get("model_fingerprint") != fingerprint or not isinstance(cache, str) \
            or not isinstance(turn_end, dict) or not isinstance(earlier.get("system_role_supported"), bool):
        return None
    return _Setup(Path(cache).name, earlier["system_role_supported"], turn_end)


def _check_score_record(record: dict[str, Any]) -> None:
    if not isinstance(record.get("text"), str) or not isinstance(record.get("lp"), dict) \
            or set(record["lp"]) != {name for name, _, _ in SCORED}:
        raise ValueError("needs text and lp with the seven scores")


def _cached_scores(store: ShardStore, targets: list[TripletRecord]) -> dict[str, dict[str, float | None]]:
    """Scores in the cache whose row texts are unchanged, by row id (a line of another shape is one clear line)."""
    cached = store.load("scores", _check_score_record)
    found = {}
    for record in targets:
        entry = cached.get(record.id)
        if entry is not None and entry.get("text") == row_text_hash(record):
            found[record.id] = entry["lp"]
    return found


def build_requests(record: TripletRecord, tokenizer: Any, system_supported: bool,
                   end_ids: Sequence[int] | None = None) -> list[Any]:
    """The seven (context, response) requests of a row in SCORED order, keyed `<row id>/<field>`.

    `end_ids`: the template's end-of-turn ids (derived from the tokenizer when not given)."""
    from ssogen.chat import end_of_turn, response_token_ids, sso_context_ids
    from ssogen.engine.scoring import ScoreRequest

    if end_ids is None:
        end_ids = end_of_turn(tokenizer).ids
    # The same helpers as the training collator: score and train see identical token sequences.
    prompts = sso_context_ids(tokenizer, record.prompt, record.system_good, record.system_bad,
                              system_supported=system_supported)
    responses = {v: response_token_ids(tokenizer, getattr(record, f"response_{v}"), end_ids,
                                       complete=getattr(record, f"finish_reason_{v}") != "length")
                 for v in ("good", "bad", "raw")}
    return [ScoreRequest(f"{record.id}/{name}", prompts[context], responses[response])
            for name, context, response in SCORED]


def score_folder(
    out_dir: str | Path,
    model: str,
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

    `progress` is called once when the cached rows are known (before any engine loads) and after each chunk;
    `scorer` lets a caller reuse a built engine; `templates` is a folder whose card.md.jinja replaces the bundled
    card template."""
    folder = OutputFolder(out_dir)
    folder.read_manifest()  # not an ssogen output folder: one line, before the folder is locked
    card_templates(templates)  # a bad --templates fails now, not after the scoring
    model_ref = resolve_model(model)
    require_available(model_ref)
    # One writer per folder: a generate or another score writing it fails this one at once.
    with folder.claim("ssogen score"):
        return _score_claimed(folder, model_ref, engine=engine, engine_options=engine_options, chunk_rows=chunk_rows,
                              filter_options=filter_options, progress=progress, scorer=scorer, templates=templates)


def _score_claimed(folder: OutputFolder, model_ref: ModelRef, *, engine: EngineKind,
                   engine_options: EngineOptions | None, chunk_rows: int,
                   filter_options: LikelihoodFilterOptions | None, progress: Callable[[ScoreProgress], None] | None,
                   scorer: Any, templates: str | Path | None) -> ScoreReport:
    from ssogen.engine.launch import make_scorer

    records = folder.read_triplets()
    manifest = folder.read_manifest()
    targets = [r for r in records if likelihood_candidate(r)]
    # The cache is looked up before any engine loads, by the model's files alone when an earlier score of this
    # model left its key in the manifest, else with the tokenizer: a fully scored folder loads neither.
    setup = _earlier_setup(manifest, model_ref) if scorer is None else None
    store = ShardStore(folder, folder.score_cache(setup.key)) if setup else None
    scores = _cached_scores(store, targets) if store else {}
    if setup is None or store is None or len(scores) < len(targets):  # the tokenizer decides the requests
        setup = _setup(model_ref, scorer.tokenizer if scorer is not None else _load_tokenizer(model_ref))
        store = ShardStore(folder, folder.score_cache(setup.key))
        scores = _cached_scores(store, targets)
    from_cache = len(scores)
    pending = [r for r in targets if r.id not in scores]
    owns_scorer = scorer is None  # a scorer built here (maybe a pool of engine processes) is stopped here
    system_supported, turn_end_ids = setup.system_supported, setup.end_of_turn["ids"]
    try:
        if progress is not None:
            progress(ScoreProgress(from_cache, len(targets), 0.0))
        if pending and scorer is None:
            scorer = make_scorer(engine, model_ref.path, engine_options, state_dir=folder.work_dir)
        first_call = time.monotonic()
        for start in range(0, len(pending), chunk_rows):
            chunk = pending[start:start + chunk_rows]
            requests: list[Any] = []
            fitting: list[TripletRecord] = []
            finished: list[dict[str, Any]] = []
            for record in chunk:
                row_requests = build_requests(record, scorer.tokenizer, system_supported, turn_end_ids)
                if max(r.length for r in row_requests) > scorer.max_sequence_length:
                    # left unscored (null): the likelihood filter drops it as `likelihood:unscored`
                    finished.append({"id": record.id, "text": row_text_hash(record),
                                     "lp": dict.fromkeys((n for n, _, _ in SCORED), None)})
                    continue
                fitting.append(record)
                requests.extend(row_requests)
            means = scorer.mean_logprobs(requests)
            for number, record in enumerate(fitting):
                values = means[number * len(SCORED):(number + 1) * len(SCORED)]
                finished.append({"id": record.id, "text": row_text_hash(record),
                                 "lp": {name: value for (name, _, _), value in zip(SCORED, values, strict=True)}})
            store.append("scores", finished)
            scores.update({entry["id"]: entry["lp"] for entry in finished})
            if progress is not None:
                progress(ScoreProgress(from_cache + min(start + chunk_rows, len(pending)), len(targets),
                                       time.monotonic() - first_call))
    except KeyboardInterrupt:  # the finally below closes the store
        raise UserError(f"interrupted: {len(scores)} of {len(targets)} rows are scored and saved in "
                        f"{store.dir}; run the same command again to resume", exit_code=130) from None
    finally:
        store.close()
        if owns_scorer and scorer is not None:
            close_engine(scorer)
    too_long = sum(1 for lp in scores.values() if all(v is None for v in lp.values()))

    updated = [r.model_copy(update=scores[r.id]) if r.id in scores else r for r in records]
    if filter_options is not None:
        updated = apply_likelihood_filter(updated, filter_options)
    counts = folder.write_configs(updated, SplitSpec.from_manifest(manifest))  # the queries keep their split
    dropped = Counter(r.drop_reason or "" for r in updated if not r.kept)
    manifest["score"] = {
        **model_record(model_ref), "engine": getattr(scorer, "name", engine), "convention": CONVENTION,
        "system_role_supported": setup.system_supported, "end_of_turn": setup.end_of_turn,
        "rows_scored": sum(1 for r in updated if has_pair_scores(r)), "rows_too_long": too_long,
        "filter": filter_options.model_dump() if filter_options is not None else None,
        "configs": counts, "cache": folder.relative(store.dir),
    }
    folder.write_manifest(manifest)
    refresh(folder.root, templates=templates)
    return ScoreReport(rows=len(targets), scored_now=len(pending), from_cache=from_cache, too_long=too_long,
                       dropped_by_reason=dict(dropped.most_common()), counts=counts,
                       cache_dir=str(store.dir))
