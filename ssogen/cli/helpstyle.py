"""Help screens that name values the classic click way: `FOLDER` in the usage line, `INTEGER`, `TEXT`, `[a|b]` or
the option's own metavar (`FOLDER`, `FILE`) beside an option that takes a value, nothing beside a flag. A leaf: it
imports nothing of the CLI.

Why: typer 0.27 made help print a required argument as `{folder}` in the usage line and types as `<path>`, `<int>`,
`<str>`, and typer 0.29 prints a type beside every option, so each flag, --help included, reads `<bool>`. typer
builds the parameter objects itself and offers no hook for their class; what it does let a program choose is the
class of each command (`cls=`). `Command` and `Group` give their parameters, --help included, the two classes
below, which override only how a parameter is shown (and hand a usage error click raised without its context the
context, for the usage hint); parsing and validation stay typer's.

Why the --no- form goes under its flag: typer gives a `--name/--no-name` pair's negative form a table column of its
own, as wide as the longest negative name; with train's long pairs that left the help text ~20 characters at 80
columns, and Rich cut flag names with "…". While help is drawn, `get_params` hands typer's formatter a copy of each
pair whose one name cell holds both forms, one above the other, so the name column is as wide as the longest flag."""

from __future__ import annotations

import copy
import inspect
import re
from typing import Any

from typer._click import Command as ClickCommand  # typer 0.29 vendors click: its base classes
from typer._click import Context, HelpFormatter, Parameter
from typer._click.exceptions import UsageError
from typer.core import HAS_RICH, TyperArgument, TyperCommand, TyperGroup, TyperOption

_DRAWING_HELP = "ssogen.helpstyle.drawing_help"  # a key of ctx.meta, set while format_help runs
# A list of choices wider than this goes over lines, broken after a `|`: on one line [vllm|transformers] widened the
# type column of its whole panel and left the Engine panel 24 characters of help instead of 36 at 80 columns.
CHOICES_LINE_WIDTH = 14

# typer's own type words (what it writes between < and >) -> click's
_CLICK_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def _value_name(param: TyperOption | TyperArgument, ctx: Context) -> str:
    """PATH, INTEGER, TEXT, INTEGER RANGE, [a|b] for a choice: click's name of the value a parameter takes."""
    typer_name = param.display_type(ctx).removeprefix("<").removesuffix(">")
    typer_name = typer_name.removeprefix("list[").removesuffix("]")  # a repeated option shows its element's type
    if param.type_descriptor.is_choice:
        return f"[{typer_name}]"  # choices are values: their case matters
    # "int" -> INTEGER, "path" -> PATH, "int range" -> INTEGER RANGE, "int,float" (a tuple) -> INTEGER,FLOAT
    return re.sub(r"[a-z]+", lambda word: _CLICK_TYPE_NAMES.get(word[0], word[0].upper()), typer_name)


def stacked_choices(metavar: str) -> str:
    """`[a|b|c]` over lines of at most CHOICES_LINE_WIDTH characters, each but the last ending in `|`."""
    if not (metavar.startswith("[") and metavar.endswith("]")) or len(metavar) <= CHOICES_LINE_WIDTH:
        return metavar
    lines = [""]
    for piece in [choice + "|" for choice in metavar.split("|")[:-1]] + [metavar.rsplit("|", 1)[-1]]:
        if lines[-1] and len(lines[-1]) + len(piece) > CHOICES_LINE_WIDTH:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Context) -> str | None:
        if self.is_flag or self.count:
            return None  # a flag takes no value
        if self.metavar is not None:
            return stacked_choices(self.metavar)
        return _value_name(self, ctx) + ("..." if self.nargs != 1 else "")


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        # the name as help texts refer to it ("Writes FOLDER/stats.json"); also the name in "Missing argument"
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Context) -> str | None:
        value = _value_name(self, ctx)
        # A path argument is named for what it holds (FOLDER): PATH beside it would only blur that.
        return None if value == "PATH" else value

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        shown = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return [shown + ("..." if self.nargs != 1 else "")]


class _StackedPair(_Option):
    """A copy of a `--name/--no-name` option for the help screen only: both names in the first cell."""

    paired: _Option  # the option it shows, which still computes the default as "name" or "no-name"

    def _get_default_string(self, **kwargs: Any) -> str:
        return self.paired._get_default_string(**kwargs)


def _stacked(param: Parameter) -> Parameter:
    if not isinstance(param, _Option) or not param.secondary_opts:
        return param
    shown = copy.copy(param)
    shown.__class__ = _StackedPair
    assert isinstance(shown, _StackedPair)
    shown.paired = param
    longs = [", ".join(opt for opt in opts if opt.startswith("--")) for opts in (param.opts, param.secondary_opts)]
    shorts = [opt for opt in (*param.opts, *param.secondary_opts) if not opt.startswith("--")]
    shown.opts, shown.secondary_opts = ["\n".join(filter(None, longs)), *shorts], []
    return shown


def _restyle(param: object) -> None:
    # Only typer's own classes are swapped, for subclasses that add no state; a parameter of another class keeps it.
    if type(param) is TyperOption:
        param.__class__ = _Option
    elif type(param) is TyperArgument:
        param.__class__ = _Argument


def _unwrapped(text: str | None) -> str | None:
    """The docstring with each paragraph on one line: typer's rich help keeps the line breaks of the paragraphs after
    the first, which then broke mid-sentence at the source's width whatever the terminal's."""
    if not text:
        return text
    return "\n\n".join(" ".join(paragraph.split("\n")) for paragraph in inspect.cleandoc(text).split("\n\n"))


class _ShowsClickNames(ClickCommand):
    """Mixed into typer's command classes: every parameter they hand out (to the parser, the usage line and the
    help screen) has one of the classes above, --help and parameters added after the command was made included."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)
        for param in params:
            _restyle(param)
        return [_stacked(param) for param in params] if ctx.meta.get(_DRAWING_HELP) else params

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        if not HAS_RICH or getattr(self, "rich_markup_mode", None) is None:
            super().format_help(ctx, formatter)  # click's plain help: it writes `--name / --no-name` on one line
            return
        ctx.meta[_DRAWING_HELP] = True
        docstring, self.help = self.help, _unwrapped(self.help)
        try:
            super().format_help(ctx, formatter)
        finally:
            del ctx.meta[_DRAWING_HELP]
            self.help = docstring

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        # click's parser raises some usage errors (`-k` with no value) without the context; the root command prints
        # the usage hint from it, as for every other usage error.
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            exc.ctx = exc.ctx or ctx
            raise


class Command(_ShowsClickNames, TyperCommand):
    """A typer command whose help shows click's value names: `app.command(name, cls=Command)`."""


class Group(_ShowsClickNames, TyperGroup):
    """A typer app (a command group) whose help shows click's value names: `typer.Typer(cls=Group)`."""
