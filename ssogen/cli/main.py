"""The `ssogen` command line: the root app. It imports the command modules and registers them; they never
import it back. Commands only parse options and call into the package."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException
from typer.exceptions import Abort

from ssogen import __version__
from ssogen.cli import data, generate, iterate, judge, principles, tools, train
from ssogen.cli.common import err_console
from ssogen.cli.helpstyle import Command, Group
from ssogen.cli.process import whole_process


class RootGroup(Group):
    """The root command group. A command line click cannot parse (`--max-steps 2.5`, a missing argument) is one
    `error:` line on stderr with the usage, like every other error, not typer's usage block and boxed panel."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            # Not standalone: a typer.Exit comes back as its exit code, a finished command as its return value.
            result = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `ssogen` alone: the help was printed
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            usage = f" (usage: {ctx.get_usage().removeprefix('Usage: ')}; see {ctx.command_path} --help)" if ctx else ""
            err_console.print(f"error: {exc.format_message()}{usage}", style="bold red", markup=False,
                              highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except Abort:
            err_console.print("Aborted.", markup=False, highlight=False)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    help="ssogen: Self-Steering Optimization (SSO) preference data, generated offline and trained on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=RootGroup,  # help in click's style (FOLDER, FILE, no type beside a flag): see ssogen/cli/helpstyle.py
)


def run_command_line() -> Any:
    """The `ssogen` process (the console script, `python -m ssogen`): what Ctrl-C and SIGTERM do before and after
    the command is set for the whole call (see `ssogen.cli.process`). In-process callers of `app` (a script, a
    notebook, typer's CliRunner) keep their signal handlers: the exit-time handling is only for a process that
    ends with the command."""
    with whole_process():
        return app(prog_name="ssogen")


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
