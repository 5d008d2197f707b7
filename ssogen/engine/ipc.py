"""A private folder for vLLM's ZMQ socket files, removed when the process exits.

vLLM binds its engine's sockets as files under `VLLM_RPC_BASE_PATH` (default: the temp folder) and leaves them
there after a clean shutdown: seven files per engine, so every run would add to /tmp. Unless the user names a
folder, ssogen gives each process that builds an engine one folder of its own under the temp folder, once (vLLM
caches the variable after its first engine starts), and removes it at exit. Child processes inherit the variable,
so the engine core's sockets land there too.

A `kill -9` runs no exit handler, so each folder names its owner (`OWNER_FILE`: boot, pid namespace, pid and the
pid's start time). The next process here that builds an engine removes the folders of owners that are gone."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

RPC_BASE_ENV = "VLLM_RPC_BASE_PATH"
PREFIX = "ssogen-vllm-"
OWNER_FILE = ".ssogen-owner"
SOCKET_PATH_MAX = 107  # a socket file's path must fit in sockaddr_un.sun_path (108 bytes with the NUL)
UUID_LENGTH = 36  # vLLM names each socket file by a uuid4

_made_by_pid: dict[int, str] = {}  # pid -> the folder this process made (a forked child makes its own)
_swept_by_pid: set[int] = set()


def use_private_socket_folder() -> str | None:
    """Point vLLM's socket files at this process's own folder (made now, removed at exit), after removing those
    of ssogen processes that are gone. Returns that folder; None when the user set `VLLM_RPC_BASE_PATH` (theirs
    is left alone)."""
    pid = os.getpid()
    if pid in _made_by_pid:
        return _made_by_pid[pid]
    if pid not in _swept_by_pid:
        _swept_by_pid.add(pid)
        remove_stale_folders()
    if os.environ.get(RPC_BASE_ENV):
        return None
    folder = tempfile.mkdtemp(prefix=PREFIX)
    if len(folder) + len("/") + UUID_LENGTH > SOCKET_PATH_MAX:  # vLLM could not bind there: keep its default
        os.rmdir(folder)
        return None
    _made_by_pid[pid] = folder
    os.environ[RPC_BASE_ENV] = folder
    atexit.register(_remove, folder, pid)
    if (owner := _owner(pid)) is not None:
        written = os.path.join(folder, OWNER_FILE + ".new")
        with open(written, "w", encoding="ascii") as file:
            file.write(owner)
        os.replace(written, os.path.join(folder, OWNER_FILE))  # a reader sees the whole line or none
    return folder


def remove_private_socket_folder() -> None:
    """Remove this process's folder now, for a process that ends without running its exit handlers (a Ray actor,
    which `ray.kill` ends). Its engine must be shut down first, and it must build no engine after this."""
    pid = os.getpid()
    if (folder := _made_by_pid.get(pid)) is not None:
        _remove(folder, pid)


def remove_stale_folders() -> list[str]:
    """Remove the folders in the temp folder whose owner is gone (a `kill -9`): same boot and pid namespace as
    this process, and its pid no longer running or running another process (another start time). A folder of
    a live process, of another boot, namespace or user, or naming no owner (older ssogen) is left alone; so is
    everything on a system without /proc. Returns the folders removed."""
    here = _owner(os.getpid())
    if here is None:
        return []
    boot, namespace = here.split()[:2]
    removed = []
    with os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                with open(os.path.join(entry.path, OWNER_FILE), encoding="ascii") as file:
                    fields = file.read(200).split()
            except (OSError, UnicodeDecodeError):
                continue
            if len(fields) != 4 or fields[:2] != [boot, namespace] or not fields[2].isdigit():
                continue
            if _start_time(int(fields[2])) != fields[3]:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


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


def _remove(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # a forked child runs its parent's atexit handlers too: the folder is not its own
        shutil.rmtree(folder, ignore_errors=True)
