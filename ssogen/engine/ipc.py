"""A private folder for vLLM's ZMQ socket files, removed when the process exits.

vLLM binds its engine's sockets as files under `VLLM_RPC_BASE_PATH` (default: the temp folder) and leaves them
there after a clean shutdown: seven files per engine, so every run would add to /tmp. Unless the user names a
folder, ssogen gives each process that builds an engine one folder of its own under the temp folder, once (vLLM
caches the variable after its first engine starts), and removes it at exit. Child processes inherit the variable,
so the engine core's sockets land there too.

A `kill -9` runs no exit handler, so each folder names its owner (`ssogen.temp_owner`). The next process here
that builds an engine removes the folders of owners that are gone."""

from __future__ import annotations

import atexit
import os
import shutil

from ssogen.temp_owner import make_owned_folder, remove_stale_folders

RPC_BASE_ENV = "VLLM_RPC_BASE_PATH"
PREFIX = "ssogen-vllm-"
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
        remove_stale_folders(PREFIX)
    if os.environ.get(RPC_BASE_ENV):
        return None
    folder = make_owned_folder(PREFIX)
    if len(folder) + len("/") + UUID_LENGTH > SOCKET_PATH_MAX:  # vLLM could not bind there: keep its default
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _made_by_pid[pid] = folder
    os.environ[RPC_BASE_ENV] = folder
    atexit.register(_remove, folder, pid)
    return folder


def remove_private_socket_folder() -> None:
    """Remove this process's folder now, for a process that ends without running its exit handlers (a Ray actor,
    which `ray.kill` ends). Its engine must be shut down first, and it must build no engine after this."""
    pid = os.getpid()
    if (folder := _made_by_pid.get(pid)) is not None:
        _remove(folder, pid)


def _remove(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # a forked child runs its parent's atexit handlers too: the folder is not its own
        shutil.rmtree(folder, ignore_errors=True)
