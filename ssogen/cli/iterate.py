"""CLI command of the online loop (`ssogen iterate`). Every option comes from a field of IterateOptions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ssogen.cli.common import command_log, console, user_errors, with_default, writes_nothing
from ssogen.cli.options import with_options
from ssogen.iterate.options import IterateOptions


@with_options(IterateOptions, config_flag=None)
@user_errors
def iterate(
    options: dict[str, Any],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help=with_default("Print the slices and every step's command; run nothing.", "off"),
        show_default=False)] = False,
) -> None:
    """The online loop: generate with π_{t-1}, (score), train π_{t-1} → π_t with π_{t-1} as reference, repeat.

    Every step is a separate `ssogen` process. Re-running the same command resumes: finished steps are kept,
    an interrupted generate or train continues where it stopped."""
    if dry_run:
        writes_nothing()  # first: a Ctrl-C in the imports below says nothing is lost
    from ssogen.iterate.options import parse_options
    from ssogen.iterate.run import run_iterate

    run_iterate(parse_options(options), console, dry_run=dry_run,
                log=lambda out: command_log(out, "iterate", libraries=False))
