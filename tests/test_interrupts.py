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
