"""vLLM's socket files go to a folder of the process's own, removed at exit, not left in the temp folder."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
