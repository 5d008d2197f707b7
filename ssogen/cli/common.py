"""Helpers every command module shares: the consoles, one-line errors, and the UserError wrapper.

A leaf: it imports nothing of the CLI, so command modules can import it and the root can import them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from ssogen.errors import UserError

console = Console()
err_console = Console(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr and return the Exit to raise."""
    err_console.print(f"error: {message}", highlight=False, soft_wrap=True, markup=False, style="bold red")
    return typer.Exit(code)


def user_errors(func: F) -> F:
    """Wrap a command so that its UserError becomes one clear line and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return func(*args, **kw)
        except UserError as exc:
            raise fail(str(exc), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
