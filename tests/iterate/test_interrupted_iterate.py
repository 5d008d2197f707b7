"""Ctrl-C or `kill` of `ssogen iterate` while a step runs: which lines the user is left with, and what iterate.json
records for the step.

A step said "run the same command again", which reads as the step's own `ssogen generate ...`; it is resumed by the
iterate command, whose lines come last. A step that the signal caught as it finished (its result whole, its exit
0 or 130) was recorded as `interrupted`; a rerun then kept its result, but iterate.json said otherwise until then."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ssogen.errors import Interrupted, UserError
from ssogen.iterate.plan import Step
from ssogen.iterate.state import RunState

GENERATE_YAML = "max_tokens: 8\nkeep_truncated: true\n"
TRAIN_YAML = ("max_steps: 2\nbatch_size: 2\nlogging_steps: 1\nlr: 0.001\nwarmup_ratio: 0.0\nmax_length: 256\n"
              "max_prompt_length: 192\nsave_steps: 1\n")

# A stats step whose result (stats.json) is whole before iterate is interrupted: it writes it, then sends iterate
# (its parent) the SIGALRM that the test turns into iterate's Interrupted, and ends as a step does on the SIGINT
# iterate passes on (exit 130), or without seeing it (it came after the step's last handler: exit 0).
STEP = ("import os, pathlib, signal, sys, time\n"
        "pathlib.Path(sys.argv[1]).write_text('{}')\n"
        "if sys.argv[2] == '130':\n"
        "    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
        "else:\n"
        "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "os.kill(os.getppid(), signal.SIGALRM)\n"
        "time.sleep(0.5 if sys.argv[2] == '0' else 60)\n")


def _fingerprint() -> dict[str, Any]:
    return {"fingerprint": "a", "options": {"model": "m"}}


@pytest.mark.parametrize("exit_code", ["130", "0"])
def test_a_step_the_interrupt_caught_as_it_finished_is_recorded_as_done(tmp_path: Path, exit_code: str) -> None:
    from ssogen.iterate.run import run_step

    state = RunState(tmp_path / "run")
    state.open(_fingerprint(), overwrite=False)
    data = tmp_path / "data"
    data.mkdir()
    step = Step("iter-1/stats", "stats", data, [sys.executable, "-c", STEP, str(data / "stats.json"), exit_code],
                "m", data)

    def interrupted(*_: object) -> None:
        raise Interrupted(signal.SIGINT)  # what the CLI's handler raises in iterate on Ctrl-C

    previous = signal.signal(signal.SIGALRM, interrupted)
    try:
        with pytest.raises(UserError, match=r"^interrupted as iter-1/stats finished \(recorded as done\); run the "
                                            r"same command again to go on$") as info:
            run_step(step, state, Console(file=io.StringIO()))
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert info.value.exit_code == 130  # iterate stops all the same
    entry = json.loads(state.path.read_text())["steps"][step.id]
    assert entry["status"] == "done" and "exit_code" not in entry and entry["seconds"] >= 0 and entry["stamp"]
    assert state.is_done(step)
    # The rerun keeps it, as it is.
    shown, rerun = io.StringIO(), RunState(tmp_path / "run")
    assert rerun.open(_fingerprint(), overwrite=False)  # resumed
    assert not run_step(step, rerun, Console(file=shown))
    assert "done iter-1/stats (kept from an earlier invocation)" in shown.getvalue()
    assert json.loads(state.path.read_text())["steps"][step.id] == entry


def test_a_step_recorded_interrupted_with_its_result_whole_is_kept_as_done_without_its_exit_code(
        tmp_path: Path) -> None:
    """iterate.json of an earlier version: the rerun keeps the step, and its entry no longer holds exit code 130."""
    from ssogen.iterate.run import run_step

    state = RunState(tmp_path / "run")
    state.open(_fingerprint(), overwrite=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "stats.json").write_text("{}")
    step = Step("iter-1/stats", "stats", data, [sys.executable, "-c", "raise SystemExit(3)"], "m", data)
    state.mark_running(step, step.argv)
    state.mark_stopped(step, 130)
    assert not run_step(step, state, Console(file=io.StringIO()))
    entry = json.loads(state.path.read_text())["steps"][step.id]
    assert entry["status"] == "done" and "exit_code" not in entry and "stopped" not in entry


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _status(out: Path, step: str) -> str | None:
    try:
        return (_json(out / "iterate.json")["steps"].get(step) or {}).get("status")
    except (OSError, json.JSONDecodeError):  # not written yet, or being replaced
        return None


def _wait(condition: Any, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"iterate ended before {what}: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.01)


def _step_process(iterate: int, command: str) -> int | None:
    """The pid of iterate's child running `ssogen COMMAND` (Linux: /proc), None while there is none."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if parent == iterate and command.encode() in argv:
            return int(stat.parent.name)
    return None


