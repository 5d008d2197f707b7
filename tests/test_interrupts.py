"""ssogen.interrupts: signals raised as ssogen's Interrupted (which vLLM cannot swallow), in this process."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from ssogen.errors import Interrupted
from ssogen.interrupts import ctrl_c_through_engine_start, interrupt_on


def test_a_signal_raises_interrupted_once_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, interrupt_on((signal.SIGINT, signal.SIGTERM)):
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_an_engine_starts_is_a_keyboard_interrupt_from_outside_vllm() -> None:
    seen: list[BaseException] = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_through_engine_start():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt as exc:  # what vLLM's start-up swallows: never this inside the block
            seen.append(exc)
    assert not seen and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_of_the_caller_is_left_alone() -> None:
    calls: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        with ctrl_c_through_engine_start():
            os.kill(os.getpid(), signal.SIGINT)
        assert calls == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_that_lands_in_a_finalizer_still_stops_the_block() -> None:
    """A Ctrl-C that came while a `__del__` ran (vLLM's start-up frees regex objects) raised Interrupted inside it,
    where Python prints the exception and goes on: the handlers were back to the previous ones and the command ran
    to its end (an iterate step then ignored the Ctrl-C iterate passed on)."""
    import time

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the finalizer

    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(Interrupted) as info, interrupt_on((signal.SIGINT, signal.SIGTERM)):
        Finalized()  # garbage at once
        time.sleep(10)  # the command's own work
    assert info.value.signum == signal.SIGTERM and time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler
