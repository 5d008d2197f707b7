"""The command log (`ssogen.runlog`): everything reaches the file, warnings also reach the terminal once each,
secrets never appear, and the process's descriptors and loggers are as before afterwards."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssogen import runlog
from ssogen.errors import UserError
from ssogen.redaction import hide
from ssogen.runlog import LIBRARY_LOGGERS, active_logs, command_log, terminal


def test_library_logging_python_warnings_and_descriptor_writes_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "t.log"
    shown: list[str] = []
    library = logging.getLogger("vllm.engine")
    library_root = logging.getLogger("vllm")
    # vLLM may already have configured its logger in this process (an engine built by an earlier test, a command
    # that quieted it): the state to be put back is whatever was there, plus the handler added here.
    handlers_before, propagate_before = list(library_root.handlers), library_root.propagate
    level_before = library_root.level
    own = logging.StreamHandler()
    library_root.addHandler(own)  # as vLLM does: its own handler, no propagation, level INFO (its default)
    library_root.propagate = False
    library_root.setLevel(logging.INFO)
    try:
        with command_log(path, "t", ["ssogen", "t"], import_transformers=False, warn=shown.append):
            assert path.resolve() in active_logs()
            library.info("engine details")
            library.warning("slow path")
            library.warning("slow path")  # the same message twice: printed once
            warnings.warn("an old API", FutureWarning, stacklevel=1)
            os.write(2, b"noise from C++\n")
            os.write(1, b"a print from a worker\n")
        text = path.read_text()
        for line in ("INFO ssogen: ssogen ", "INFO vllm.engine: engine details", "WARNING vllm.engine: slow path",
                     "FutureWarning: an old API", "noise from C++", "a print from a worker", "finished in"):
            assert line in text, line
        assert shown[:2] == ["warning [vllm]: slow path", "warning: " + shown[1].removeprefix("warning: ")]
        assert len(shown) == 2 and "FutureWarning: an old API" in shown[1]
        # Afterwards: vLLM's own handler is back, nothing more goes to the log, no log is active.
        assert library_root.handlers == [*handlers_before, own] and library_root.propagate is False
        os.write(2, b"")
        assert path.read_text() == text and not active_logs() and terminal() == (None, None)
    finally:
        library_root.removeHandler(own)
        library_root.propagate = propagate_before
        library_root.setLevel(level_before)


def test_secrets_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    hide("hf_SECRETvalue123")
    shown: list[str] = []
    with pytest.raises(UserError, match="cannot reach the hub"), \
            command_log(path, "push-to-hub", ["ssogen", "push-to-hub", "--token", "hf_SECRETvalue123"],
                        capture_fds=False, import_transformers=False, warn=shown.append):
        logging.getLogger("huggingface_hub").warning("header Bearer hf_SECRETvalue123 refused")
        raise UserError("cannot reach the hub", 1)
    text = path.read_text()
    assert "hf_SECRETvalue123" not in text and "--token ***" in text and "Bearer ***" in text
    assert "ERROR ssogen: error (exit 1) after" in text and "cannot reach the hub" in text
    assert shown == ["warning [huggingface_hub]: header Bearer *** refused"]  # the error line is the CLI's


def test_a_traceback_in_the_log_hides_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    hide("hf_SECRETvalue123")
    with pytest.raises(RuntimeError), command_log(path, "push-to-hub", ["ssogen"], capture_fds=False,
                                                  import_transformers=False, warn=[].append):
        raise RuntimeError("rejected header Bearer hf_SECRETvalue123")
    text = path.read_text()
    assert "hf_SECRETvalue123" not in text and "RuntimeError: rejected header Bearer ***" in text
    assert "Traceback" in text  # still the whole traceback, only the secret is gone


def test_the_error_line_and_the_resume_line_hide_a_secret(monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    import typer

    from ssogen.cli.common import user_errors

    hide("hf_SECRETvalue123")
    monkeypatch.setattr(sys, "argv", ["ssogen", "push-to-hub", "d", "--token", "hf_SECRETvalue123"])

    @user_errors
    def stopped() -> None:
        raise UserError("interrupted while sending hf_SECRETvalue123", exit_code=130)

    with pytest.raises(typer.Exit):
        stopped()
    err = capfd.readouterr().err
    assert "hf_SECRETvalue123" not in err and "to resume: ssogen push-to-hub d --token ***" in err, err


def test_the_terminal_keeps_the_output_the_log_gets_the_rest(tmp_path: Path) -> None:
    """In a process of its own (descriptors 1 and 2 are real there): a child process started with `terminal()`
    writes to the terminal, one started plainly writes into the log."""
    log = tmp_path / "t.log"
    script = f"""
