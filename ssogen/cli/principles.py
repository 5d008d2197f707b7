"""`ssogen principles`: inspect and validate principle libraries (YAML)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ssogen.cli.common import console, err_console, fail, user_errors

principles_app = typer.Typer(help="Inspect and validate principle libraries (YAML).", no_args_is_help=True)


@principles_app.command("validate")
@user_errors
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


@principles_app.command("list")
@user_errors
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


@principles_app.command("show")
@user_errors
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
