"""The `ssogen` command line: the root app. It imports the command modules and registers them; they never
import it back. Commands only parse options and call into the package."""

from __future__ import annotations

from typing import Annotated

import typer

from ssogen import __version__
from ssogen.cli import data, generate, iterate, judge, principles, tools, train
from ssogen.cli.helpstyle import Command, Group

app = typer.Typer(
    help="ssogen: Self-Steering Optimization (SSO) preference data, generated offline and trained on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,  # help in click's style (FOLDER, PATH, no type beside a flag): see ssogen/cli/helpstyle.py
)


def _print_version(value: bool) -> None:
    if value:
        print(f"ssogen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """ssogen: Self-Steering Optimization (SSO) preference data, generated offline and trained on."""


app.add_typer(principles.principles_app, name="principles")
app.command("generate", cls=Command)(generate.generate)
app.command("train", cls=Command)(train.train)
app.command("score", cls=Command)(data.score_command)
app.command("stats", cls=Command)(data.stats_command)
app.command("push-to-hub", cls=Command)(data.push_to_hub_command)
app.command("iterate", cls=Command)(iterate.iterate)
app.command("judge", cls=Command)(judge.judge)
app.command("make-tiny-model", cls=Command)(tools.make_tiny_model)
app.command("env", cls=Command)(tools.env)

if __name__ == "__main__":
    app()