import subprocess, sys
from pathlib import Path
from ssogen.runlog import command_log, terminal
with command_log(Path({str(log)!r}), "t", import_transformers=False) as session:
    session.stdout.write("summary for the user\\n")
    print("a library print")
    stdout, stderr = terminal()
    subprocess.run([sys.executable, "-c", "print('child on the terminal')"], stdout=stdout, stderr=stderr)
    subprocess.run([sys.executable, "-c", "print('child into the log')"])
print("after the log")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines() == ["summary for the user", "child on the terminal", "after the log"]
    text = log.read_text()
    assert "a library print" in text and "child into the log" in text and "summary for the user" not in text


def _process_state() -> dict[str, object]:
    """What a command log changes while it runs and must put back."""
    root = logging.getLogger()
    libraries = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                        logging.getLogger(name).level) for name in LIBRARY_LOGGERS}
    descriptors = {fd: (os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)}
    return {"root": (list(root.handlers), root.level), "showwarning": warnings.showwarning, "libraries": libraries,
            "descriptors": descriptors, "active": active_logs(), "terminal": terminal(),
            "printers": list(runlog._PRINTERS), "vllm_configure_logging": os.environ.get("VLLM_CONFIGURE_LOGGING")}


@pytest.mark.parametrize("outcome", ["success", "exception", "user error"])
def test_everything_is_put_back_after_success_and_failure(tmp_path: Path, outcome: str) -> None:
    transformers = logging.getLogger("transformers")
    saved_level = transformers.level
    transformers.setLevel(logging.WARNING)  # a command log lowers it to INFO meanwhile
    try:
        before = _process_state()
        with contextlib.suppress(RuntimeError, UserError), command_log(tmp_path / "t.log", "t", ["ssogen", "t"],
                                                                       import_transformers=False, warn=[].append):
            assert _process_state() != before
            logging.getLogger("transformers.trainer").info("step 1")  # caches isEnabledFor(INFO) = True
            if outcome == "exception":
                raise RuntimeError("boom")
            if outcome == "user error":
                raise UserError("bad flag", 2)
        assert _process_state() == before
        assert not logging.getLogger("transformers.trainer").isEnabledFor(logging.INFO)
        text = (tmp_path / "t.log").read_text()
        assert "INFO transformers.trainer: step 1" in text
        assert {"success": "finished in", "exception": "RuntimeError: boom",
                "user error": "error (exit 2) after"}[outcome] in text
    finally:
        transformers.setLevel(saved_level)


@pytest.mark.parametrize("failing_step", ["_adopt_library_loggers", "_root_handlers"])
def test_a_failure_while_starting_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        failing_step: str) -> None:
    """The descriptors are redirected first: whatever fails after that, they (and all else) are put back."""
    before = _process_state()

    def fail(*_args: object) -> None:
        raise OSError("cannot")

    monkeypatch.setattr(runlog, failing_step, fail)
    with pytest.raises(OSError, match="cannot"), command_log(tmp_path / "t.log", "t", import_transformers=False):
        pytest.fail("the log session started although one of its steps failed")
    assert _process_state() == before


