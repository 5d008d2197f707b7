"""`ssogen principles`: inspect and validate principle libraries (YAML)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ssogen.cli.common import console, err_console, fail, user_errors, writes_nothing
from ssogen.cli.helpstyle import Command, Group
from ssogen.errors import closest_name
from ssogen.formatting import counted

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.principles import LoadedLibrary

principles_app = typer.Typer(help="Inspect and validate principle libraries (YAML).", no_args_is_help=True,
                             cls=Group)


@principles_app.command("validate", cls=Command)
@user_errors
def principles_validate(
    files: Annotated[list[str], typer.Argument(help="Library files (or bundled names such as 'default').")],
) -> None:
    """Validate libraries; print FILE:LINE: field: message for each problem. Exit 2 if any is invalid."""
    writes_nothing()  # first: a Ctrl-C in the import below says nothing is lost, not "run it again"
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
        console.print(f"{name}: ok ({lib.name} v{lib.version}, {counted(len(lib.features), 'feature')}, "
                      f"{counted(len(lib.extras), 'extra')})", highlight=False, markup=False)
    if bad:
        raise typer.Exit(2)


@principles_app.command("list", cls=Command)
@user_errors
def principles_list(
    library: Annotated[str | None, typer.Argument(
        help="Library file or bundled name; without one: the bundled libraries, then default's features.")] = None,
) -> None:
    """Show the bundled libraries (name, version, size, sha256) and a library's features as a table."""
    writes_nothing()  # first: a Ctrl-C in the import below says nothing is lost
    from ssogen.principles import bundled_library_names

    if library is None:
        _bundled_table([_load_library_or_exit(name) for name in bundled_library_names()])
        console.print()
    _features_table(_load_library_or_exit(library or "default"))


def _bundled_table(loaded: list[LoadedLibrary]) -> None:
    table = Table(title="Bundled libraries (use the name with --principles)", title_justify="left")
    for column in ("name", "version", "features", "extras", "words per text", "sha256"):
        table.add_column(column, no_wrap=column in ("name", "sha256"))
    for item in loaded:
        lib = item.library
        texts = [text for f in [*lib.features, *lib.extras] for text in (f.good, f.bad)]
        words = sum(len(text.split()) for text in texts) / len(texts)
        table.add_row(escape(lib.name), escape(lib.version), str(len(lib.features)),
                      escape(", ".join(e.name for e in lib.extras) or "-"), f"{words:.0f}", item.sha256[:16])
    console.print(table)


def _features_table(loaded: LoadedLibrary) -> None:
    lib = loaded.library
    table = Table(title=escape(f"{lib.name} v{lib.version}: {lib.description}"), title_justify="left")
    for column in ("feature", "good / bad", "meaning", "probability"):
        table.add_column(column)
    for f in lib.features:
        table.add_row(escape(f.name), escape(f"{f.adjectives.good} / {f.adjectives.bad}"), escape(f.meaning),
                      "chosen by policy")
    for e in lib.extras:
        table.add_row(escape(f"{e.name} (extra)"), escape(f"{e.adjectives.good} / {e.adjectives.bad}"),
                      escape(e.meaning), f"{e.probability:g}")
    console.print(table)
    console.print(f"sha256 {loaded.sha256}  ({loaded.path})", highlight=False, markup=False)


@principles_app.command("show", cls=Command)
@user_errors
def principles_show(
    library: Annotated[str, typer.Argument(help="Library file or bundled name.")],
    feature: Annotated[str, typer.Argument(help="Feature name (case-insensitive).")],
) -> None:
    """Print one feature's adjectives, meaning and good/bad principle texts."""
    writes_nothing()
    loaded = _load_library_or_exit(library)
    try:
        f = loaded.library.feature(feature)
    except KeyError:
        names = [x.name for x in [*loaded.library.features, *loaded.library.extras]]
        close = closest_name(feature, names)
        hint = f"did you mean {close}? " if close else ""
        raise fail(f"{library}: no feature named {feature!r} ({hint}has: {', '.join(names)})") from None
    # Library text is printed as written: brackets in it are not rich markup.
    console.print(f"[bold]{escape(f.name)}[/] ({escape(f.adjectives.good)} / {escape(f.adjectives.bad)}): "
                  f"{escape(f.meaning)}")
    console.print(f"[green]good[/]: {escape(f.good)}")
    console.print(f"[red]bad[/]:  {escape(f.bad)}")


def _load_library_or_exit(name: str) -> LoadedLibrary:
    from ssogen.principles import LibraryError, load_library

    try:
        return load_library(name)
    except LibraryError as exc:
        if exc.unreadable:
            raise fail(exc.summary()) from None
        raise fail(f"invalid library: {exc.summary()}; `ssogen principles validate {name}` lists every "
                   "problem") from None
