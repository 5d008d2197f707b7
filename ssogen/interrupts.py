"""Signals turned into ssogen's `Interrupted`, which vLLM cannot swallow.

`interrupt_on(signals)`: while the block runs, those signals raise `Interrupted` (the CLI holds SIGINT and SIGTERM
for a whole command). `ctrl_c_through_engine_start()`: for callers of the Python API, who have no such handler,
Ctrl-C while a vLLM engine starts raises `Interrupted` too, given back to them as the KeyboardInterrupt they
expect once vLLM's code is left. vLLM swallows a KeyboardInterrupt during its start-up handshake
(`zmq_socket_ctx`) and then waits up to 600 s for an engine that has stopped."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ssogen.errors import Interrupted


@contextlib.contextmanager
def interrupt_on(signals: tuple[int, ...]) -> Iterator[None]:
    """While the block runs, each of `signals` raises `Interrupted`. After the first one the previous handlers are
    back, so a second signal stops a cleanup that hangs (a first one raised inside a finalizer, where Python ignores
    exceptions, is sent again). A forked child that inherited the handler acts on the signal as by default. Outside
    the main thread (where handlers cannot be set) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    previous = {signum: signal.getsignal(signum) for signum in signals}
    previous_hook = sys.unraisablehook

    def interrupt(signum: int, frame: Any) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signum)

    def ignored(unraisable: Any) -> None:
        # The handler ran inside a finalizer (a `__del__`, a weakref callback), where Python prints an exception
        # and goes on: the command would run to its end with the previous handlers back. Send the signal again,
        # from a thread, so that it lands in the command's own code once the finalizer has returned.
        exc = unraisable.exc_value
        if not (isinstance(exc, Interrupted) and os.getpid() == owner
                and threading.current_thread() is threading.main_thread()):
            previous_hook(unraisable)
            return
        for signum in signals:
            signal.signal(signum, interrupt)
        _thread.start_new_thread(os.kill, (owner, exc.signum))  # not threading's: its start() waits here

    for signum in signals:
        signal.signal(signum, interrupt)
    sys.unraisablehook = ignored
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def ctrl_c_through_engine_start() -> Iterator[None]:
    """Ctrl-C while the block starts a vLLM engine ends it with a KeyboardInterrupt, rather than a wait of up to
    600 s. Only where Python's own Ctrl-C handler is in place: the CLI's handler, or a caller's, is left alone."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    try:
        with interrupt_on((signal.SIGINT,)):
            yield
    except Interrupted:
        raise KeyboardInterrupt from None
