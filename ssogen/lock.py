"""One writer per output folder: an exclusive advisory lock on a file inside it.

The lock is the operating system's (`flock` on POSIX, `msvcrt.locking` on Windows), not the file's existence, so
it is released the moment its process ends, kill -9 included: a lock left by a killed run is free again and the
next run takes it over. The file holds who took it (pid, command, host, time), so a run that finds the folder
busy can name the process that holds it. Taking a lock the process already holds is a no-op (a command takes it
early, before any heavy import, and the run it calls takes it again)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ssogen.errors import UserError

ENVIRONMENT_ERROR = 1
# Windows locks a byte range and then refuses reads of it: lock a byte far past the holder text instead.
_WINDOWS_LOCK_OFFSET = 1 << 20


@dataclass(frozen=True)
class Holder:
    """What the lock file says about the process that took the lock."""

    pid: int | None
    command: str
    host: str
    since: str

    @property
    def elsewhere(self) -> bool:
        """Taken on another machine: a file system may keep its locks per machine (NFS with local locks), so
        that run's end is not known here."""
        return self.host not in ("", socket.gethostname())

    def describe(self) -> str:
        where = f" on {self.host}" if self.elsewhere else ""
        pid = f"process {self.pid}" if self.pid is not None else "another process"
        return f"{pid}{where} ({self.command or 'ssogen'}, since {self.since or 'an unknown time'})"

    def takeover_note(self) -> str:
        """What to say on taking this holder's lock over: a warning where its run may still be going."""
        if self.elsewhere:  # its lock may not reach this machine
            return (f"warning: took over the lock left by {self.describe()}; if that run is still going on its "
                    "machine, stop this one: two runs would write one folder")
        return f"note: took over the lock left by {self.describe()}, which is no longer running"


# Locks this process holds: resolved lock path -> [file descriptor, nesting depth].
_held: dict[Path, list[int]] = {}


def _close_inherited() -> None:
    """In a forked child (engine workers): drop the inherited descriptors, so that the lock ends with the parent
    and not with its last child."""
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 4096, 0) if hasattr(os, "pread") else b""
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return Holder(pid=pid if isinstance(pid, int) else None, command=str(data.get("command", "")),
                  host=str(data.get("host", "")), since=str(data.get("since", "")))


def _write_holder(fd: int, command: str) -> None:
    text = json.dumps({"pid": os.getpid(), "command": command, "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8"))


def _in_use(label: str, holder: Holder | None) -> UserError:
    who = holder.describe() if holder else "another process"
    return UserError(f"{label}: in use by {who}; wait for it to finish or stop it (one run per folder)",
                     ENVIRONMENT_ERROR)


def holds(lock_file: Path) -> bool:
    """Whether this process holds the lock already (a claim entered again is nested in the first)."""
    return lock_file.resolve() in _held


def check_free(lock_file: Path, *, label: str) -> None:
    """Read-only: the error `folder_lock` would give when another live process holds the lock, creating nothing
    (a command that checks more before it takes the folder fails at once on a busy one)."""
    if holds(lock_file) or not lock_file.is_file():
        return
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except OSError:
        return  # folder_lock will say what is wrong
    try:
        if not _try_lock(fd):
            raise _in_use(label, _read_holder(fd))
    finally:
        os.close(fd)  # closing the descriptor releases the probe's lock


@contextlib.contextmanager
def folder_lock(lock_file: Path, *, label: str, command: str) -> Iterator[Holder | None]:
    """Hold the lock on `lock_file` (created, with its folder) for the block. Yields the holder a killed process
    left in the file (the lock it took over) or None. A lock held by a live process is one line, exit 1:
    `label: in use by process N (...)`."""
    key = lock_file.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield None
        finally:
            _held[key][1] -= 1
        return
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the folder itself (a read-only or virtual file system, no permission)
        raise UserError(f"{label}: cannot create the folder {lock_file.parent} ({exc.strerror or exc})",
                        ENVIRONMENT_ERROR) from None
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"{label}: cannot create the lock file {lock_file} ({exc.strerror or exc})",
                        ENVIRONMENT_ERROR) from None
    if not _try_lock(fd):
        holder = _read_holder(fd)
        os.close(fd)
        raise _in_use(label, holder)
    left_behind = _read_holder(fd)
    try:
        _write_holder(fd, command)
    except OSError as exc:  # a full disk: a write(2) names no file, so name the lock file; and let the lock go
        os.close(fd)
        exc.filename = str(lock_file)
        raise
    _held[key] = [fd, 1]
    try:
        yield left_behind
    finally:
        entry = _held.pop(key, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a clean exit leaves no holder behind; a killed one leaves its own
            os.close(fd)  # closing the descriptor releases the lock
