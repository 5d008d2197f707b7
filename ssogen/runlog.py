"""Every command's full log: `command_log` writes OUT/logs/<command>-<UTC time>.log (the path comes from
`OutputFolder.log_file`) while the command runs.

What goes into the log: ssogen's own records, Python warnings, the logging of vLLM, transformers, torch and the
rest (their own stderr handlers are taken off for the duration so that everything reaches the root logger), and,
with `capture_fds`, whatever anything writes to stdout or stderr: tqdm bars, prints, vLLM's C++ messages, the
output of engine worker processes (file descriptors 1 and 2 point at the log meanwhile). The command's own output
goes to the terminal through `LogSession.stdout` / `.stderr`, copies of the original descriptors, which the CLI's
consoles write to. Records at warning level and above also go to `warn` (the CLI prints them on stderr through its
console, above a live progress bar rather than into it), each distinct message once. Sessions nest (a command run
in-process by another): every record reaches each session's log file, the outer one keeps the full record, but
only the innermost session prints warnings, and on the terminal the outermost one found (the descriptors lead
into the enclosing log meanwhile), so each line reaches the terminal once.

Secrets registered with `ssogen.redaction.hide` (a hub token) are replaced by *** in every record, on stderr and
in the log. Two jobs live beside this one: the secrets in `ssogen.redaction`, the redirection of descriptors 1
and 2 in `ssogen.fd_capture`. A leaf: of ssogen it imports `errors`, `origins` and those two only."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ssogen.errors import STOPPED, UserError
from ssogen.fd_capture import DescriptorCapture
from ssogen.origins import with_config_lines
from ssogen.redaction import ScrubFilter, scrub

logger = logging.getLogger("ssogen")

# Libraries that install their own stderr handler and stop propagation; inside a command log they propagate.
LIBRARY_LOGGERS = ("vllm", "transformers", "torch", "accelerate", "datasets", "huggingface_hub", "peft", "trl", "ray")
_ACTIVE: set[Path] = set()
_SESSIONS: list[LogSession] = []
_PRINTERS: list[_Warnings] = []  # the sessions' warning printers, innermost last: only that one prints
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def active_logs() -> frozenset[Path]:
    """The log files being written by this process (so that `--overwrite` leaves them alone)."""
    return frozenset(_ACTIVE)


def terminal() -> tuple[IO[str] | None, IO[str] | None]:
    """The terminal's stdout and stderr while a command log holds descriptors 1 and 2 (for child processes that
    should write to the terminal, not into this log), else (None, None): inherit as usual."""
    return (_SESSIONS[-1].stdout, _SESSIONS[-1].stderr) if _SESSIONS else (None, None)


class _Warnings(logging.Handler):
    """Warnings and errors as one line each ("warning [vllm]: ..."), each distinct message once, to `sink`."""

    def __init__(self, sink: Callable[[str], None], seen: set[tuple[str, str]]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink
        self.seen = seen  # shared with the enclosing sessions: a line the inner one printed is not printed again

    def emit(self, record: logging.LogRecord) -> None:
        # Every session's root handlers see the record: the innermost session prints it, the others only log it.
        if getattr(record, "log_only", False) or (_PRINTERS and _PRINTERS[-1] is not self):
            return
        try:
            message = record.getMessage().rstrip()
            key = (record.name, message)
            if key in self.seen:
                return
            self.seen.add(key)
            library = record.name.split(".")[0]
            source = "" if library in ("root", "py", "ssogen") else f" [{library}]"
            self.sink(f"{record.levelname.lower()}{source}: {message}")
        except Exception:
            self.handleError(record)


@dataclass
class LogSession:
    """A command log being written: its file, and the terminal's stdout / stderr while descriptors 1 and 2 point
    at the log (None where Python's stream was not that descriptor, e.g. under a test runner: write to
    sys.stdout / sys.stderr then, as usual)."""

    path: Path
    stdout: IO[str] | None = None
    stderr: IO[str] | None = None


def _adopt_library_loggers(import_transformers: bool) -> list[tuple[logging.Logger, list[logging.Handler], bool, int]]:
    """Take the libraries' own handlers off and let them propagate (transformers' info lines too, such as the
    Trainer's); returns what to put back."""
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # engines built meanwhile log to the root logger
    if import_transformers or "transformers" in sys.modules:
        with contextlib.suppress(Exception):  # configures transformers' logger now, so later imports keep ours
            import transformers.utils.logging as hf_logging

            hf_logging.get_logger()
    saved = []
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        saved.append((library, list(library.handlers), library.propagate, library.level))
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
        if name == "transformers":
            library.setLevel(logging.INFO)
    return saved


def _terminal_writer(stream: IO[str] | None) -> Callable[[str], None]:
    def write(text: str) -> None:
        target = stream if stream is not None else sys.stderr
        target.write(text + "\n")
        target.flush()

    return write


