"""Helpers every command module shares: the consoles, one-line errors, the UserError wrapper, and the command
log.

Output: the summary of a command goes to stdout (`console`), progress bars, notes and warnings to stderr
(`err_console`), and everything, third-party warnings included, to the command's log in OUT/logs/.
A leaf: of the CLI it imports only the leaf `ssogen.cli.process`, so command modules can import it and the root
can import them."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ssogen.cli.process import command_begins, command_ended
from ssogen.errors import STEP_OF_ITERATE_ENV, STOPPED, UserError, file_system_cause, file_system_error, wrapped_writing
from ssogen.formatting import plain_text
from ssogen.interrupts import interrupt_on
from ssogen.origins import options_of_one_command, with_config_lines

if TYPE_CHECKING:
    from ssogen.lock import Holder

console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger("ssogen")
_PARAMETERS: ContextVar[dict[str, Any] | None] = ContextVar("ssogen_command_parameters", default=None)
_ALL_SAVED: ContextVar[bool] = ContextVar("ssogen_all_work_saved", default=False)
_WRITES_NOTHING: ContextVar[bool] = ContextVar("ssogen_writes_nothing", default=False)
# The folder the command writes into, from its log on: what a full disk is blamed on when the error names no file.
_WRITING_IN: ContextVar[str | None] = ContextVar("ssogen_writing_in", default=None)


@contextlib.contextmanager
def command_log(folder: str | Path, command: str, *, libraries: bool = True) -> Iterator[Path]:
    """Write this command's full log to FOLDER/logs/<command>-<UTC time>.log while the block runs (see
    `ssogen.runlog`). Enter it only after the folder passed its checks: it creates FOLDER/logs/.
    `libraries`: the command loads models (set up transformers' logging too).

    Meanwhile stdout and stderr of the process lead into the log, and the two consoles write to the terminal;
    warnings are printed by `err_console`, so a live progress bar shows them above itself."""
    from ssogen.dataset.folder import OutputFolder
    from ssogen.runlog import command_log as run_log

    _WRITING_IN.set(f"writing in {folder}")  # till the command ends: its error is told after the log is closed
    rank = int(os.environ.get("RANK", "0"))  # under `accelerate launch` every process logs to its own file
    name = command if rank == 0 else f"{command}-rank{rank}"
    with run_log(OutputFolder(folder).log_file(name), command, _command_line(command), import_transformers=libraries,
                 warn=_print_warning) as session:
        saved = (console._file, err_console._file)  # None: the console follows sys.stdout / sys.stderr
        console.file = session.stdout or saved[0]  # type: ignore[assignment]
        err_console.file = session.stderr or saved[1]  # type: ignore[assignment]
        try:
            yield session.path
        finally:
            console._file, err_console._file = saved


def _command_line(command: str) -> list[str] | None:
    """The command as typed again, as the log's first line: its arguments, and every option that has a value (the
    settings' options when given; a plain option's default too) under its own flag (`--lambda=0.3`, `--cpu`,
    `--drop-truncated`, not the field names `--lam`, `--use-cpu=True`); secrets are scrubbed by the log. None
    outside a command (the log then takes sys.argv)."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    if _PARAMETERS.get() is None or ctx is None:
        return None
    words = ["ssogen", command]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if value is None:
            continue
        if param.param_type_name == "argument":
            words.append(str(value))
        elif getattr(param, "is_flag", False) and isinstance(value, bool):  # --keep-truncated/--drop-truncated
            words += [max(names, key=len)] if (names := param.opts if value else param.secondary_opts) else []
        else:
            words.append(f"{max(param.opts, key=len)}={value}")
    return words


def _print_warning(text: str) -> None:
    err_console.print(text, style="yellow", markup=False, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """A line for the user on stderr, as written: no markup, and never broken at the console's width (80 columns
    in a pipe, which split a path in two)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def with_default(help_text: str, default: str) -> str:
    """An option's help with its default shown as the options built from settings fields show theirs (for the
    plain typer options whose default typer would not show, or would show as None)."""
    return escape(f"{help_text} [default: {default}]")


def note_lock_takeover(left_behind: Holder | None) -> None:
    """Say so when a command took over the lock of a run that was killed."""
    if left_behind is not None:
        say(left_behind.takeover_note())


def warn(message: str) -> None:
    """A warning of ssogen's own: on stderr, and into the command log when one is being written."""
    from ssogen.runlog import active_logs

    if active_logs():
        logger.warning("%s", message.removeprefix("warning: "))  # the log's handler prints it too
    else:
        _print_warning(message if message.startswith("warning: ") else f"warning: {message}")


def empty_pairs_note(counts: dict[str, int]) -> str | None:
    """A warning when no row was kept: `datasets` cannot load a config without rows, so say why it is empty."""
    if counts.get("dpo", 0) > 0:
        return None
    return ("warning: no row was kept, so the dpo, sso, reward and pairs configs are empty (datasets.load_dataset "
            "cannot load an empty config); the drop reasons are in the triplets config")


def progress_bar(*columns: Any) -> Any:
    """A rich progress bar on stderr that leaves sys.stdout / sys.stderr alone (inside a command log they lead to
    the log, where the libraries' own prints belong)."""
    from rich.progress import Progress

    return Progress(*columns, console=err_console, transient=False, redirect_stdout=False, redirect_stderr=False)


