"""Ctrl-C and SIGTERM outside the command's own handler: while ssogen starts (one line, exit 130) and once the command
has ended (the exit status is the command's). Each case sends the signal to the process itself at a fixed place,
in a child process run as `python -m ssogen` (see ssogen/cli/process.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app

STARTED = "error: interrupted while ssogen started; nothing was done\n"
KILL = "import os, signal\nos.kill(os.getpid(), signal.{})\n[i for i in range(3)]\n"  # the handler runs here


def _run(setup: str, tmp_path: Path, argv: tuple[str, ...] = ("principles", "list"),
         entry: str = "import runpy; runpy.run_module('ssogen', run_name='__main__', alter_sys=True)",
         ) -> subprocess.CompletedProcess[str]:
    """Run `setup`, then ssogen, as `python -m`: under `-c` or a script Python exits at once on SystemExit, and
    never looks at whether a KeyboardInterrupt went unhandled."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "ssogen_probe.py").write_text(f"import os, signal, sys\nsys.argv = ['ssogen', *{list(argv)!r}]\n"
                                           f"{setup}\n{entry}\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "ssogen_probe"], capture_output=True, text=True, cwd=work,
                          env=env, timeout=60)


def _patched(target: str, attribute: str, kill: str, *, before: bool = True) -> str:
    """Patch `target.attribute` (a method) to run `kill` before (or after) it."""
    module, cls = target.rsplit(".", 1)
    call = "orig(self, *a, **k)"
    body = (f"    exec({kill!r})\n    return {call}\n" if before
            else f"    rv = {call}\n    exec({kill!r})\n    return rv\n")
    return (f"from {module} import {cls}\norig = {cls}.{attribute}\ndef patched(self, *a, **k):\n{body}"
            f"{cls}.{attribute} = patched\n")


@pytest.mark.parametrize("where", [("typer.core.TyperGroup", "parse_args"),  # typer parses the command line
                                   ("typer.core.TyperGroup", "make_context")])
def test_ctrl_c_while_typer_parses_is_one_line_and_exit_130(where: tuple[str, str], tmp_path: Path) -> None:
    """Measured 0.66 s into `principles list`: exit 130 and nothing on stderr (typer's own KeyboardInterrupt
    handler, before the command's)."""
    result = _run(_patched(*where, KILL.format("SIGINT")), tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (130, STARTED, "")


def test_ctrl_c_while_typer_builds_the_commands_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Measured 0.76 s into `principles list`: a 30-line KeyboardInterrupt traceback, killed by SIGINT."""
    setup = ("import typer.main\norig = typer.main.get_group\n"
             f"def patched(*a, **k):\n    exec({KILL.format('SIGINT')!r})\n    return orig(*a, **k)\n"
             "typer.main.get_group = patched\n")
    result = _run(setup, tmp_path)
    assert (result.returncode, result.stderr) == (130, STARTED)


@pytest.mark.parametrize("module", ["ssogen.cli.main", "ssogen.cli.process"])
def test_ctrl_c_in_an_exec_while_ssogen_loads_exits_130(module: str, tmp_path: Path) -> None:
    """Measured 0.12 s in: the line, then the process killed by SIGINT. The KeyboardInterrupt had left an `exec` of
    a string (dataclasses makes methods so), which makes Python end the process by SIGINT whatever its exit."""
    setup = ("class CtrlC:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             f"        if name == {module!r}:\n"
             "            sys.meta_path.remove(self)\n"
             f"            exec({KILL.format('SIGINT')!r})\n"
             "sys.meta_path.insert(0, CtrlC())\n")
    result = _run(setup, tmp_path)
    assert (result.returncode, result.stderr) == (130, STARTED)
    assert list((tmp_path / "work").iterdir()) == []


def test_sigterm_while_ssogen_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """As for Ctrl-C, and as SIGTERM in a command (`iterate` passes it on to a step that may be starting): not a
    silent death by SIGTERM."""
    result = _run(_patched("typer.core.TyperGroup", "parse_args", KILL.format("SIGTERM")), tmp_path)
    assert (result.returncode, result.stderr) == (130, STARTED)


def test_ctrl_c_after_the_command_keeps_its_exit_status(tmp_path: Path) -> None:
    """Measured with the output complete: exit 130 with no line (typer's handler, as the command returned)."""
    result = _run(_patched("ssogen.cli.main.RootGroup", "invoke", KILL.format("SIGINT"), before=False), tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.rstrip().endswith("default.yaml)")


def test_a_second_ctrl_c_after_the_command_still_stops_it(tmp_path: Path) -> None:
    """What stops an exit that hangs (a thread, an exit handler)."""
    twice = KILL.format("SIGINT") * 2
    result = _run(_patched("ssogen.cli.main.RootGroup", "invoke", twice, before=False), tmp_path)
    assert result.returncode in (130, -signal.SIGINT), result.stderr  # typer's exit 130, or Python's


def test_ctrl_c_in_the_interpreters_teardown_keeps_the_exit_status(tmp_path: Path) -> None:
    """Measured with the output complete: the process killed by SIGINT, which Python puts back to its default for
    the teardown of the modules (here, an object freed with `__main__`)."""
    setup = ("class Late:\n"  # the teardown imports nothing
             "    def __del__(self, kill=os.kill, pid=os.getpid(), signum=signal.SIGINT):\n"
             "        kill(pid, signum)\n"
             "        [i for i in range(3)]\n"
             "late = Late()\n")
    result = _run(setup, tmp_path, argv=("principles", "show", "nope", "x"))  # an error: its own exit status
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: nope: no such file")


def test_invoking_the_app_in_process_leaves_the_signal_handlers_alone(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["principles", "list"])
    assert result.exit_code == 0, result.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("standalone", [True, False])
def test_calling_the_app_in_a_script_leaves_its_ctrl_c_alone(standalone: bool) -> None:
    """A script or notebook that runs a command through `app(...)` goes on afterwards: its next Ctrl-C must still
    stop it (the exit-time handling belongs to the `ssogen` process only, `run_command_line`)."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    if standalone:
        with pytest.raises(SystemExit) as stopped:
            app(["principles", "list"])
        assert stopped.value.code == 0
    else:
        app(["principles", "list"], standalone_mode=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
