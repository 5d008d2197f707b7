"""What Ctrl-C (SIGINT) and SIGTERM do in an `ssogen` process outside the command's own handler (`stop_on_signals`
in `ssogen.cli.common`, set while the command runs), from the start of the process to its exit. A leaf: it imports
nothing of the CLI.

* While ssogen starts (its commands load, typer builds them and parses the command line, up to the command's
  handler): one line, "error: interrupted while ssogen started; nothing was done", and exit 130. Python's own
  handler raised a KeyboardInterrupt there, which typer turned into a silent exit 130 while it parsed, and a
  traceback while it built the commands. And a KeyboardInterrupt that left an `exec` of a string (dataclasses and
  namedtuple make their methods so, at import) made Python end the process by SIGINT at exit, after the line and
  the SystemExit(130) (CPython's `_Py_UnhandledKeyboardInterrupt`, which such an `exec` sets even when the
  exception is caught): the handlers here raise `Interrupted`, which is no KeyboardInterrupt.
* While the command runs: Python's own handlers, which the command's handler replaces for its run.
* Once the command has ended, other than interrupted, its output is complete: a first Ctrl-C leaves its exit
  status alone. Python's handler made it a silent exit 130, a traceback "Exception ignored in: <module
  'threading'>" (exit 0), or, once the interpreter had put SIGINT back to its default for the modules' teardown,
  death by SIGINT. A second Ctrl-C acts as Python's does, so it can still stop an exit that hangs (a thread or an
  exit handler that waits). After the exit handlers, SIGINT is ignored (the modules' teardown, then the exit).

Only the process's entry (`run_command_line` in `ssogen.cli.main`: the console script, `python -m ssogen`) enters
`whole_process`; in-process callers of the command group `app` (a script, typer's CliRunner, the tests) keep their
handlers."""

from __future__ import annotations

import atexit
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ssogen.errors import STOPPED, Interrupted
from ssogen.interrupts import interrupt_on

STARTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_WHILE_STARTING = "error: interrupted while ssogen started; nothing was done"


class _Process:
    def __init__(self) -> None:
        self.entered = False  # inside `whole_process`: the handlers here are in use
        self.phase = "starting"  # "starting", "running" (the command's), "ended"
        self.originals: dict[int, Any] = {}  # the handlers before ssogen's


_PROCESS = _Process()


def interrupted_while_starting() -> None:
    """Say that ssogen was stopped before any command ran, and exit 130."""
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr: the exit status still tells
        sys.stderr.write(INTERRUPTED_WHILE_STARTING + "\n")
        sys.stderr.flush()
    raise SystemExit(130)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """While the commands load (`from ssogen.cli import app`), before `whole_process` can be entered: Ctrl-C and
    SIGTERM are the one line and exit 130. The handlers are Python's again afterwards (the tests import the app)."""
    try:
        with interrupt_on(STARTING_SIGNALS):
            yield
    except STOPPED:
        interrupted_while_starting()


def _restore_originals() -> None:
    for signum, handler in _PROCESS.originals.items():
        signal.signal(signum, handler)


def _interrupt_start(signum: int, frame: Any) -> None:
    _restore_originals()  # a second signal acts as it would have
    raise Interrupted(signum)


def _ctrl_c_after_the_command(signum: int, frame: Any) -> None:
    # The command's output is complete: this Ctrl-C leaves its exit status alone; the next one stops the exit.
    signal.signal(signal.SIGINT, _PROCESS.originals.get(signal.SIGINT, signal.default_int_handler))


def _ignore_ctrl_c_after_exit_handlers() -> None:
    # Registered when ssogen starts, before the command imports its libraries: it runs after their exit handlers.
    # The interpreter then puts a Python-level handler back to SIG_DFL, where a Ctrl-C would end the process by SIGINT.
    if signal.getsignal(signal.SIGINT) is _ctrl_c_after_the_command:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def whole_process() -> Iterator[None]:
    """Around everything the process does after loading the commands (see the module's docstring)."""
    if _PROCESS.entered or threading.current_thread() is not threading.main_thread():
        yield
        return
    _PROCESS.entered, _PROCESS.phase = True, "starting"
    _PROCESS.originals = {signum: signal.getsignal(signum) for signum in STARTING_SIGNALS}
    atexit.register(_ignore_ctrl_c_after_exit_handlers)
    for signum, handler in _PROCESS.originals.items():
        if handler is not signal.SIG_IGN:  # a background job's SIGINT stays ignored
            signal.signal(signum, _interrupt_start)
    try:
        yield
    except STOPPED:
        if _PROCESS.phase != "starting":  # a second Ctrl-C after the command's: as before
            raise
        _PROCESS.phase = "ended"
        _restore_originals()
        interrupted_while_starting()
    finally:
        if _PROCESS.phase == "starting":  # no command ran: --help, --version, a command line typer refused
            command_ended(interrupted=False)
        _PROCESS.entered = False


def command_begins() -> None:
    """The command's own handler is about to be set: Python's handlers are back, as its handler expects to find."""
    if _PROCESS.entered and _PROCESS.phase == "starting":
        _PROCESS.phase = "running"
        _restore_originals()


def command_ended(*, interrupted: bool) -> None:
    """The command has ended, its handler is gone. `interrupted`: it was stopped by a signal, and a Ctrl-C from here
    on acts at once (a cleanup that hangs)."""
    if not _PROCESS.entered or _PROCESS.phase == "ended":
        return
    _PROCESS.phase = "ended"
    _restore_originals()
    if not interrupted and _PROCESS.originals.get(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _ctrl_c_after_the_command)
