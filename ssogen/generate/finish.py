"""The end of a `generate` run, once every row is saved: the dataset folder's configs, resolved config, library,
manifest, card (and stats, when `stats` wrote them before); a rewrite of a scored run keeps its scores and filter.

The rows are read back from the shards a batch at a time, once: only where they lie is held (`SavedRecords`), not the
rows, which are GBs at 100k rows. The triplets' table is built on that pass, and the summary and the statistics are
counted on it (a pass parses and validates every saved line, ~1 s per 20k rows: there were six); the pair configs are
built from the triplets' files as written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ssogen.chat import end_of_turn, supports_system_role
from ssogen.dataset.folder import LIBRARY, OutputFolder
from ssogen.dataset.kept_scores import SCORES_DROPPED, KeptScores, LastScore, keep_scores
from ssogen.dataset.leakage import adjectives_of
from ssogen.dataset.shard_index import SavedRecords
from ssogen.dataset.splits import SplitSpec
from ssogen.dataset.stats import StatsBuilder
from ssogen.dataset.triplet_files import BATCH_ROWS
from ssogen.engine import stop_token_ids_of
from ssogen.envinfo import stack_versions
from ssogen.fingerprint import model_record
from ssogen.generate.config import RunConfig, public_yaml
from ssogen.generate.plan import RunPlan
from ssogen.generate.rerun import write_card_and_stats
from ssogen.generate.steps.common import Session
from ssogen.generate.summary import Tally, summarize
from ssogen.principles import Library
from ssogen.records import TripletRecord


class Finished:
    """The run's rows in input order as records, read from the shards a batch at a time on each call."""

    def __init__(self, plan: RunPlan, saved: SavedRecords) -> None:
        self.plan, self.saved = plan, saved

    def __call__(self) -> Iterator[list[TripletRecord]]:
        rows = self.plan.rows
        for start in range(0, len(rows), BATCH_ROWS):
            batch = self.saved.read([row.id for row in rows[start:start + BATCH_ROWS]])
            yield [TripletRecord.model_validate(record) for record in batch]


class Counted:
    """What the end of a run counts on its one pass over the saved rows (the `tap` of `OutputFolder.write_configs`):
    the summary's tally and the statistics (leakage terms from the run's library, as `stats` reads it)."""

    def __init__(self, library: Library) -> None:
        self.tally = Tally()
        self.numbers = StatsBuilder(adjectives_of(library))

    def __call__(self, batch: list[TripletRecord]) -> None:
        self.tally.add(batch)
        self.numbers.add(batch)


def run_split(config: RunConfig) -> SplitSpec | None:
    """The train/test split the run's data files are written in (None: every row in train)."""
    return SplitSpec(test_size=config.test_size, seed=config.seed) if config.test_size else None


def _write_with_scores(plan: RunPlan, folder: OutputFolder, saved: SavedRecords, split: SplitSpec | None,
                       counted: Counted, last: LastScore, system_supported: bool
                       ) -> tuple[dict[str, int], KeptScores | None]:
    """The data files of a scored run written again, with the scores and filter of its last score (`keep_scores`:
    every row is held at once, as `ssogen score` holds them); the rows per config and what was kept (None: no row's
    score was in its cache)."""
    rows = [record for batch in Finished(plan, saved)() for record in batch]
    counted.tally.add(rows)  # the summary counts generate's rows, before any score (`score` leaves it as it is)
    kept = keep_scores(rows, last)
    counts = folder.write_configs(kept.rows if kept else rows, split, counted.numbers.add,
                                  system_supported=system_supported)
    return counts, kept


def finish_run(plan: RunPlan, folder: OutputFolder, saved: SavedRecords, *, session: Session | None, tokenizer: Any,
               engine_settings: dict[str, Any] | None, resumed: bool, undone: list[str], started: float,
               last_score: LastScore | None = None) -> dict[str, Any]:
    """Write the dataset folder from the saved rows; its manifest. `session`: this invocation's engine session
    (None when every row was saved before); `started`: the run's start (time.monotonic) for its wall time;
    `last_score`: the folder's last `ssogen score`, whose scores and filter the rewritten data files keep."""
    config = plan.config
    split = run_split(config)
    counted = Counted(plan.library)
    kept = None
    if last_score is None:
        counts = folder.write_configs(Finished(plan, saved), split, counted,
                                      system_supported=supports_system_role(tokenizer))
    else:
        counts, kept = _write_with_scores(plan, folder, saved, split, counted, last_score,
                                          supports_system_role(tokenizer))
    model = model_record(plan.model, lambda: plan.model_fingerprint.digest)  # the weights hashed once per run
    folder.write_resolved_config(public_yaml(config, model=model["model"], prompts=plan.prompts.public))
    folder.write_library(plan.loaded_library.text)
    manifest = {
        "name": folder.root.resolve().name,
        "status": "complete",
        "license": config.license,
        "versions": stack_versions(),
        **model,
        "engine": session.engine.name if session else config.engine,
        "engine_options": config.engine_options().model_dump(),  # as given; engine_settings: what they became
        "engine_settings": engine_settings,
        "seed": config.seed,
        "sampling": {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens,
                     "raw_greedy": config.raw_greedy, "seeds": "per request: sha256(seed, row id, variant)",
                     "stop_token_ids": stop_token_ids_of(plan.model.path, tokenizer)},
        "end_of_turn": end_of_turn(tokenizer).as_dict(),
        "selection": {"mode": config.selection, "features_per_query": config.features_per_query,
                      "extra_prob": config.extra_prob, "principle_source": config.principle_source},
        # Names and hashes only: a local path would put the user's home folder into a published dataset.
        "library": {"name": plan.library.name, "version": plan.library.version, "file": LIBRARY,
                    "origin": plan.loaded_library.origin, "sha256": plan.loaded_library.sha256},
        "templates": {"origin": "bundled" if config.templates is None else "--templates",
                      "digest": plan.templates_digest},
        # queries_sha256: every usable row's (position, text), as in the fingerprint (the file's bytes: sha256).
        "prompts": {**plan.prompts.public, "prompt_field": config.prompt_field,
                    "queries_sha256": plan.prompts.queries_sha256,
                    "conversation_parts_dropped": dict(plan.prompts.reduced)},
        "split": split.model_dump() if split else None,
        "filters": {"keep_truncated": config.keep_truncated, "keep_empty": config.keep_empty},
        "system_role_merged": not supports_system_role(tokenizer),
        "fingerprint": plan.fingerprint()["fingerprint"],
        "configs": counts,
        "resumed": resumed,
        "requests_this_invocation": dict(session.requests) if session else {},
        "summary": summarize(counted.tally, plan.prompts, time.monotonic() - started, session.tokens if session else 0,
                             session.generation_s if session else None, max_tokens=config.max_tokens),
        "tokens_total": counted.tally.tokens,
    }
    warnings = list(undone)
    if kept is not None:
        manifest["score"] = kept.entry(counts)
        unscored = kept.warning(manifest["name"])
        warnings += [unscored] if unscored else []
    elif last_score is not None:
        warnings.append(SCORES_DROPPED)
    manifest["summary"]["warnings"] += warnings
    folder.write_manifest(manifest)
    # A card.md.jinja in --templates replaces the bundled one.
    write_card_and_stats(folder, config.templates, counted.numbers)
    return manifest
