"""One writer per folder (issue 10 item 3): the operating system's lock, named holders, takeover after a kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssogen.errors import UserError
from ssogen.lock import folder_lock

HOLD = """
import os, sys, time
from pathlib import Path
from ssogen.lock import folder_lock
with folder_lock(Path(sys.argv[1]), label="--out x", command="ssogen generate"):
    if sys.argv[2] == "fork":  # a child (an engine worker) that outlives its parent
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        print("child", flush=True)
        os._exit(0)  # the parent ends; the child lives on
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(lock: Path, mode: str = "hold") -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), mode], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stdout is not None and process.stdout.readline().strip() in ("held", "child")
    return process


def test_a_second_process_is_refused_naming_the_holder_until_it_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / "out" / ".ssogen" / "lock"
    holder = _hold(lock)
    try:
        with pytest.raises(UserError, match=rf"^--out x: in use by process {holder.pid} \(ssogen generate, since "
                                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\); wait for it") as info:
            with folder_lock(lock, label="--out x", command="ssogen score"):
                pytest.fail("a second process took a lock that another one holds")
        assert info.value.exit_code == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(lock, label="--out x", command="ssogen score") as left_behind:  # taken over
        assert left_behind is not None and left_behind.pid == holder.pid
        assert left_behind.command == "ssogen generate"
        with folder_lock(lock, label="--out x", command="ssogen score") as again:  # the same process: no-op
            assert again is None
    assert lock.read_text() == ""  # a clean release leaves no holder behind
    with folder_lock(lock, label="--out x", command="ssogen score") as after_clean_exit:
        assert after_clean_exit is None


def test_a_forked_child_does_not_keep_its_dead_parents_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    parent = _hold(lock, "fork")
    parent.wait()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with folder_lock(lock, label="--out x", command="ssogen score"):
                    break
            except UserError:
                assert time.monotonic() < deadline, "the child kept the lock"
                time.sleep(0.1)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    # The folder is named as the folder (under /proc the lock file was blamed for a folder that cannot be made).
    with pytest.raises(UserError, match=r"^--out x: cannot create the folder .*/file \(File exists\)$") as info:
        with folder_lock(tmp_path / "file" / "lock", label="--out x", command="c"):
            pytest.fail("a lock file was created under a regular file")
    assert info.value.exit_code == 1
    (tmp_path / "lock").mkdir()
    with pytest.raises(UserError, match=r"^--out x: cannot create the lock file .*/lock \(Is a directory\)$"):
        with folder_lock(tmp_path / "lock", label="--out x", command="c"):
            pytest.fail("a folder was taken for the lock file")


def test_the_read_only_probe_names_the_holder_and_creates_nothing(tmp_path: Path) -> None:
    from ssogen.lock import check_free

    check_free(tmp_path / "new" / ".ssogen" / "lock", label="--out new")
    assert not (tmp_path / "new").exists()
    lock = tmp_path / "out" / ".ssogen" / "lock"
    holder = _hold(lock)
    try:
        with pytest.raises(UserError, match=rf"^--out x: in use by process {holder.pid} \(ssogen generate"):
            check_free(lock, label="--out x")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    check_free(lock, label="--out x")  # a killed holder's lock is free
    with folder_lock(lock, label="--out x", command="ssogen train") as left_behind:  # and the probe took nothing
        assert left_behind is not None and left_behind.pid == holder.pid


def test_a_lock_left_on_another_machine_is_taken_over_with_a_warning(tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    import json

    from ssogen.cli.common import note_lock_takeover

    lock = tmp_path / ".ssogen" / "lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": 1, "command": "ssogen generate", "host": "gpu-node-7", "since": "then"}))
    with folder_lock(lock, label="--out x", command="c") as left_behind:
        assert left_behind is not None and left_behind.elsewhere
        note_lock_takeover(left_behind)  # flock may not reach across machines: the run may still be going
        # iterate says the same (it said "which is no longer running" of a run on another machine)
        assert left_behind.takeover_note().startswith("warning: took over the lock left by process 1 on gpu-node-7")
    err = capfd.readouterr().err
    assert err.startswith("warning: took over the lock left by process 1 on gpu-node-7") and "stop this one" in err


