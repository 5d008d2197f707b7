"""Typer options from a settings model: one `--flag` per field made with `ssogen.settings.option`.

`with_options(Model)` wraps a command function: the typer signature is the function's own parameters plus one
option per field of Model (its flags, help with the real default, panel), and the function receives the given
values as one dict, None for each option not given, so that a `--config` file can still set it. A leaf: it
imports nothing of the CLI."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel
from rich.markup import escape

from ssogen.settings import OptionSpec, option_specs


def _typer_parameter(spec: OptionSpec, config_flag: str | None) -> inspect.Parameter:
    help_text = spec.help
    if spec.required:
        help_text += f" Required (here or in {config_flag})." if config_flag else " Required."
    shown = spec.shown_default()
    if shown is not None:
        help_text += f" [default: {shown}]"
    metavar = spec.metavar
    if spec.choices is not None:  # shown as click shows a Choice (a long list over lines: see helpstyle); typer
        metavar = "[" + "|".join(spec.choices) + "]"  # still takes text, which pydantic checks
    info = typer.Option(*spec.flags, help=escape(help_text), rich_help_panel=spec.panel, show_default=False,
                        metavar=metavar)
    # Optional[...] and a None default: an option not given stays None, so it does not hide the config file.
    # The type is the field's, known at run time only (mypy: name-defined); typer reads typing.Optional (UP045).
    annotation = Annotated[Optional[spec.base_type], info]  # type: ignore[name-defined]  # noqa: UP045
    return inspect.Parameter(spec.field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def with_options(model: type[BaseModel], *, into: str = "options", config_flag: str | None = "--config",
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command whose parameter `into` receives {field: value or None} for every option of model."""
    specs = [spec for spec in option_specs(model) if spec.cli]  # a PASS_THROUGH field has no flag

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != into]
        clash = {p.name for p in own} & {s.field for s in specs}
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} are also options of {model.__name__}")
        parameters = own + [_typer_parameter(spec, config_flag) for spec in specs]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            given = {spec.field: kwargs.pop(spec.field, None) for spec in specs}
            return func(**kwargs, **{into: given})

        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate
