"""The `generate` run: library + queries -> requests -> engine -> records -> pairs -> dataset folder.

Per chunk of rows: (1) feature selection by the policy (one batched call), (2) optional query-specific
principles (one batched call), (3) y+/y-/yo for every row in ONE batched call, ordered so that requests sharing
a system prompt are adjacent (prefix caching); see `ssogen.generate.steps`. Finished stages go to the
append-only store (dataset/shards.py) after each call, so a killed run resumes without recomputing them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.chat import end_of_turn, has_chat_template, supports_system_role
from ssogen.dataset.folder import LIBRARY, OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.dataset.splits import SplitSpec
from ssogen.engine import Engine, close_engine, stop_token_ids_of
from ssogen.engine.launch import make_engine
from ssogen.envinfo import stack_versions
from ssogen.errors import STOPPED, UserError
from ssogen.fingerprint import model_record
from ssogen.generate.config import RunConfig, public_yaml
from ssogen.generate.inputs import PromptsRead, Row
from ssogen.generate.plan import RunPlan, plan_run
from ssogen.generate.rerun import unchanged_finished_run, undone_work, write_card_and_stats
from ssogen.generate.steps.common import Session
from ssogen.generate.steps.principle_writing import write_principles
from ssogen.generate.steps.sampling import (
    check_selection_record,
    contrastive_prompts,
    sample_responses,
    too_long_record,
)
from ssogen.generate.steps.selection import select_features
from ssogen.models import engine_load_errors, load_error, require_available
from ssogen.records import VARIANTS, TripletRecord


@dataclass
class ProgressUpdate:
    rows_done: int
    rows_total: int
    kept: int
    dropped: int
    tokens: int  # generated in this invocation
    elapsed_s: float  # engine time: since the first engine call (0 while the model loads)


@dataclass
class GenerateResult:
    out: Path
    manifest: dict[str, Any]
    unchanged: bool = False  # a finished run asked for again: nothing was written
    written: list[TripletRecord] | None = None  # the rows this invocation wrote (None: unchanged)

    @property
    def records(self) -> list[TripletRecord]:
        """Every row, in input order: those written, or those of the unchanged run (read from its folder now)."""
        if self.written is None:
            self.written = OutputFolder(self.out).read_triplets()
        return self.written


def load_tokenizer(plan: RunPlan) -> Any:
    """The policy's tokenizer, with a chat template (the first heavy import: transformers)."""
    require_available(plan.model)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(plan.model.path)
    except Exception as exc:
        raise load_error(plan.model, exc, what="load the tokenizer") from None
    if not has_chat_template(tokenizer):
        raise UserError(f"--model {plan.config.model}: the tokenizer has no chat template")
    return tokenizer


def _build_engine(plan: RunPlan) -> Engine:
    load_tokenizer(plan)  # a clear line for a model without a usable tokenizer, before the engine's own errors
    config = plan.config
    with engine_load_errors(plan.model, config.engine, max_model_len=config.max_model_len):
        return make_engine(config.engine, plan.model.path, config.engine_options(),
                           state_dir=OutputFolder(config.out).work_dir)


