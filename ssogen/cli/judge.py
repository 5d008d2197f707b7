"""CLI command that measures a dataset with a judge model (`ssogen judge`). Every option comes from a field of
JudgeOptions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ssogen.cli.common import all_work_saved, command_log, note_lock_takeover, say, show, user_errors
from ssogen.cli.options import with_options
from ssogen.formatting import counted, percent
from ssogen.judge.run import JudgeOptions
from ssogen.settings_resolution import resolve_settings

# The judge's measures as printed: a label, and the value from one set of metrics (judge_metrics). Labels are
# short enough that the pairs config's five columns fit 80 columns of terminal (the card words them at length).
_MEASURES: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("chosen wins, shown first", lambda m: percent(m["accuracy_chosen_first"])),
    ("chosen wins, shown second", lambda m: percent(m["accuracy_chosen_second"])),
    ("parsed judgments for chosen", lambda m: percent(m["share_of_judgments_chosen"])),
    ("chosen wins in both orders", lambda m: percent(m["both_orders_chosen_rate"])),  # the count: in judge.json
    ("position bias (same letter)", lambda m: percent(m["position_bias_rate"])),
    ("unparseable answers", lambda m: f"{m['unparseable']} of {m['judgments']}"),
    ("pairs too long for the judge", lambda m: str(m["pairs_too_long"])),
)


def _metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """One column of values; for the pairs config one over all pairs, then one per kind of pair (P1, P2, P3), in
    a table without vertical rules (a boxed one wrapped every label at 80 columns)."""
    by_pair: dict[str, dict[str, Any]] = metrics.get("by_pair") or {}
    if not by_pair:
        table = Table(title=title, title_justify="left", show_header=False)
    else:
        table = Table(title=f"{title}, {counted(metrics['queries'], 'query', 'queries')}", title_justify="left",
                      box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        table.add_column("", no_wrap=True)
        for column in ("all", *by_pair):
            table.add_column(column, justify="right")
    for label, value in _MEASURES:
        table.add_row(label, value(metrics), *(value(kind) for kind in by_pair.values()))
    return table


@with_options(JudgeOptions, config_flag=None)
@user_errors
def judge(
    options: dict[str, Any],
    folder: Annotated[Path, typer.Argument(help="An ssogen output folder.")],
) -> None:
    """Compare chosen against rejected with a judge model, each pair twice with the positions swapped.

    Writes FOLDER/judge.json (metrics and every answer) and adds the numbers to the dataset card. Answers without
    a clear verdict are counted as unparseable, never guessed."""
    from ssogen.dataset.card import card_templates
    from ssogen.dataset.folder import OutputFolder
    from ssogen.fingerprint import check_model_available
    from ssogen.judge.run import judge_folder, read_pairs, refuse_a_file_as_pairs
    from ssogen.judge.task import check_template
    from ssogen.models import resolve_model

    refuse_a_file_as_pairs(options.get("config"))
    settings = resolve_settings(JudgeOptions, options, accepts_config=False)
    read_pairs(folder, settings.config)  # an unfit folder fails before its log is opened in it
    card_templates(settings.templates)  # so does a bad --templates (the log imports transformers)
    check_template(settings.templates)
    check_model_available(resolve_model(settings.judge_model, flag="--judge-model"), flag="--judge-model")
    # One writer per folder, claimed before the log (which imports transformers): a busy folder fails in a second.
    with OutputFolder(folder).claim("ssogen judge") as left_behind, command_log(folder, "judge"):
        note_lock_takeover(left_behind)
        written = judge_folder(folder, settings)
        all_work_saved()
        m = written["metrics"]
        show(_metrics_table(m, f"ssogen judge: {written['judge_model']} on {m['pairs_judged']} pairs "
                               f"({settings.config})"))
        say(f"wrote {OutputFolder(folder).relative(OutputFolder(folder).judge)} in {folder}")