@pytest.mark.usefixtures("vllm_logger")  # puts vLLM's logger back, should this test fail
@pytest.mark.parametrize("outcome", ["success", "exception"])
def test_a_logger_reconfigured_during_the_command_is_put_back_as_it_was(tmp_path: Path, outcome: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM configures its logger when an engine is built, i.e. inside `generate` (its own handler, no
    propagation, its level): afterwards the logger is as before the command. vLLM's handler used to stay, beside
    the propagation put back; and VLLM_CONFIGURE_LOGGING, set for the command, used to stay set for the process."""
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING", raising=False)
    before = _process_state()
    vllm_config = {"version": 1, "disable_existing_loggers": False,  # as vLLM's default dictConfig
                   "handlers": {"vllm": {"class": "logging.StreamHandler", "level": "WARNING"}},
                   "loggers": {"vllm": {"handlers": ["vllm"], "level": "WARNING", "propagate": False}}}
    with contextlib.suppress(RuntimeError), command_log(tmp_path / "t.log", "generate", ["ssogen", "generate"],
                                                        import_transformers=False, warn=[].append):
        assert os.environ["VLLM_CONFIGURE_LOGGING"] == "0"
        logging.config.dictConfig(vllm_config)
        if outcome == "exception":
            raise RuntimeError("the engine failed")
    assert _process_state() == before


@pytest.fixture
def vllm_logs_warnings() -> Iterator[None]:
    """An engine that an earlier test built through the Python API (outside a command) configured vLLM's logger,
    at ERROR: the tests that log a vLLM warning set its level for their own duration."""
    library = logging.getLogger("vllm")
    level = library.level
    library.setLevel(logging.WARNING)
    yield
    library.setLevel(level)


@pytest.mark.usefixtures("vllm_logs_warnings")
def test_nested_sessions_give_the_outer_one_back_intact(tmp_path: Path) -> None:
    outer_path, inner_path = tmp_path / "outer.log", tmp_path / "inner.log"
    before = _process_state()
    outer_shown: list[str] = []
    with command_log(outer_path, "outer", import_transformers=False, warn=outer_shown.append):
        outer_state = _process_state()
        with command_log(inner_path, "inner", import_transformers=False, warn=[].append):
            assert active_logs() == {outer_path.resolve(), inner_path.resolve()}
            os.write(1, b"inside the inner log\n")
        assert _process_state() == outer_state
        # The outer session still catches Python warnings, library logging and descriptor writes.
        warnings.warn("after the inner one", UserWarning, stacklevel=1)
        logging.getLogger("vllm").warning("engine note")
        os.write(2, b"outer descriptor write\n")
    assert _process_state() == before
    outer, inner = outer_path.read_text(), inner_path.read_text()
    assert "inside the inner log" in inner and "inside the inner log" not in outer
    for line in ("UserWarning: after the inner one", "WARNING vllm: engine note", "outer descriptor write"):
        assert line in outer and line not in inner, line
    assert "warning [vllm]: engine note" in outer_shown


@pytest.mark.usefixtures("vllm_logs_warnings")
def test_a_warning_inside_nested_sessions_is_printed_once_and_written_to_both_logs(tmp_path: Path) -> None:
    outer_path, inner_path = tmp_path / "outer.log", tmp_path / "inner.log"
    shown: list[str] = []  # the terminal: in the CLI every session prints through the same console
    with command_log(outer_path, "outer", import_transformers=False, warn=shown.append):
        with command_log(inner_path, "inner", import_transformers=False, warn=shown.append):
            logging.getLogger("ssogen.inner").warning("disk almost full")
            warnings.warn("an old API", FutureWarning, stacklevel=1)
        assert len(shown) == 2, shown
        assert shown[0] == "warning: disk almost full" and "FutureWarning: an old API" in shown[1]
        logging.getLogger("ssogen.inner").warning("disk almost full")  # shown by the inner session already
        logging.getLogger("vllm").warning("engine note")  # the outer session prints on its own again
    assert len(shown) == 3 and shown[2] == "warning [vllm]: engine note", shown
    outer, inner = outer_path.read_text(), inner_path.read_text()
    for line in ("WARNING ssogen.inner: disk almost full", "FutureWarning: an old API"):
        assert line in inner and line in outer, line  # the outer log keeps the full record
    assert outer.count("WARNING ssogen.inner: disk almost full") == 2


def test_nested_sessions_print_on_the_real_terminal_once(tmp_path: Path) -> None:
    """In a process of its own: the inner session's terminal is the outer one's (not the outer log, which holds
    the descriptors when the inner session starts), and a warning raised inside reaches it once."""
    outer, inner = tmp_path / "outer.log", tmp_path / "inner.log"
    script = f"""
import logging
from pathlib import Path
from ssogen.runlog import command_log, terminal
with command_log(Path({str(outer)!r}), "outer", import_transformers=False) as outer_session:
    with command_log(Path({str(inner)!r}), "inner", import_transformers=False) as session:
        logging.getLogger("ssogen").warning("disk almost full")
        session.stdout.write("summary of the inner command\\n")
        assert terminal() == (outer_session.stdout, outer_session.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stderr.splitlines() == ["warning: disk almost full"]
    assert done.stdout.splitlines() == ["summary of the inner command"]
    for log in (outer, inner):
        assert "WARNING ssogen: disk almost full" in log.read_text(), log
    assert "summary of the inner command" not in outer.read_text()


def test_generate_gives_vllms_logger_back_as_it_found_it(tiny_model: Path, tmp_path: Path) -> None:
    """End to end, in a fresh process where vLLM configures its logger inside the command (the user asked for it
    with VLLM_CONFIGURE_LOGGING=1): after `generate` the logger's handlers, level and propagation are those of
    before (vLLM's stream handler used to stay, so each of its later lines also went to stdout)."""
    script = f"""
import json, logging
from typer.testing import CliRunner
from ssogen.cli import app
vllm_logger = logging.getLogger("vllm")
def state():
    return [[repr(h) for h in vllm_logger.handlers], vllm_logger.propagate, vllm_logger.level]
before = state()
result = CliRunner().invoke(app, ["generate", "--model", {str(tiny_model)!r}, "--out", {str(tmp_path / "run")!r},
                                  "--max-tokens", "8", "--keep-truncated", "--limit", "1"])
print(json.dumps({{"exit": result.exit_code, "before": before, "after": state()}}))
"""
    env = {**os.environ, "VLLM_CONFIGURE_LOGGING": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["exit"] == 0
    assert seen["after"] == seen["before"] == [[], True, logging.NOTSET]