def _root_handlers(path: Path, printer: _Warnings) -> list[logging.Handler]:
    file_handler = logging.FileHandler(path, encoding="utf-8")
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    file_handler.setFormatter(formatter)
    handlers: list[logging.Handler] = [file_handler, printer]
    for handler in handlers:
        handler.addFilter(ScrubFilter())
    return handlers


def _log_outcome(exc: BaseException | None, seconds: float) -> None:
    """The last line of the log (file only: the CLI reports errors on the terminal itself)."""
    quiet = {"log_only": True}
    code = getattr(exc, "exit_code", getattr(exc, "code", None))
    if exc is None or (type(exc).__name__ in ("Exit", "SystemExit") and code in (0, None)):
        logger.info("finished in %.1f s", seconds, extra=quiet)
    elif isinstance(exc, STOPPED):
        logger.error("interrupted after %.1f s", seconds, extra=quiet)
    elif isinstance(exc, UserError):
        message = with_config_lines(str(exc))  # as the terminal shows it
        logger.error("error (exit %d) after %.1f s: %s", exc.exit_code, seconds, message, extra=quiet)
    elif type(exc).__name__ in ("Exit", "SystemExit"):
        logger.error("exit %s after %.1f s", code, seconds, extra=quiet)
    else:
        logger.error("failed after %.1f s", seconds, exc_info=exc, extra=quiet)


def _restore_loggers(saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]]) -> None:
    for library, library_handlers, propagate, level in saved:
        # Exactly those of before: vLLM adds its own when it configures logging (an engine built in the command).
        library.handlers[:] = library_handlers
        library.propagate = propagate
        library.setLevel(level)  # not `.level =`: setLevel also clears the loggers' isEnabledFor cache


def _restore_variable(name: str, value: str | None) -> None:
    os.environ.pop(name, None)
    os.environ.update({} if value is None else {name: value})


def _stop_capturing_warnings(previous: Callable[..., Any]) -> None:
    # captureWarnings(False) would also end an enclosing session's capture: put back what was there before.
    logging.captureWarnings(False)
    warnings.showwarning = previous


def _remove_handlers(handlers: list[logging.Handler], level: int) -> None:
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        with contextlib.suppress(OSError):  # the log's last flush on a full disk: the command's own error tells it
            handler.close()
    logging.getLogger().setLevel(level)


@contextlib.contextmanager
def command_log(path: Path, command: str, argv: list[str] | None = None, *, capture_fds: bool = True,
                import_transformers: bool = True, warn: Callable[[str], None] | None = None
                ) -> Iterator[LogSession]:
    """Log the block to `path` (see the module docstring). `argv` is written first, secrets scrubbed;
    `import_transformers`: set transformers' logging up front (commands that load a model); `warn` receives each
    warning line for the terminal (default: its stderr). All is put back afterwards, in reverse, whatever happened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    with contextlib.ExitStack() as undo:
        capture = DescriptorCapture(path) if capture_fds else None
        if capture is not None:
            undo.callback(capture.close)
        # Nested, descriptors 1 and 2 already lead into the enclosing log: the terminal is the enclosing session's.
        enclosing = _SESSIONS[-1] if _SESSIONS else LogSession(path)
        own = capture.terminal if capture is not None else {}
        session = LogSession(path, enclosing.stdout or own.get(1), enclosing.stderr or own.get(2))
        undo.callback(_restore_variable, "VLLM_CONFIGURE_LOGGING", os.environ.get("VLLM_CONFIGURE_LOGGING"))
        undo.callback(_restore_loggers, _adopt_library_loggers(import_transformers))
        root = logging.getLogger()
        printer = _Warnings(warn or _terminal_writer(session.stderr), _PRINTERS[-1].seen if _PRINTERS else set())
        handlers = _root_handlers(path, printer)
        undo.callback(_remove_handlers, handlers, root.level)
        for handler in handlers:
            root.addHandler(handler)
        _PRINTERS.append(printer)
        undo.callback(_PRINTERS.remove, printer)
        root.setLevel(logging.INFO)
        undo.callback(_stop_capturing_warnings, warnings.showwarning)
        logging.captureWarnings(True)
        _ACTIVE.add(path)
        _SESSIONS.append(session)
        undo.callback(_SESSIONS.remove, session)
        undo.callback(_ACTIVE.discard, path)
        started = time.monotonic()
        from ssogen import __version__
        line = shlex.join(argv if argv is not None else ["ssogen", *sys.argv[1:]])  # runs again as logged
        logger.info("ssogen %s %s: %s", __version__, command, scrub(line))
        outcome: BaseException | None = None
        try:
            yield session
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            _log_outcome(outcome, time.monotonic() - started)