def _select(session: Session, rows: list[Row]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Selection records (S+ / S- decided) for rows, and rows too long to prompt as finished, dropped records."""
    chosen, answers, too_long = select_features(session, rows)
    texts = write_principles(session, rows, chosen) if session.config.principle_source == "policy" else {}
    records = [contrastive_prompts(session, row.id, chosen[row.id], answers[row.id], texts.get(row.id))
               for row in rows if row.id in chosen]
    return records, [too_long_record(row, session.config, None) for row in too_long]


# Above these shares of the sampled rows the run is not what the user thinks it is: the summary warns.
TRUNCATED_WARNING_SHARE = 0.2
FILLED_WARNING_SHARE = 0.2


def run_warnings(records: list[TripletRecord], max_tokens: int) -> list[str]:
    """Warnings about the data as a whole: too many responses cut at --max-tokens, feature selection falling back to
    a random pick for too many rows (then the principles are mostly chance, not the policy's choice), or policy-written
    principles falling back to the library's text for too many."""
    sampled = [r for r in records if r.drop_reason != "prompt_too_long"]
    if not sampled:
        return []
    found = []
    truncated = sum(any(f.startswith("truncated_") for f in r.flags) for r in sampled)
    if truncated > TRUNCATED_WARNING_SHARE * len(sampled):
        found.append(f"{truncated} of {len(sampled)} rows ({truncated / len(sampled):.0%}) have a response cut at "
                     f"--max-tokens {max_tokens}: raise --max-tokens, or the pairs compare unfinished answers")
    filled = sum(r.selection_filled for r in sampled)
    if filled > FILLED_WARNING_SHARE * len(sampled):
        guided = all(r.selection_mode == "guided" for r in sampled)  # cut short, or a library past the exact regex
        remedy = ("a larger --selection-max-tokens or fewer --features-per-query" if guided
                  else "--selection guided or fewer --features-per-query")
        found.append(f"feature selection fell back to a random pick for {filled} of {len(sampled)} rows "
                     f"({filled / len(sampled):.0%}): the policy seldom named enough valid features, so most "
                     f"principles are chance (try {remedy})")
    fallback = sum(r.principle_fallback for r in sampled)
    if fallback > FILLED_WARNING_SHARE * len(sampled):
        found.append(f"--principle-source policy: the policy wrote no usable principle text for {fallback} of "
                     f"{len(sampled)} rows ({fallback / len(sampled):.0%}), so they use the library's text (try a "
                     "stronger policy, or --principle-source library)")
    return found


def summarize(records: list[TripletRecord], prompts: PromptsRead, wall_s: float, tokens: int,
              generation_s: float | None = None, *, max_tokens: int | None = None) -> dict[str, Any]:
    """The run's numbers for the manifest and the printed summary. `generation_s`: engine time (from the first
    engine call), which tokens/s is measured over; model loading is in `wall_time_s` only."""
    kept = [r for r in records if r.kept]

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 2) if values else None

    lengths = {v: mean([getattr(r, f"num_tokens_{v}") for r in kept]) for v in VARIANTS}
    good, bad = lengths["good"], lengths["bad"]
    return {
        "rows_in": len(prompts.rows),  # the rows taken (under --limit: the first N usable ones)
        "rows_read": prompts.rows_read,
        "input_rows": prompts.input_rows,
        "rows_skipped": dict(prompts.skipped),
        # Message-list rows whose query is their last user turn: the parts left out -> rows.
        "conversation_parts_dropped": dict(prompts.reduced),
        "rows": len(records),
        "sampled": sum(1 for r in records if r.drop_reason != "prompt_too_long"),
        "kept": len(kept),
        "dropped": dict(Counter(r.drop_reason for r in records if not r.kept)),
        "selection_filled": sum(r.selection_filled for r in records),
        "principle_fallback": sum(r.principle_fallback for r in records),
        "flags": dict(Counter(f for r in records for f in r.flags)),
        "empty_responses": {v: sum(f"empty_{v}" in r.flags for r in records) for v in VARIANTS},
        "mean_tokens_kept": lengths,
        "chosen_rejected_length_ratio": round(good / bad, 3) if good and bad else None,
        "feature_counts": dict(Counter(n for r in records for n in [*r.features, *r.extra])),
        "wall_time_s": round(wall_s, 2),
        "generation_time_s": round(generation_s, 3) if generation_s else None,
        "tokens_generated": tokens,
        "tokens_per_s": round(tokens / generation_s, 1) if generation_s and tokens else None,
        "warnings": run_warnings(records, max_tokens) if max_tokens is not None else [],
    }


def run_generate(config: RunConfig, *, overwrite: bool = False, engine: Engine | None = None,
                 on_progress: Callable[[ProgressUpdate], None] | None = None,
                 plan: RunPlan | None = None, request_order: str = "grouped") -> GenerateResult:
    """Run (or resume) a generation into config.out and write the dataset folder. `engine` may be given to
    reuse a loaded engine (benchmarks); it must match config.model."""
    plan = plan or plan_run(config)
    folder = OutputFolder(config.out)
    # One writer per folder; the command took the lock already, before its heavy imports (this is then a no-op).
    with folder.claim("ssogen generate"):
        return _run_claimed(plan, folder, overwrite=overwrite, engine=engine, on_progress=on_progress,
                            request_order=request_order)


def _check_row(record: dict[str, Any]) -> None:
    TripletRecord.model_validate(record)


def _run_claimed(plan: RunPlan, folder: OutputFolder, *, overwrite: bool, engine: Engine | None,
                 on_progress: Callable[[ProgressUpdate], None] | None, request_order: str) -> GenerateResult:
    started = time.monotonic()
    config = plan.config
    owns_engine = engine is None  # an engine built here (maybe a pool of engine processes) is stopped here
    store = ShardStore(folder)
    resumed = store.prepare(plan.fingerprint(), overwrite=overwrite, hints=plan.refusal_hints,
                            earlier=plan.earlier_fingerprints)
    split = SplitSpec(test_size=config.test_size, seed=config.seed) if config.test_size else None
    unchanged = None if overwrite else unchanged_finished_run(
        folder, plan.fingerprint()["fingerprint"], [row.id for row in plan.rows], split, config.license,
        config.templates)
    if unchanged is not None:  # nothing to write; this invocation resumed and ran no request
        return GenerateResult(folder.root, {**unchanged, "requests_this_invocation": {}, "resumed": True},
                              unchanged=True)
    finished = store.load("rows", _check_row)
    selections = store.load("selection", check_selection_record)
    wanted = {row.id for row in plan.rows}
    pending = [row for row in plan.rows if row.id not in finished]
    undone = undone_work(folder)
    session: Session | None = None
    # Its data files are about to change (new rows, or another split, license or subset of the finished ones): not
    # to be published or trained on as finished until the manifest says so again.
    folder.mark_incomplete()
    if not pending and on_progress is not None:  # everything was done by an earlier invocation
        kept = sum(1 for i in wanted if finished[i]["kept"])
        on_progress(ProgressUpdate(len(plan.rows), len(plan.rows), kept, len(plan.rows) - kept, 0, 0.0))
    try:
        if pending:
            engine = engine or _build_engine(plan)
            session = Session.open(config, plan.library, plan.templates, engine, plan.model.path)
            store.save_engine_settings(getattr(engine, "settings", None))

            tally = [0, 0]  # this run's rows done and kept: counted as they come (a recount per chunk was n²)

            def report(new: Iterable[dict[str, Any]]) -> None:
                for record in new:
                    if record["id"] in wanted:
                        tally[0], tally[1] = tally[0] + 1, tally[1] + bool(record["kept"])
                if on_progress is not None and session is not None:
                    on_progress(ProgressUpdate(tally[0], len(plan.rows), tally[1], tally[0] - tally[1],
                                               session.tokens, session.generation_s))

            report(finished[i] for i in wanted if i in finished)  # what earlier invocations saved
            for start in range(0, len(pending), config.chunk_size):
                chunk = pending[start:start + config.chunk_size]
                new_selections, too_long = _select(session, [row for row in chunk if row.id not in selections])
                store.append("selection", new_selections)
                selections.update({s["id"]: s for s in new_selections})
                store.append("rows", too_long)
                finished.update({r["id"]: r for r in too_long})
                to_sample = [row for row in chunk if row.id not in finished]
                sampled = sample_responses(session, to_sample, selections, request_order)
                store.append("rows", sampled)
                finished.update({r["id"]: r for r in sampled})
                report([*too_long, *sampled])
    except STOPPED:  # the finally below closes the store
        saved = sum(1 for i in wanted if i in finished)
        raise UserError(f"interrupted: {saved} of {len(plan.rows)} rows are saved in {folder.work_dir}; run the "
                        "same command again to resume", exit_code=130) from None
    finally:
        store.close()
        if owns_engine and engine is not None:
            close_engine(engine)
    # Nothing left to sample: learn the template's behaviour from the tokenizer alone.
    tokenizer = session.tokenizer if session else load_tokenizer(plan)
    records = [TripletRecord.model_validate(finished[row.id]) for row in plan.rows]
    counts = folder.write_configs(records, split)
    model = model_record(plan.model)
    folder.write_resolved_config(public_yaml(config, model=model["model"], prompts=plan.prompts.public))
    folder.write_library(plan.loaded_library.text)
    tokens = session.tokens if session else 0
    manifest = {
        "name": folder.root.resolve().name,
        "status": "complete",
        "license": config.license,
        "versions": stack_versions(),
        **model,
        "engine": session.engine.name if session else config.engine,
        "engine_options": config.engine_options().model_dump(),  # as given; engine_settings: what they became
        "engine_settings": getattr(session.engine, "settings", None) if session else store.saved_engine_settings(),
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
        "summary": summarize(records, plan.prompts, time.monotonic() - started, tokens,
                             session.generation_s if session else None, max_tokens=config.max_tokens),
        "tokens_total": sum(r.num_tokens_good + r.num_tokens_bad + r.num_tokens_raw for r in records),
    }
    manifest["summary"]["warnings"] += undone
    folder.write_manifest(manifest)
    write_card_and_stats(folder, config.templates, records)  # a card.md.jinja in --templates replaces the bundled one
    return GenerateResult(out=folder.root, manifest=manifest, written=records)
