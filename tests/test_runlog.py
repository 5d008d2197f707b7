"""The command log (`ssogen.runlog`): everything reaches the file, warnings also reach the terminal once each,
secrets never appear, and the process's descriptors and loggers are as before afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from ssogen.errors import UserError
from ssogen.runlog import active_logs, command_log, hide, terminal


def test_library_logging_python_warnings_and_descriptor_writes_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "t.log"
    shown: list[str] = []
    library = logging.getLogger("vllm.engine")
    library_root = logging.getLogger("vllm")
    own = logging.StreamHandler()
    library_root.addHandler(own)  # as vLLM does: its own handler, no propagation
    library_root.propagate = False
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
        assert library_root.handlers == [own] and library_root.propagate is False
        os.write(2, b"")
        assert path.read_text() == text and not active_logs() and terminal() == (None, None)
    finally:
        library_root.removeHandler(own)
        library_root.propagate = True


def test_secrets_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    hide("hf_SECRETvalue123")
    shown: list[str] = []
    try:
        with command_log(path, "push-to-hub", ["ssogen", "push-to-hub", "--token", "hf_SECRETvalue123"],
                         capture_fds=False, import_transformers=False, warn=shown.append):
            logging.getLogger("huggingface_hub").warning("header Bearer hf_SECRETvalue123 refused")
            raise UserError("cannot reach the hub", 1)
    except UserError:
        pass
    text = path.read_text()
    assert "hf_SECRETvalue123" not in text and "--token ***" in text and "Bearer ***" in text
    assert "ERROR ssogen: error (exit 1) after" in text and "cannot reach the hub" in text
    assert shown == ["warning [huggingface_hub]: header Bearer *** refused"]  # the error line is the CLI's


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
