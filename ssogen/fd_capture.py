"""Descriptors 1 and 2 redirected into a file for a while, with the terminal kept at hand: `DescriptorCapture`.

The command log (`ssogen.runlog`) uses it so that whatever bypasses Python's logging (tqdm bars, prints, vLLM's
C++ messages, engine worker processes) lands in the log, while the command's own output still reaches the
terminal. A module of its own: it is plain descriptor plumbing, apart from what the log does with records.
A leaf: it imports nothing of ssogen."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Any


def _is_fd(stream: Any, fd: int) -> bool:
    try:
        return stream is not None and stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


class DescriptorCapture:
    """Descriptors 1 and 2 go to the log file; `terminal[fd]` writes to the original descriptor (for the streams
    sys.stdout / sys.stderr were on). `close` restores both descriptors."""

    def __init__(self, path: Path) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        for fd in (1, 2):
            os.dup2(target, fd)
        os.close(target)
        self.terminal: dict[int, IO[str]] = {}
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            if _is_fd(stream, fd):
                # Line-buffered: a child process given this stream writes after what was printed before it.
                self.terminal[fd] = open(self.saved[fd], "w", closefd=False, buffering=1,  # noqa: SIM115
                                         encoding=getattr(stream, "encoding", None) or "utf-8",
                                         errors=getattr(stream, "errors", None) or "replace")

    def close(self) -> None:
        for stream in self.terminal.values():
            with contextlib.suppress(Exception):
                stream.flush()
        for stream in (sys.stdout, sys.stderr):  # what libraries wrote through Python belongs in the log
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
