"""The `ssogen` command line. It only parses arguments and calls into the package."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ssogen.errors import UserError

app = typer.Typer(
    help="ssogen: Self-Steering Optimization (SSO) preference data, generated offline and trained on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
principles_app = typer.Typer(help="Inspect and validate principle libraries (YAML).", no_args_is_help=True)
app.add_typer(principles_app, name="principles")

console = Console()
err_console = Console(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr and return the Exit to raise."""
    err_console.print(f"error: {message}", highlight=False, soft_wrap=True, markup=False, style="bold red")
    return typer.Exit(code)


def command(name: str, parent: typer.Typer = app, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose UserError becomes one clear line and its exit code, never a traceback."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except UserError as exc:
                raise fail(str(exc), exc.exit_code) from None

        parent.command(name, **kwargs)(wrapper)
        return func

    return decorate


@command("validate", principles_app)
def principles_validate(
    files: Annotated[list[str], typer.Argument(help="Library files (or bundled names such as 'default').")],
) -> None:
    """Validate libraries; print FILE:LINE: field: message for each problem. Exit 2 if any is invalid."""
    from ssogen.principles import LibraryError, load_library

    bad = False
    for name in files:
        try:
            loaded = load_library(name)
        except LibraryError as exc:
            bad = True
            for problem in exc.problems:
                err_console.print(str(problem), highlight=False, soft_wrap=True, markup=False)
            continue
        lib = loaded.library
        console.print(f"{name}: ok ({lib.name} v{lib.version}, {len(lib.features)} features, "
                      f"{len(lib.extras)} extras)", highlight=False, markup=False)
    if bad:
        raise typer.Exit(2)


@command("list", principles_app)
def principles_list(
    library: Annotated[str, typer.Argument(help="Library file or bundled name.")] = "default",
) -> None:
    """Show the features of a library as a table."""
    loaded = _load_library_or_exit(library)
    lib = loaded.library
    table = Table(title=f"{lib.name} v{lib.version}: {lib.description}", title_justify="left")
    for column in ("feature", "good / bad", "meaning", "probability"):
        table.add_column(column)
    for f in lib.features:
        table.add_row(f.name, f"{f.adjectives.good} / {f.adjectives.bad}", f.meaning, "chosen by policy")
    for e in lib.extras:
        table.add_row(f"{e.name} (extra)", f"{e.adjectives.good} / {e.adjectives.bad}", e.meaning,
                      f"{e.probability:g}")
    console.print(table)
    console.print(f"sha256 {loaded.sha256}  ({loaded.path})", highlight=False)


@command("show", principles_app)
def principles_show(
    library: Annotated[str, typer.Argument(help="Library file or bundled name.")],
    feature: Annotated[str, typer.Argument(help="Feature name (case-insensitive).")],
) -> None:
    """Print one feature's adjectives, meaning and good/bad principle texts."""
    loaded = _load_library_or_exit(library)
    try:
        f = loaded.library.feature(feature)
    except KeyError:
        names = ", ".join(x.name for x in [*loaded.library.features, *loaded.library.extras])
        raise fail(f"{library}: no feature named {feature!r} (has: {names})") from None
    console.print(f"[bold]{f.name}[/] ({f.adjectives.good} / {f.adjectives.bad}): {f.meaning}")
    console.print(f"[green]good[/]: {f.good}")
    console.print(f"[red]bad[/]:  {f.bad}")


def _load_library_or_exit(name: str):  # type: ignore[no-untyped-def]
    from ssogen.principles import LibraryError, load_library

    try:
        return load_library(name)
    except LibraryError as exc:
        for problem in exc.problems:
            err_console.print(str(problem), highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(2) from None


@command("make-tiny-model")
def make_tiny_model(
    path: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    size: Annotated[str, typer.Option(help="'tiny' (~0.2M parameters) or 'small' (~10M, for benchmarks).")]
    = "tiny",
    reject_system_role: Annotated[bool, typer.Option(
        help="Use a chat template that raises on a system message (like Gemma's).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
) -> None:
    """Build a small Qwen2 model with random weights and a locally trained tokenizer (no download)."""
    from ssogen.tiny_model import SIZES, build_tiny_model

    if size not in SIZES:
        raise fail(f"--size: unknown size {size!r} (choose from {', '.join(SIZES)})")
    out = build_tiny_model(path, size=size, reject_system_role=reject_system_role, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote {size} model to {out}", highlight=False)


@command("env")
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print versions of python, torch, transformers, vllm (CPU or GPU build) and friends, and CUDA devices."""
    from ssogen.envinfo import collect_env

    info = collect_env()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, "\n".join(value) if isinstance(value, list) else str(value))
    console.print(table)


# Each area's commands live in their own module and register themselves on `app` with `command`.
from ssogen import cli_data, cli_generate, cli_train  # noqa: E402,F401

if __name__ == "__main__":
    app()