def show(renderable: Any, **print_options: Any) -> None:
    """Print to stdout and put the same text, plain, into the command log. A line of text is never broken at
    the console's width (80 columns in a pipe), which would split a count from its name or a URL in two."""
    if isinstance(renderable, str):
        print_options.setdefault("soft_wrap", True)
    console.print(renderable, **print_options)
    if logging.getLogger().handlers:
        logger.info("%s", plain_text(renderable, **print_options))


F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr (a hub token in it as ***) and return the Exit to raise."""
    from ssogen.redaction import scrub

    err_console.print(f"error: {scrub(message)}", highlight=False, soft_wrap=True, markup=False, style="bold red")
    return typer.Exit(code)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While a command runs, Ctrl-C (SIGINT) and SIGTERM (`kill`, a job scheduler's stop) raise `Interrupted`:
    finished work is saved, vLLM's engine processes are shut down, exit 130 with the resume line. SIGTERM would
    otherwise kill at once and leave those engine processes running."""
    with interrupt_on(STOP_SIGNALS):
        yield


def all_work_saved() -> None:
    """Said by a command once everything it makes is on disk: a Ctrl-C while it prints its summary then says
    that nothing is left to resume, rather than "run the same command again"."""
    _ALL_SAVED.set(True)


def writes_nothing() -> None:
    """Said by a command that writes no file (the `principles` commands, `env`, the dry runs): a Ctrl-C then says
    that nothing is lost, with no "to resume" line, which would promise work to go on with."""
    _WRITES_NOTHING.set(True)


def _refuse_paths_not_utf8() -> None:
    """A path argument whose name is not UTF-8 (the shell passes its bytes as surrogates) is refused up front:
    the manifest, the parquet files and the logs hold paths as UTF-8 text, so it would fail once work is done."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    for param in ctx.command.params if ctx is not None else []:
        value = ctx.params.get(param.name or "") if ctx is not None else None
        if isinstance(value, (str, Path)) and any("\udc80" <= ch <= "\udcff" for ch in str(value)):
            name = (max(param.opts, key=len) if param.param_type_name == "option"
                    else param.metavar or (param.name or "").upper())  # an argument: FOLDER
            shown = os.fsencode(value).decode("utf-8", "backslashreplace")
            raise UserError(f"{name} {shown}: the name is not UTF-8 text, which ssogen writes paths as; rename it")


def _resumed_by_iterate(message: str) -> str:
    """The error line of a step of `ssogen iterate` (interrupted, or a full disk's advice): what resumes it is the
    iterate command (it runs the step again, and the step resumes itself), not "the same command", which the user
    would read as the step's own `ssogen generate ...`. iterate prints its own line after it."""
    return message.replace("the same command", "the same ssogen iterate command")


def _run_command(func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    command_begins()
    try:
        with stop_on_signals():
            _refuse_paths_not_utf8()
            try:
                return func(*args, **kw)
            except STOPPED:  # stopped where the command does not say what was kept (e.g. loading a model)
                if _WRITES_NOTHING.get():
                    raise UserError("interrupted; this command writes nothing, so nothing is lost",
                                    exit_code=130) from None
                if _ALL_SAVED.get():
                    raise UserError("interrupted after all work was saved: nothing is left to resume",
                                    exit_code=130) from None
                raise UserError("interrupted; run the same command again to go on (finished work is kept)",
                                exit_code=130) from None
            except (UserError, typer.Exit, typer.exceptions.TyperException):
                raise  # said already (an error line printed while the OSError was handled stays as it is)
            except Exception as exc:  # a full disk, a read-only folder, an unreadable input: one line, no traceback
                # (also where a library wraps it: torch's compile error around a full compile cache)
                cause = file_system_cause(exc)
                writing = wrapped_writing(exc) or _WRITING_IN.get()  # torch's compile cache, else the command's folder
                if cause is None or (translated := file_system_error(cause, writing=writing)) is None:
                    raise
                raise translated from None
    except UserError as exc:
        step_of_iterate = bool(os.environ.get(STEP_OF_ITERATE_ENV))
        message = with_config_lines(str(exc))
        error = fail(_resumed_by_iterate(message) if step_of_iterate else message, exc.exit_code)
        resumable = not (_ALL_SAVED.get() or _WRITES_NOTHING.get() or step_of_iterate)
        if exc.exit_code == 130 and resumable:  # interrupted: the work so far is saved
            from ssogen.redaction import scrub  # `push-to-hub --token` is on the command line

            err_console.print(f"to resume: {scrub(shlex.join(['ssogen', *sys.argv[1:]]))}", markup=False,
                              highlight=False, soft_wrap=True)
        raise error from None


def user_errors(func: F) -> F:
    """Wrap a command so that its UserError becomes one clear line and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        token, saved = _PARAMETERS.set(kw), _ALL_SAVED.set(False)  # `kw`: for the first line of the command's log
        writing, reads_only = _WRITING_IN.set(None), _WRITES_NOTHING.set(False)
        try:
            with options_of_one_command():  # so that an error can name the config line that set a flag
                result = _run_command(func, *args, **kw)
        except BaseException as exc:
            command_ended(interrupted=isinstance(exc, STOPPED) or getattr(exc, "exit_code", None) == 130)
            raise
        finally:
            _PARAMETERS.reset(token)
            _ALL_SAVED.reset(saved)
            _WRITING_IN.reset(writing)
            _WRITES_NOTHING.reset(reads_only)
        command_ended(interrupted=False)
        return result

    return wrapper  # type: ignore[return-value]