def _zombie(pid: int) -> bool:
    """The process has ended and its parent has not reaped it yet."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _last_line(stderr: str) -> str:
    return stderr.rstrip("\n").splitlines()[-1]


def test_ctrl_c_of_iterate_on_the_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    """Three invocations of one command: Ctrl-C while generate runs, Ctrl-C as the resumed generate has just ended, and
    the rerun that finishes the run keeping that generate's data."""
    out = tmp_path / "run"
    (tmp_path / "generate.yaml").write_text(GENERATE_YAML)
    (tmp_path / "train.yaml").write_text(TRAIN_YAML)
    args = [sys.executable, "-m", "ssogen", "iterate", "--model", str(tiny_model), "--out", str(out), "-T", "1",
            "--queries-per-iteration", "3", "--generate-config", str(tmp_path / "generate.yaml"),
            "--train-config", str(tmp_path / "train.yaml")]
    resume_line = "to resume: ssogen iterate --model "

    # 1. Ctrl-C (SIGINT to iterate's process group; the step runs in its own) while generate runs: once it has
    # claimed its folder (its marker is written), so its command's handler is in place.
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    marker = out / "iter-1" / "data" / ".ssogen" / "marker.json"
    _wait(lambda: marker.exists() and _step_process(first.pid, "generate") is not None, first, "generate started")
    os.killpg(first.pid, signal.SIGINT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: interrupted")]
    # The step's line (what it saved) names the iterate command; iterate's own lines come last.
    assert len(errors) == 2 and "the same ssogen iterate command" in errors[0], stderr[-3000:]
    assert errors[1].startswith("error: interrupted during iter-1/generate; ")
    assert _last_line(stderr).startswith(resume_line) and "to resume: ssogen generate" not in stderr
    assert _status(out, "iter-1/generate") == "interrupted"

    # 2. The same command; Ctrl-C once the resumed generate has ended, its result whole (exit 0), before iterate has
    # seen it end: iterate is held (SIGSTOP) meanwhile, and the step, which it cannot reap, stays a zombie.
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    _wait(lambda: _status(out, "iter-1/generate") == "running" and _step_process(second.pid, "generate"), second,
          "generate started")
    step = _step_process(second.pid, "generate")
    assert step is not None
    os.kill(second.pid, signal.SIGSTOP)
    try:
        _wait(lambda: _zombie(step), second, "generate ended")
        manifest = out / "iter-1" / "data" / "manifest.json"
        assert _json(manifest)["status"] == "complete" and _status(out, "iter-1/generate") == "running"
        os.killpg(second.pid, signal.SIGINT)
    finally:
        os.kill(second.pid, signal.SIGCONT)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 130, stderr[-3000:]
    assert "error: interrupted as iter-1/generate finished (recorded as done)" in stderr, stderr[-3000:]
    assert _last_line(stderr).startswith(resume_line)
    generated = _json(out / "iterate.json")["steps"]["iter-1/generate"]
    assert generated["status"] == "done" and "exit_code" not in generated and generated["seconds"] > 0
    manifest_before = manifest.read_bytes()

    # 3. The same command again: generate is kept as it is, the rest runs.
    third = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "done iter-1/generate (kept from an earlier invocation)" in third.stdout
    assert manifest.read_bytes() == manifest_before
    steps = _json(out / "iterate.json")["steps"]
    assert steps["iter-1/generate"] == generated and steps["iter-1/train"]["status"] == "done"
