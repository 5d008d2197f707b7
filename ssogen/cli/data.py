"""CLI commands that inspect and publish datasets (`score`, `stats`, `push-to-hub`).

They parse options, check the folder and print: the work is done in `ssogen.dataset` (stats, card, publish,
score, license).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ssogen.cli.common import (
    all_work_saved,
    command_log,
    console,
    empty_pairs_note,
    note_lock_takeover,
    progress_bar,
    say,
    show,
    user_errors,
    warn,
    writes_nothing,
)
from ssogen.cli.options import with_options
from ssogen.cli.stats_tables import print_stats
from ssogen.dataset.configs import CONFIGS
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.license import check_license, license_note, record_license
from ssogen.dataset.options import PushOptions, StatsOptions
from ssogen.dataset.score import ScoreConfig
from ssogen.dataset.special_files import refuse_special_files
from ssogen.dataset.triplet_files import check_footers, check_pages
from ssogen.errors import UserError
from ssogen.formatting import counted, named_counts
from ssogen.ownership import not_complete
from ssogen.settings_resolution import resolve_settings

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.dataset.score import ScoreProgress
    from ssogen.models import ModelRef


def check_license_flag(value: str) -> None:
    try:
        check_license(value)
    except ValueError as exc:
        raise UserError(f"--license: {value!r} is {exc}") from None


def set_license(folder: Path, value: str | None) -> None:
    """Record --license in the manifest (the card is re-rendered from it afterwards)."""
    if value is None:
        return
    check_license_flag(value)
    note = license_note(value)
    if note:
        warn(note)
    record_license(folder, value)


def _require_folder(folder: Path, *, complete: bool = False) -> None:
    """An ssogen output folder with a readable manifest and triplets: checked before its log is opened in it, so
    that bad input writes nothing. `complete`: also refuse a run stopped while its data files were rewritten (they
    may disagree: stats would describe half of it and render a card over it); `score` is what finishes such a run.
    No file the command reads is a pipe (its open would block). The triplets' pages are decoded, not made records
    (`check_pages`): a file that is not parquet, is cut short or has a page that cannot be decoded, or files that
    disagree on the columns, are refused with the lines reading the rows gives. The command reads the rows."""
    refuse_special_files(folder)
    out = OutputFolder(folder)
    check_pages(out.paths("triplets"), out.config_dir("triplets"))
    unfinished = not_complete(out.manifest, out.read_manifest().get("status"))
    if complete and unfinished:
        raise UserError(unfinished)


@with_options(StatsOptions, config_flag=None)
@user_errors
def stats_command(
    options: dict[str, Any],
    folder: Annotated[Path, typer.Argument(help="An ssogen output folder.")],
) -> None:
    """Funnel, lengths, length bias, duplicates, leakage, truncation and on-policy-ness of a dataset.

    Writes FOLDER/stats.json, the plots and the refreshed card."""
    from ssogen.dataset.card import card_is_generated, card_templates
    from ssogen.dataset.refresh import refresh

    settings = resolve_settings(StatsOptions, options, accepts_config=False)
    card, templates, license_id = settings.card, settings.templates, settings.license_id
    if card:
        card_templates(templates)  # a bad --templates fails before anything is written
    if license_id is not None:
        check_license_flag(license_id)
    _require_folder(folder, complete=True)
    out = OutputFolder(folder)
    for config in (c for c in CONFIGS if c != "triplets"):  # the triplets: decoded by _require_folder
        check_footers(out.split_files(config), out.config_dir(config))
    # One writer per folder: stats rewrites stats.json, the plots and the card, which a running score also writes.
    with OutputFolder(folder).claim("ssogen stats") as left_behind, command_log(folder, "stats", libraries=False):
        note_lock_takeover(left_behind)
        set_license(folder, license_id)
        rewrite_card = card and card_is_generated(folder)
        stats = refresh(folder, plots=settings.plots, card=card, templates=templates)
        if settings.as_json:
            console.out(json.dumps(stats.model_dump(), indent=2), highlight=False)
            return
        print_stats(stats, folder)
        written = ["stats.json", *stats.plots, *(["README.md"] if rewrite_card else [])]
        say(f"wrote {', '.join(written)} in {folder}")
        if card and not rewrite_card:
            say("README.md was not written by ssogen: left as it is")


@with_options(PushOptions, config_flag=None)
@user_errors
def push_to_hub_command(
    options: dict[str, Any],
    folder: Annotated[Path, typer.Argument(help="An ssogen output folder.")],
) -> None:
    """Upload FOLDER to a Hub dataset repository as one commit; in-progress state and logs stay local.

    What stays local: the .ssogen/ folder (shards, caches, locks) and the command logs."""
    if options.get("dry_run"):
        writes_nothing()  # first: a Ctrl-C in the imports below says nothing is lost
    from ssogen.dataset import publish
    from ssogen.redaction import hide

    hide(options["token"])  # from here on no log line and no message can show it
    settings = resolve_settings(PushOptions, options, accepts_config=False)
    repo_id, token, license_id = settings.repo_id, settings.token, settings.license_id
    allow_incomplete, templates = settings.allow_incomplete, settings.templates
    if license_id is not None:
        check_license_flag(license_id)
    refuse_special_files(folder)  # a FIFO manifest.json blocked even the dry run forever
    publish.refuse_special_uploads(folder)  # a FIFO among the files to upload was left out without a word
    if settings.dry_run:
        if license_id is not None:
            raise UserError("--license with --dry-run: a dry run writes nothing; set the license with `ssogen stats "
                            "FOLDER --license ID` first, or push without --dry-run")
        if token and token.strip():  # a token given is checked as the push would (no login needed to look)
            publish.resolve_token(token)
        files, card = publish.dry_run(folder, repo_id, allow_incomplete=allow_incomplete, templates=templates)
        table = Table(title=f"would upload to {repo_id} (dataset)", title_justify="left")
        table.add_column("path")
        table.add_column("bytes", justify="right")
        for f in files:
            table.add_row(f.path_in_repo, str(f.size))
        console.print(table)
        console.print(card, markup=False, highlight=False, soft_wrap=True)
        say("dry run: nothing was uploaded")
        return
    publish.validate_repo_id(repo_id)
    OutputFolder(folder).read_manifest()  # not an ssogen output folder: refused before the lock marks it as one
    # The lock: a score or stats running meanwhile would rewrite the files while they are read for the upload. The
    # folder is checked once, under it (what is checked is what goes up), and before the log: bad input logs nothing.
    with OutputFolder(folder).claim("ssogen push-to-hub") as left_behind:
        counts = publish.check_publishable(folder, allow_incomplete=allow_incomplete)
        publish.resolve_token(token)  # none anywhere, or one with characters no token has: before the log too
        with command_log(folder, "push-to-hub", libraries=False):
            note_lock_takeover(left_behind)
            set_license(folder, license_id)
            result = publish.push_to_hub(folder, repo_id, private=settings.private, revision=settings.revision,
                                         commit_message=settings.commit_message, token=token,
                                         allow_incomplete=allow_incomplete, templates=templates, checked=counts)
            show(f"pushed {len(result.files)} files to {result.repo_id} in one commit: {result.commit_url}",
                 highlight=False, markup=False, soft_wrap=True)


@with_options(ScoreConfig, config_flag=None)
@user_errors
def score_command(
    options: dict[str, Any],
    folder: Annotated[Path, typer.Argument(help="An ssogen output folder.")],
) -> None:
    """Add mean token log-probs of y+ and y- under x, x+ and x- (yo: under x) to every row; resumable.

    With --filter likelihood, rows failing the paper code's likelihood filter are dropped from the pair
    configs with the reason likelihood:<stage>. Stats, plots and the card are refreshed."""
    from ssogen.fingerprint import check_model_available
    from ssogen.models import resolve_model

    settings = resolve_settings(ScoreConfig, options, accepts_config=False)
    _require_folder(folder)
    model = check_model_available(resolve_model(settings.model))  # a hub id: its commit, asked once per run
    # One writer per folder, claimed before the log (which imports transformers): a busy folder fails in a second.
    with OutputFolder(folder).claim("ssogen score") as left_behind, command_log(folder, "score"):
        note_lock_takeover(left_behind)
        report = _score_with_progress(folder, settings, model)
        all_work_saved()
        show(f"scored {counted(report.scored_now, 'row')} ({report.from_cache} from the cache, {report.too_long} too "
             f"long to score) of {report.rows}; configs: " + named_counts(report.counts),
             highlight=False, markup=False)
        if report.dropped_by_reason:
            show("dropped: " + named_counts(report.dropped_by_reason),
                 highlight=False, markup=False)
        note = empty_pairs_note(report.counts)
        if note:
            warn(note)


def _score_with_progress(folder: Path, settings: ScoreConfig, model: ModelRef) -> Any:
    """score_folder under a progress bar: rows scored, rows per second of engine time, time left."""
    import logging

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from ssogen.dataset.score import score_folder

    progress = progress_bar(TextColumn("[bold]score"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    task = progress.add_task("score", total=None, info="")
    first: list[int] = []  # rows done when the engine started

    def on_progress(update: ScoreProgress) -> None:
        if not first:  # the cache is read: the bar starts here (a bad input has failed before)
            first.append(update.rows_done)
            info = "loading the engine" if update.rows_done < update.rows_total else "all rows in the cache"
            progress.update(task, total=update.rows_total, completed=update.rows_done, info=info)
            progress.start()
            return
        rate = (update.rows_done - first[0]) / update.engine_s if update.engine_s > 0 else 0.0
        left = (update.rows_total - update.rows_done) / rate if rate > 0 else None
        info = f"{rate:.1f} rows/s, " + (f"{left:.0f} s left" if left is not None else "time left unknown")
        progress.update(task, completed=update.rows_done, info=info)
        logging.getLogger("ssogen.score").info("%d of %d rows scored: %s", update.rows_done, update.rows_total,
                                               info)

    try:
        return score_folder(folder, model, engine=settings.engine, engine_options=settings.engine_options(),
                            chunk_rows=settings.resolved_chunk_rows, filter_options=settings.filter_options(),
                            progress=on_progress, templates=settings.templates)
    finally:
        progress.stop()
