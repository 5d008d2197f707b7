"""CLI commands of the generation area (`ssogen generate`)."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
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
    with_default,
    writes_nothing,
)
from ssogen.cli.options import with_options
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.license import license_note
from ssogen.errors import STEP_OF_ITERATE_ENV
from ssogen.formatting import counted, named_counts
from ssogen.generate.config import IO_PANEL, RunConfig, resolve_config
from ssogen.generate.skips import skip_report
from ssogen.models import hub_offline, require_available

logger = logging.getLogger("ssogen.generate")


@with_options(RunConfig)
@user_errors
def generate(
    options: dict[str, Any],
    config: Annotated[Path | None, typer.Option(
        help="YAML file with any of these options (dashes or underscores); flags override it.",
        rich_help_panel=IO_PANEL, metavar="FILE")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help=with_default("Replace an output folder of a different configuration.", "off"),
        show_default=False)] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help=with_default("Print the plan and rendered prompts for a few rows; load no model, write "
                                       "nothing.", "off"), show_default=False)] = False,
) -> None:
    """Generate SSO preference data: select principles, sample y+/y-/yo, filter, write a Hub-ready dataset.

    Re-running the same command resumes an interrupted run."""
    if dry_run:
        writes_nothing()  # first: a Ctrl-C in the import below says nothing is lost
    from ssogen.generate.plan import plan_run

    plan = plan_run(resolve_config(options, config))
    note = license_note(plan.config.license)
    if note:
        warn(note)
    if dry_run:  # an --out the run would refuse is refused here too
        resumes = plan.check_output_folder(overwrite=overwrite, look_up_hub=False)
        require_available(plan.model)  # offline, a hub id's local cache is read (no network): a typo fails here too
        _print_dry_run(plan, resumes and not overwrite)
        return
    # Still before any heavy import: a folder that would be refused, or that another run is writing, fails here,
    # in about a second. The lock is held until the run ends.
    plan.check_output_folder(overwrite=overwrite)
    with OutputFolder(plan.config.out).claim("ssogen generate") as left_behind:
        note_lock_takeover(left_behind)
        require_available(plan.model)
        with command_log(plan.config.out, "generate"):
            _run_with_progress(plan, overwrite)


# A prompt is shown up to this many characters, its start and its end (where the query is): a 100 KB query
# filled the terminal with one row.
SHOWN_CHARACTERS = 4000


def _clipped(text: str) -> str:
    half, left_out = SHOWN_CHARACTERS // 2, len(text) - SHOWN_CHARACTERS
    return text if left_out <= 0 else f"{text[:half]}\n… ({left_out} characters left out) …\n{text[-half:]}"


def _print_dry_run(plan: Any, resumes: bool) -> None:
    """The plan, a few rendered rows and the placement; a plan that cannot run is refused before any of it is
    printed (--dp 4 on two cores printed the plan and the rows, then its error)."""
    from ssogen.engine.placement import plan_placement
    from ssogen.generate.dry_run import dry_run_examples, request_counts

    cfg = plan.config
    counts = request_counts(plan, resumes)
    examples = dry_run_examples(plan)
    placement = plan_placement(cfg.model, cfg.engine_options(), cfg.engine, memory=cfg.engine == "vllm")
    placement.check()
    prompts = plan.prompts
    skipped = skip_report(prompts.skipped, prompts.skipped_first, prompts.places, cfg.prompt_field) or "none"
    console.rule("plan")
    hub = "" if plan.model.local else (", a hub id in the local cache" if hub_offline() else
                                       ", a hub id: not looked up by --dry-run")
    console.print(f"model {cfg.model} ({cfg.engine}{hub}), library {plan.library.name} v{plan.library.version} "
                  f"(sha256 {plan.loaded_library.sha256[:12]}), prompts: {plan.prompts.source} (queries sha256 "
                  f"{plan.prompts.queries_sha256[:12]})", markup=False)
    if counts.resumes and counts.done == counts.rows:
        console.print(f"the run in {cfg.out} is finished: {counts.done} of {counted(counts.rows, 'row')} done; "
                      "nothing to generate (--overwrite generates it again)", markup=False)
    elif counts.resumes:
        console.print(f"resumes the run in {cfg.out}: {counts.done} of {counted(counts.rows, 'row')} done, "
                      f"{counted(counts.selections_kept, 'selection')} of the others kept", markup=False)
    writing = (f" + at least {counts.principle_writing} principle writing"
               if counts.principle_writing is not None else "")
    console.print(f"{counted(counts.rows, 'row')} (read {plan.prompts.rows_read} of {plan.prompts.input_rows}, "
                  f"skipped: {skipped}); chunks of {cfg.chunk_size}; requests: {counts.selection} selection{writing} "
                  f"+ {counts.sampling} sampling; k={cfg.features_per_query}, selection {cfg.selection}, principles "
                  f"{cfg.principle_source}; temperature {cfg.temperature}, top-p {cfg.top_p}, max tokens "
                  f"{cfg.max_tokens}; out {cfg.out}", markup=False)
    if plan.prompts.reduced:
        console.print(f"message lists (query = last user turn): {_parts_dropped(plan.prompts.reduced)}",
                      markup=False)
    for example in examples:
        console.rule(f"row {example['id']}")
        console.print("[bold]selection prompt[/]")
        console.print(_clipped(example["selection_prompt"]), markup=False, highlight=False)
        console.print(f"[bold]S+ / S-[/] for features {escape(', '.join(example['features'] + example['extra']))} "
                      "(a random pick: no model is loaded in a dry run)")
        console.print(example["system_good"], markup=False, highlight=False)
        console.print("---")
        console.print(example["system_bad"], markup=False, highlight=False)
    console.rule("placement")  # engines, their devices and the memory estimate
    for line in placement.lines():
        console.print(line, markup=False, highlight=False)


def _run_with_progress(plan: Any, overwrite: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ssogen.generate.run import ProgressUpdate, load_tokenizer, run_generate

    load_tokenizer(plan)  # fail before any progress output

    # Progress on stderr (the summary alone on stdout); warnings are printed above the bar, never into it.
    progress = progress_bar(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    task = progress.add_task("generate", total=len(plan.rows), info="loading the model")

    def on_progress(update: ProgressUpdate) -> None:
        counts = f"kept {update.kept}, dropped {update.dropped}"
        if update.elapsed_s > 0:  # tokens per second of engine time: loading the model is not in it
            info = f"{update.tokens / update.elapsed_s:,.0f} tok/s, {counts}"
        elif update.rows_done == update.rows_total:
            info = f"all rows done by an earlier run, {counts}"
        else:
            info = "starting the engine"
        progress.update(task, completed=update.rows_done, info=info)
        logger.info("%d of %d rows done: %s", update.rows_done, update.rows_total, info)

    with progress:
        result = run_generate(plan.config, overwrite=overwrite, on_progress=on_progress, plan=plan)
        if result.unchanged:  # no progress came: the bar would stay at "0/N rows loading the model"
            progress.update(task, completed=len(plan.rows), info="all rows done by an earlier run")
    all_work_saved()
    if result.unchanged:
        say(f"note: {plan.config.out} holds this run, finished: nothing to do, nothing written but this command's "
            "log (the summary is that run's; --overwrite generates it again)")
    _print_summary(result.manifest, plan.config.limit)
    _print_next_steps(plan, result.manifest)


def _parts_dropped(parts: dict[str, int]) -> str:
    names = {"system_turn": "system turn", "earlier_turns": "multi-turn history", "later_turns": "turns after it"}
    return "; ".join(f"{names.get(k, k)} dropped: {counted(v, 'row')}" for k, v in parts.items())


def _shown(value: object) -> str:
    return "–" if value is None else str(value)


def _rows_in(s: dict[str, Any], limit: int | None, prompt_field: str) -> str:
    """The rows taken, the rows skipped with where the first of each reason are, and how they relate to the input
    under --limit."""
    at = s.get("rows_skipped_at") or {}  # a run of an earlier version: the counts alone
    report = skip_report(s["rows_skipped"], at.get("first", {}), at.get("unit", "row"), prompt_field)
    taken = f"{s['rows_in']} / {sum(s['rows_skipped'].values())}" + (f": {report}" if report else "")
    if limit is not None and s["rows_read"] < s["input_rows"]:
        taken += f" (--limit {limit}: the first {s['rows_read']} of {s['input_rows']} input rows read)"
    return taken


def _print_summary(manifest: dict[str, Any], limit: int | None = None) -> None:
    s = manifest["summary"]
    # Names from the library and --out are shown as written: brackets in them are not rich markup.
    table = Table(title=escape(f"ssogen generate: {manifest['name']}"), show_header=False, title_justify="left")
    table.add_row("rows in / skipped", escape(_rows_in(s, limit, manifest["prompts"].get("prompt_field", "prompt"))))
    if s["conversation_parts_dropped"]:
        table.add_row("message lists: query = last user turn", _parts_dropped(s["conversation_parts_dropped"]))
    table.add_row("rows kept", str(s["kept"]))
    table.add_row("rows dropped", named_counts(s["dropped"]) or "0")
    empty = s["empty_responses"]
    table.add_row("empty responses y+ / y- / yo", " / ".join(str(empty[v]) for v in ("good", "bad", "raw"))
                  + (" (kept: --keep-empty)" if manifest["filters"]["keep_empty"] else " (rows dropped)"))
    table.add_row("rows with features filled in at random / principle fallback",
                  f"{s['selection_filled']} / {s['principle_fallback']}")
    lengths = s["mean_tokens_kept"]
    table.add_row("mean tokens (kept) y+ / y- / yo", " / ".join(_shown(lengths[v]) for v in ("good", "bad", "raw")))
    table.add_row("chosen/rejected length ratio", _shown(s["chosen_rejected_length_ratio"]))
    table.add_row("feature counts (all rows, extras included)",
                  escape(named_counts(dict(sorted(s["feature_counts"].items())))))
    requests = manifest["requests_this_invocation"]
    table.add_row("requests run now", named_counts(requests) or "0 (all done)")
    engine_s = s.get("generation_time_s")
    table.add_row("wall time / engine time", f"{s['wall_time_s']} s / {_shown(engine_s)} s"
                  + (f" (model loading {s['wall_time_s'] - engine_s:.1f} s)" if engine_s else ""))
    table.add_row("tokens/s (engine time)", _shown(s["tokens_per_s"]))
    table.add_row("system role merged", str(manifest["system_role_merged"]))
    table.add_row("output", named_counts(manifest["configs"])
                  + (f" (test split: {manifest['split']['test_size']:g} of the queries)" if manifest.get("split")
                     else ""))
    show(table)
    for warning in [*s.get("warnings", []), empty_pairs_note(manifest["configs"])]:
        if warning:
            warn(warning)


def _print_next_steps(plan: Any, manifest: dict[str, Any]) -> None:
    """What to run next: look at the data, score it with the policy, train on it (local paths as the user typed
    them: this goes to the terminal only, never into the folder)."""
    if os.environ.get(STEP_OF_ITERATE_ENV):  # iterate runs the next steps itself, with its own folders
        return
    out, model = plan.config.out, plan.config.model
    steps = [shlex.join(["ssogen", "stats", out])]
    if not manifest.get("score"):
        steps.append(shlex.join(["ssogen", "score", out, "--model", model]))
    if manifest["configs"].get("sso", 0) > 0:
        steps.append(shlex.join(["ssogen", "train", "--data", out, "--model", model, "--out", f"{out}-model"]))
    show("next: " + "\n      ".join(steps), markup=False, highlight=False, soft_wrap=True)