# -- a claim whose run fails before it saved anything leaves no trace (a model that fails to load claimed --out)

def _fail_in_claim(root: Path, *extra: str, exception: BaseException | None = None, nested: bool = False) -> None:
    """Claim `root` as generate does, write what a run writes before its model loads (the fingerprint, the log),
    then the `extra` files (relative to root), and fail."""
    from ssogen.dataset.folder import OutputFolder

    folder = OutputFolder(root)
    failure = exception or UserError("--model m: cannot load it (ValueError: unknown model type)")
    with pytest.raises(type(failure)), folder.claim("ssogen generate"):
        with folder.claim("ssogen generate") if nested else contextlib.nullcontext():  # the run's own, a no-op
            folder.fingerprint.write_text("{}")
            folder.log_file("generate").parent.mkdir(exist_ok=True)
            folder.log_file("generate").write_text("loading the model\n")
            for name in extra:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text("saved")
            raise failure


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_a_run_that_fails_before_saving_anything_removes_what_its_claim_made(tmp_path: Path) -> None:
    """The folder and the missing folders above it, made by the claim, go; so does the claim in a folder that
    existed, which is left as it was: empty, or with the logs of earlier commands."""
    _fail_in_claim(tmp_path / "new" / "deeper" / "out", nested=True)
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    _fail_in_claim(empty)
    assert list(empty.iterdir()) == []
    earlier = tmp_path / "earlier-logs"
    (earlier / "logs").mkdir(parents=True)
    (earlier / "logs" / "train-20200101T000000Z.log").write_text("an earlier command's log")
    before = _tree(earlier)
    _fail_in_claim(earlier)
    assert _tree(earlier) == before


@pytest.mark.parametrize("saved", [".ssogen/selection-00000.jsonl", "checkpoint-2/trainer_state.json",
                                   "notes.txt", "logs/mine.txt"])
def test_saved_work_or_a_persons_file_keeps_everything(tmp_path: Path, saved: str) -> None:
    """Anything but the claim's own files is work to resume from (a shard, a checkpoint) or a person's: then
    nothing is removed, the marker and the log included."""
    _fail_in_claim(tmp_path / "out", saved)
    kept = _tree(tmp_path / "out")
    assert kept[saved] == b"saved" and {".ssogen/marker.json", ".ssogen/lock", ".ssogen/fingerprint.json"} <= set(kept)
    assert any(name.startswith("logs/generate-") for name in kept)


@pytest.mark.parametrize("failure", [UserError("--report-to wandb: the logger failed", exit_code=1),
                                     OSError(27, "File too large"), RuntimeError("a bug")])
def test_a_failure_not_of_the_input_leaves_its_log_but_no_claim(tmp_path: Path, failure: BaseException) -> None:
    """The machine's error or a traceback: the log that holds it stays (a folder holding only ssogen's logs counts as
    empty for every command), the claim goes."""
    _fail_in_claim(tmp_path / "out", exception=failure)
    assert [name.split("-")[0] for name in _tree(tmp_path / "out")] == ["logs", "logs/generate"]


def test_an_interrupted_run_or_a_folder_claimed_before_keeps_its_claim(tmp_path: Path) -> None:
    """Ctrl-C keeps the folder as the run left it (the same command goes on there); a folder that held ssogen's
    marker before the run is never cleared by a failure."""
    _fail_in_claim(tmp_path / "stopped", exception=KeyboardInterrupt())
    assert (tmp_path / "stopped" / ".ssogen" / "marker.json").is_file()
    before = _tree(tmp_path / "stopped")
    _fail_in_claim(tmp_path / "stopped")
    after = _tree(tmp_path / "stopped")
    assert set(before) < set(after) and all(after[name] == data for name, data in before.items() if "lock" not in name)
