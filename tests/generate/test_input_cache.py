"""The Arrow cache `datasets` builds of a --prompts folder goes to a folder of ssogen's own in the temp folder,
which names its process: a `kill -9` left it there for good; now the next command that builds one removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ssogen import temp_owner
from ssogen.generate.inputs import INPUT_CACHE_PREFIX, read_prompts

# Reads the queries as `generate --prompts FOLDER` does, and holds on once `datasets` has built its cache: prints
# 'FOLDER <cache folder> <names in it>' and waits for its stdin to close.
HOLD = ("import os, sys\n"
        "import datasets\n"
        "from ssogen.generate.inputs import read_prompts\n"
        "load = datasets.load_dataset\n"
        "def load_and_hold(*args, **kwargs):\n"
        "    rows = load(*args, **kwargs)\n"
        "    cache = kwargs['cache_dir']\n"
        "    print('FOLDER', cache, *sorted(os.listdir(cache)), flush=True)\n"
        "    sys.stdin.read()\n"
        "    return rows\n"
        "datasets.load_dataset = load_and_hold\n"
        "print(len(read_prompts(sys.argv[1]).rows))\n")
NEXT = "import sys\nfrom ssogen.generate.inputs import read_prompts\nprint(len(read_prompts(sys.argv[1]).rows))\n"


def _queries(tmp_path: Path) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"prompt": "hi"}\n{"prompt": "there"}\n')
    return folder


def _env_for(temp: Path) -> dict[str, str]:
    return dict(os.environ) | {"TMPDIR": str(temp)}


def _start_holding(temp: Path, queries: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(queries)], env=_env_for(temp), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("FOLDER "):
            folder, *names = line.removeprefix("FOLDER ").split()
            return proc, folder, names
    raise AssertionError(f"no folder printed, exit {proc.wait()}")


def test_the_cache_of_a_killed_command_goes_with_the_next_one_and_a_live_ones_stays(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    queries = _queries(tmp_path)
    live, live_folder, _ = _start_holding(temp, queries)
    try:
        dead, dead_folder, dead_names = _start_holding(temp, queries)
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=60)
        assert Path(dead_folder).parent == temp and dead_names != []
        assert Path(dead_folder).is_dir()  # the killed command's cache, with what `datasets` built in it
        (temp / f"{INPUT_CACHE_PREFIX}older").mkdir()  # an older ssogen's, naming no owner: not ours to judge
        (temp / "ssogen-inputs").mkdir()  # not the prefix
        nxt = subprocess.run([sys.executable, "-c", NEXT, str(queries)], env=_env_for(temp), capture_output=True,
                             text=True, timeout=300)
        assert nxt.returncode == 0 and nxt.stdout.split()[-1] == "2", nxt.stderr[-2000:]
        assert sorted(path.name for path in temp.iterdir()) == sorted(
            [Path(live_folder).name, f"{INPUT_CACHE_PREFIX}older", "ssogen-inputs"])
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=120)
    assert live.returncode == 0 and not Path(live_folder).exists()  # removed as it ended, as before


def test_only_this_users_folders_of_the_exact_prefix_are_judged_never_through_a_symbolic_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    elsewhere = tmp_path / "elsewhere"
    temp.mkdir()
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    boot, namespace, pid, start = (temp_owner._owner(os.getpid()) or "").split()
    stale = f"{boot} {namespace} {pid} {int(start) + 1}\n"  # this pid, but a later start: another process's

    def stale_folder(folder: Path) -> Path:
        folder.mkdir()
        (folder / temp_owner.OWNER_FILE).write_text(stale)
        return folder

    removed = stale_folder(temp / f"{INPUT_CACHE_PREFIX}killed")
    other_kind = stale_folder(temp / "ssogen-vllm-killed")  # another prefix: its own kind's sweep judges it
    target = stale_folder(elsewhere / "target")
    (temp / f"{INPUT_CACHE_PREFIX}link").symlink_to(target)
    linked_owner = temp / f"{INPUT_CACHE_PREFIX}linkedowner"
    linked_owner.mkdir()
    (linked_owner / temp_owner.OWNER_FILE).symlink_to(target / temp_owner.OWNER_FILE)
    live = temp / f"{INPUT_CACHE_PREFIX}live"
    live.mkdir()
    (live / temp_owner.OWNER_FILE).write_text(f"{boot} {namespace} {pid} {start}\n")

    assert temp_owner.remove_stale_folders(INPUT_CACHE_PREFIX) == [str(removed)]
    assert sorted(path.name for path in temp.iterdir()) == sorted(
        [other_kind.name, f"{INPUT_CACHE_PREFIX}link", linked_owner.name, live.name])
    assert (target / temp_owner.OWNER_FILE).read_text() == stale


def test_read_prompts_leaves_no_cache_in_the_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert [row.text for row in read_prompts(str(_queries(tmp_path))).rows] == ["hi", "there"]
    assert list(temp.iterdir()) == []
