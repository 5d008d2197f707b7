"""The `generate` run: library + queries -> requests -> engine -> records -> pairs -> dataset folder.

Per chunk of rows: (1) feature selection by the policy (one batched call), (2) optional query-specific
principles (one batched call), (3) y+/y-/yo for every row in ONE batched call, ordered so that requests sharing
a system prompt are adjacent (prefix caching); see `ssogen.generate.steps`. Finished stages go to the
append-only store (dataset/shards.py) after each call, so a killed run resumes without recomputing them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.chat import has_chat_template
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shard_index import SavedRecords
from ssogen.dataset.shards import ShardStore
from ssogen.engine import Engine, close_engine
from ssogen.engine.launch import make_engine
from ssogen.errors import STOPPED, UserError
from ssogen.generate.config import RunConfig
from ssogen.generate.finish import finish_run, run_split
from ssogen.generate.inputs import Row
from ssogen.generate.plan import RunPlan, plan_run
from ssogen.generate.rerun import scores_to_keep, unchanged_finished_run, undone_work
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
from ssogen.records import TripletRecord


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
    store = ShardStore(folder)
    resumed = store.prepare(plan.fingerprint(), overwrite=overwrite, hints=plan.refusal_hints,
                            earlier=plan.earlier_fingerprints, alike=plan.alike)
    unchanged = None if overwrite else _unchanged(plan, folder)
    if unchanged is not None:  # nothing to write; this invocation resumed and ran no request
        return GenerateResult(folder.root, {**unchanged, "requests_this_invocation": {}, "resumed": True},
                              unchanged=True)
    # Where each saved row and selection lies, not the records themselves (GBs at 100k rows).
    slots = {row.id: slot for slot, row in enumerate(plan.rows)}
    finished = store.index("rows", SavedRecords(slots, flag=lambda record: bool(record["kept"])), _check_row)
    selections = store.index("selection", SavedRecords(slots), check_selection_record)
    last = scores_to_keep(folder)  # before the manifest is marked: it says whether a score was stopped midway
    undone = undone_work(folder, last)
    # Its data files are about to change (new rows, or another split, license or subset of the finished ones): not
    # to be published or trained on as finished until the manifest says so again.
    folder.mark_incomplete()
    progress = _Progress(len(plan.rows), len(finished), sum(finished.flags), on_progress)
    try:
        session = _sample_pending(plan, store, finished, selections, engine, progress)
    except STOPPED:  # the store is closed by then
        raise UserError(f"interrupted: {len(finished)} of {len(plan.rows)} rows are saved in {folder.work_dir}; "
                        "run the same command again to resume", exit_code=130) from None
    # Nothing left to sample: learn the template's behaviour from the tokenizer alone.
    tokenizer = session.tokenizer if session else load_tokenizer(plan)
    settings = getattr(session.engine, "settings", None) if session else store.saved_engine_settings()
    manifest = finish_run(plan, folder, finished, session=session, tokenizer=tokenizer, engine_settings=settings,
                          resumed=resumed, undone=undone, started=started, last_score=last)
    return GenerateResult(out=folder.root, manifest=manifest)


def _unchanged(plan: RunPlan, folder: OutputFolder) -> dict[str, Any] | None:
    config = plan.config
    return unchanged_finished_run(folder, (plan.fingerprint()["fingerprint"], *plan.earlier_fingerprints),
                                  [row.id for row in plan.rows], run_split(config), config.license, config.templates)


@dataclass
class _Progress:
    """The run's rows done and kept, counted as they come (a recount per chunk was n²), for `on_progress`."""

    total: int
    done: int
    kept: int
    on_progress: Callable[[ProgressUpdate], None] | None

    def add(self, new: list[dict[str, Any]], session: Session | None) -> None:
        self.done, self.kept = self.done + len(new), self.kept + sum(bool(r["kept"]) for r in new)
        if self.on_progress is not None:
            tokens, seconds = (session.tokens, session.generation_s) if session else (0, 0.0)
            self.on_progress(ProgressUpdate(self.done, self.total, self.kept, self.done - self.kept, tokens, seconds))


def _save(store: ShardStore, stage: str, records: list[dict[str, Any]], saved: SavedRecords) -> None:
    for record, (path, offset) in zip(records, store.append(stage, records), strict=True):
        saved.add(record, path, offset)


def _sample_pending(plan: RunPlan, store: ShardStore, finished: SavedRecords, selections: SavedRecords,
                    engine: Engine | None, progress: _Progress) -> Session | None:
    """Select and sample the rows not saved yet, a chunk at a time, saving each stage as it finishes; the session
    (None when every row was saved before). Closes the store, and the engine when it built it."""
    config = plan.config
    pending = [row for row in plan.rows if row.id not in finished]
    owns_engine = engine is None  # an engine built here (maybe a pool of engine processes) is stopped here
    session = None
    try:
        if not pending:  # everything was done by an earlier invocation
            progress.add([], None)
            return None
        engine = engine or _build_engine(plan)
        session = Session.open(config, plan.library, plan.templates, engine, plan.model.path)
        store.save_engine_settings(getattr(engine, "settings", None))
        progress.add([], session)  # what earlier invocations saved
        for start in range(0, len(pending), config.chunk_size):
            chunk = pending[start:start + config.chunk_size]
            # A row's S+ / S- are held only while it is sampled: those saved before, and those selected now.
            chosen = {s["id"]: s for s in selections.read([row.id for row in chunk if row.id in selections])}
            new_selections, too_long = _select(session, [row for row in chunk if row.id not in chosen])
            _save(store, "selection", new_selections, selections)
            chosen.update({s["id"]: s for s in new_selections})
            _save(store, "rows", too_long, finished)
            sampled = sample_responses(session, [row for row in chunk if row.id not in finished], chosen)
            _save(store, "rows", sampled, finished)
            progress.add([*too_long, *sampled], session)
        return session
    finally:
        store.close()
        if owns_engine and engine is not None:
            close_engine(engine)
