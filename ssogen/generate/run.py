"""The `generate` run: library + queries -> requests -> engine -> records -> pairs -> dataset folder.

Per chunk of rows: (1) feature selection by the policy (one batched call), (2) optional query-specific
principles (one batched call), (3) y+/y-/yo for every row in ONE batched call, ordered so that requests sharing
a system prompt are adjacent (prefix caching); see `ssogen.generate.steps`. Finished stages go to the
append-only store (dataset/shards.py) after each call, so a killed run resumes without recomputing them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.chat import end_of_turn, has_chat_template, supports_system_role
from ssogen.dataset.folder import LIBRARY, OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.dataset.splits import SplitSpec
from ssogen.dataset.triplet_files import BATCH_ROWS
from ssogen.engine import Engine, close_engine, stop_token_ids_of
from ssogen.engine.launch import make_engine
from ssogen.envinfo import stack_versions
from ssogen.errors import STOPPED, UserError
from ssogen.fingerprint import model_record
from ssogen.generate.config import RunConfig, public_yaml
from ssogen.generate.inputs import Row
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
from ssogen.generate.summary import summarize
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
    written: list[TripletRecord] | None = None  # every row, once asked for (not held while the folder is written)

    @property
    def records(self) -> list[TripletRecord]:
        """Every row, in input order, read from the folder when first asked for."""
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


def run_generate(config: RunConfig, *, overwrite: bool = False, engine: Engine | None = None,
                 on_progress: Callable[[ProgressUpdate], None] | None = None,
                 plan: RunPlan | None = None) -> GenerateResult:
    """Run (or resume) a generation into config.out and write the dataset folder. `engine` may be given to
    reuse a loaded engine (benchmarks); it must match config.model."""
    plan = plan or plan_run(config)
    folder = OutputFolder(config.out)
    # One writer per folder; the command took the lock already, before its heavy imports (this is then a no-op).
    with folder.claim("ssogen generate"):
        return _run_claimed(plan, folder, overwrite=overwrite, engine=engine, on_progress=on_progress)


def _check_row(record: dict[str, Any]) -> None:
    TripletRecord.model_validate(record)


def _run_claimed(plan: RunPlan, folder: OutputFolder, *, overwrite: bool, engine: Engine | None,
                 on_progress: Callable[[ProgressUpdate], None] | None) -> GenerateResult:
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
                sampled = sample_responses(session, to_sample, selections)
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
    selections.clear()  # their S+ / S- are in the rows now: not held while the dataset is written

    def batches() -> Iterator[list[TripletRecord]]:
        """The rows in input order as records, a batch at a time (all of them at once took GBs at 100k rows)."""
        for start in range(0, len(plan.rows), BATCH_ROWS):
            yield [TripletRecord.model_validate(finished[row.id]) for row in plan.rows[start:start + BATCH_ROWS]]

    counts = folder.write_configs(batches, split)
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
        "summary": summarize((r for batch in batches() for r in batch), plan.prompts, time.monotonic() - started,
                             tokens, session.generation_s if session else None, max_tokens=config.max_tokens),
        "tokens_total": sum(finished[row.id][f"num_tokens_{v}"] for row in plan.rows for v in VARIANTS),
    }
    manifest["summary"]["warnings"] += undone
    folder.write_manifest(manifest)
    write_card_and_stats(folder, config.templates, batches)  # a card.md.jinja in --templates replaces the bundled one
    return GenerateResult(out=folder.root, manifest=manifest)
