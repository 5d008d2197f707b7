"""Folders in the temp folder that name the process that made them, so a later ssogen process can remove those
whose process is gone.

A process removes its temp folders when it ends, but a `kill -9` (or the out-of-memory killer) runs no clean-up.
So each folder holds an owner file (`OWNER_FILE`: one line, boot id, pid namespace, pid and the pid's start
time), and the next process that makes a folder of the same kind removes those of owners that have ended. Used
for vLLM's socket folders (`ssogen.engine.ipc`) and for the throwaway cache `datasets` builds of the queries
(`ssogen.generate.inputs`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

OWNER_FILE = ".ssogen-owner"


def make_owned_folder(prefix: str) -> str:
    """A new folder in the temp folder (`tempfile.mkdtemp`) whose owner file names this process (no owner file
    without /proc)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        if (owner := _owner(os.getpid())) is not None:
            written = os.path.join(folder, OWNER_FILE + ".new")
            with open(written, "w", encoding="ascii") as file:
                file.write(owner)
            os.replace(written, os.path.join(folder, OWNER_FILE))  # a reader sees the whole line or none
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


@contextlib.contextmanager
def owned_temp_folder(prefix: str) -> Iterator[str]:
    """A folder of this process in the temp folder for the `with` block, removed after it, made after removing the
    folders of `prefix` left by processes that are gone."""
    remove_stale_folders(prefix)
    folder = make_owned_folder(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(prefix: str) -> list[str]:
    """Remove the folders in the temp folder whose names start with `prefix` and whose owner is gone (a
    `kill -9`): owned by this user, same boot and pid namespace as this process, and its pid no longer running or
    running another process (another start time). A folder of a live process, of another boot, namespace or
    user, or naming no owner (older ssogen) is left alone, and so is a symbolic link; so is everything on a system
    without /proc, or with a temp folder that cannot be listed. One listing of the temp folder. Returns the
    folders removed."""
    here = _owner(os.getpid())
    if here is None:
        return []
    boot, namespace = here.split()[:2]
    removed: list[str] = []
    try:
        entries = os.scandir(tempfile.gettempdir())
    except OSError:  # a clean-up: an unlistable temp folder stops no command
        return removed
    with entries:
        for entry in entries:
            if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                fields = _read_owner(entry.path)
            except (OSError, UnicodeDecodeError):
                continue
            if len(fields) != 4 or fields[:2] != [boot, namespace] or not fields[2].isdigit():
                continue
            if _start_time(int(fields[2])) != fields[3]:
                shutil.rmtree(entry.path, ignore_errors=True)  # refuses a symbolic link put in the folder's place
                removed.append(entry.path)
    return removed


def _read_owner(folder: str) -> list[str]:
    """The fields of a folder's owner file, not following a symbolic link."""
    descriptor = os.open(os.path.join(folder, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(descriptor, encoding="ascii") as file:
        return file.read(200).split()


def _owner(pid: int) -> str | None:
    """'<boot id> <pid namespace> <pid> <start time>', the line of `OWNER_FILE`; None without /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot = file.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    start = _start_time(pid)
    if start is None or not boot or " " in namespace:
        return None
    return f"{boot} {namespace} {pid} {start}\n"


def _start_time(pid: int) -> str | None:
    """The start time of a running process (field 22 of /proc/<pid>/stat); None when it is gone (a zombie too)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            fields = file.read().rsplit(")", 1)[-1].split()  # after the name, which may hold spaces and ')'
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]
