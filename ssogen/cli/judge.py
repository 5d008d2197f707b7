"""CLI command that measures a dataset with a judge model (`ssogen judge`). Every option comes from a field of
JudgeOptions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ssogen.cli.common import all_work_saved, command_log, note_lock_takeover, say, show, user_errors
from ssogen.cli.options import with_options
from ssogen.formatting import percent
from ssogen.judge.run import JudgeOptions
from ssogen.settings_resolution import resolve_settings


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
        table = Table(title=f"ssogen judge: {written['judge_model']} on {m['pairs_judged']} pairs "
                      f"({settings.config})", title_justify="left", show_header=False)
        table.add_row("chosen wins, chosen shown first", percent(m["accuracy_chosen_first"]))
        table.add_row("chosen wins, chosen shown second", percent(m["accuracy_chosen_second"]))
        table.add_row("share of parsed judgments for chosen", percent(m["share_of_judgments_chosen"]))
        table.add_row("chosen wins in both orders",
                      f"{percent(m['both_orders_chosen_rate'])} ({m['both_orders_chosen']})")
        table.add_row("position bias (same letter both times)", percent(m["position_bias_rate"]))
        table.add_row("unparseable answers", f"{m['unparseable']} of {m['judgments']}")
        table.add_row("pairs too long for the judge", str(m["pairs_too_long"]))
        show(table)
        say(f"wrote {OutputFolder(folder).relative(OutputFolder(folder).judge)} in {folder}")
