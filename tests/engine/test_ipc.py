"""vLLM's socket files go to a folder of the process's own, removed at exit, not left in the temp folder."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssogen import temp_owner
from ssogen.engine import ipc


def _sockets_and_folders(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if stat.S_ISSOCK(path.lstat().st_mode) or path.name.startswith(ipc.PREFIX):
            found.append(str(path.relative_to(root)))
    return found


@pytest.fixture
def short_temp() -> Iterator[Path]:
    """A temp folder with a short path: a socket file's path has at most 107 bytes, pytest's tmp_path is long."""
    folder = Path(tempfile.mkdtemp(prefix="ipc", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_engine_leaves_no_socket_files_in_the_temp_folder(tiny_model: Path, short_temp: Path) -> None:
    """vLLM left seven socket files in /tmp per engine, after a clean shutdown too."""
    temp = short_temp
    # The engine core in its own process, as the CLI runs it (the tests' conftest keeps it in process).
    env = {k: v for k, v in os.environ.items() if k != ipc.RPC_BASE_ENV} | {
        "TMPDIR": str(temp), "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    script = ("import os, sys\n"
              "from ssogen.engine.vllm_llm import build_vllm_llm, shutdown_vllm_llm\n"
              "shutdown_vllm_llm(build_vllm_llm(sys.argv[1]))\n"
              "folder = os.environ['VLLM_RPC_BASE_PATH']\n"
              "print(len(os.listdir(folder)), os.path.dirname(folder) == os.environ['TMPDIR'])\n")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_model)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    count, inside = done.stdout.split()[-2:]
    assert int(count) > 0 and inside == "True"  # the sockets were there while the process ran
    assert _sockets_and_folders(temp) == []


def test_a_folder_the_user_names_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ipc, "_made_by_pid", {})
    monkeypatch.setenv(ipc.RPC_BASE_ENV, str(tmp_path))
    assert ipc.use_private_socket_folder() is None
    assert os.environ[ipc.RPC_BASE_ENV] == str(tmp_path) and list(tmp_path.iterdir()) == []


def test_a_temp_folder_too_deep_for_socket_paths_keeps_vllms_default(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 80)
    deep.mkdir()
    monkeypatch.setattr(ipc, "_made_by_pid", {})
    monkeypatch.delenv(ipc.RPC_BASE_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert ipc.use_private_socket_folder() is None
    assert ipc.RPC_BASE_ENV not in os.environ and list(deep.iterdir()) == []


def _env_for(temp: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ipc.RPC_BASE_ENV} | {"TMPDIR": str(temp)}


def _start_holding(script: str, temp: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A process that runs `script`, prints its socket folder as 'FOLDER <path> <names in it>' and waits for its
    stdin to close; with that folder."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env=_env_for(temp), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("FOLDER "):
            return proc, line.removeprefix("FOLDER ").strip()
    raise AssertionError(f"no folder printed, exit {proc.wait()}")


def _kill_9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


HOLD = ("import os, sys\n"
        "from ssogen.engine import ipc\n"
        "folder = ipc.use_private_socket_folder()\n"
        "print('FOLDER', folder, flush=True)\n"
        "sys.stdin.read()\n")
NEXT = "from ssogen.engine import ipc\nipc.use_private_socket_folder()\n"  # as the next engine's start does


def _next_engine_starts(temp: Path) -> None:
    nxt = subprocess.run([sys.executable, "-c", NEXT], env=_env_for(temp), capture_output=True, text=True,
                         timeout=120)
    assert nxt.returncode == 0, nxt.stderr[-2000:]


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def test_the_folder_of_a_killed_process_goes_with_the_next_engine_and_a_live_ones_stays(short_temp: Path) -> None:
    """A `kill -9` left the socket folder in the temp folder for good, one per killed run."""
    temp = short_temp
    live, live_folder = _start_holding(HOLD, temp)
    dead, dead_folder = _start_holding(HOLD, temp)
    try:
        _kill_9(dead)
        (temp / f"{ipc.PREFIX}older").mkdir()  # an older ssogen's, naming no owner: not ours to judge
        (temp / "vllm_dist_0123456789abcdef").write_text("another program's")
        _next_engine_starts(temp)
        assert sorted(path.name for path in temp.iterdir()) == sorted(
            [Path(live_folder).name, f"{ipc.PREFIX}older", "vllm_dist_0123456789abcdef"])
        assert not Path(dead_folder).exists()
    finally:
        _end(live)
    assert not Path(live_folder).exists()  # removed at its exit, as before


def test_a_pid_running_another_process_is_gone_but_another_boots_is_not_judged(short_temp: Path) -> None:
    temp = short_temp
    live, live_folder = _start_holding(HOLD, temp)
    try:
        boot, namespace, pid, start = (Path(live_folder) / temp_owner.OWNER_FILE).read_text().split()
        assert int(pid) == live.pid
        reused = temp / f"{ipc.PREFIX}reused"  # the live process's pid, but it started later: another process
        other_boot = temp / f"{ipc.PREFIX}otherboot"  # as if /tmp were shared with another machine
        for folder, line in ((reused, f"{boot} {namespace} {pid} {int(start) + 1}\n"),
                             (other_boot, f"another-boot {namespace} 999999999 1\n")):
            folder.mkdir()
            (folder / temp_owner.OWNER_FILE).write_text(line)
        _next_engine_starts(temp)
        assert sorted(path.name for path in temp.iterdir()) == sorted([Path(live_folder).name, other_boot.name])
    finally:
        _end(live)


def test_a_killed_in_process_engine_leaves_its_rendezvous_file_in_its_folder(tiny_model: Path,
                                                                             short_temp: Path) -> None:
    """An engine inside ssogen's process (the CPU build's default) named vLLM's `vllm_dist_*` rendezvous file in
    the temp folder itself, where a `kill -9` left it with nothing to tell whose it was."""
    temp = short_temp
    script = ("import os, sys\n"
              "os.environ['VLLM_ENABLE_V1_MULTIPROCESSING'] = '0'\n"
              "from ssogen.engine.vllm_llm import build_vllm_llm\n"
              "llm = build_vllm_llm(sys.argv[1])\n"
              "folder = os.environ['VLLM_RPC_BASE_PATH']\n"
              "print('FOLDER', folder, *sorted(os.listdir(folder)), flush=True)\n"
              "sys.stdin.read()\n")
    proc, printed = _start_holding(script, temp, str(tiny_model))
    _kill_9(proc)
    folder, *names = printed.split()
    assert Path(folder).parent == temp
    assert [name for name in names if name.startswith("vllm_dist_")] != []
    assert [path.name for path in temp.iterdir()] == [Path(folder).name]  # the killed run's leftovers, all
    _next_engine_starts(temp)
    assert list(temp.iterdir()) == []
