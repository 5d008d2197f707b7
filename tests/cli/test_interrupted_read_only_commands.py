"""Ctrl-C in a command that writes nothing: it said "run the same command again to go on (finished work is
kept)" and printed a "to resume:" line, for commands with no work to keep or go on with."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app


def _ctrl_c(*args: Any, **kw: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(("target", "argv"), [
    ("ssogen.principles.load_library", ["principles", "validate", "default"]),
    ("ssogen.principles.load_library", ["principles", "show", "default", "Safety"]),
    ("ssogen.envinfo.collect_env", ["env"]),
    ("ssogen.generate.plan.plan_run", ["generate", "--model", "m", "--out", "o", "--dry-run"]),
])
def test_an_interrupted_command_that_writes_nothing_says_so_and_offers_no_resume(
        target: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, _ctrl_c)
    monkeypatch.setattr("sys.argv", ["ssogen", *argv])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert "error: interrupted; this command writes nothing, so nothing is lost" in result.stderr, result.stderr
    assert "to resume:" not in result.stderr and "run the same command again" not in result.stderr
    assert list(tmp_path.iterdir()) == []


class _CtrlCOnImport(types.ModuleType):
    """A module whose every name is a Ctrl-C: what the default handler does inside a command's first import."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what inspect and pytest ask of a module
            raise AttributeError(name)
        raise KeyboardInterrupt


@pytest.mark.parametrize(("module", "argv"), [
    ("ssogen.principles", ["principles", "list"]),
    ("ssogen.principles", ["principles", "validate", "default"]),
    ("ssogen.envinfo", ["env"]),
    ("ssogen.generate.plan", ["generate", "--model", "m", "--out", "o", "--dry-run"]),
    ("ssogen.iterate.options", ["iterate", "--model", "m", "--out", "o", "--dry-run"]),
    ("ssogen.dataset.publish", ["push-to-hub", "folder", "--repo-id", "me/data", "--dry-run"]),
])
def test_a_ctrl_c_in_the_first_import_of_a_command_that_writes_nothing_says_so(
        module: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Measured: `principles list` stopped 0.6 s after it started said "run the same command again to go on" and
    "to resume: ssogen principles list": the command said it writes nothing only after its imports."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, _CtrlCOnImport(module))
    if module == "ssogen.dataset.publish":
        import ssogen.dataset

        monkeypatch.setattr(ssogen.dataset, "publish", sys.modules[module], raising=False)
    monkeypatch.setattr("sys.argv", ["ssogen", *argv])
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert "error: interrupted; this command writes nothing, so nothing is lost" in result.stderr, result.stderr
    assert "to resume:" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_generate_that_writes_still_offers_the_resume_line(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ssogen.generate.plan.plan_run", _ctrl_c)
    argv = ["generate", "--model", "m", "--out", "o"]
    monkeypatch.setattr("sys.argv", ["ssogen", *argv])  # what the resume line repeats
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert "run the same command again to go on" in result.stderr
    assert "\nto resume: ssogen generate --model m --out o" in result.stderr


@pytest.mark.parametrize("entry", ["runpy.run_module('ssogen', run_name='__main__')",  # python -m ssogen (iterate)
                                   "from ssogen.cli import app; app()"])  # the console script
def test_ctrl_c_while_ssogen_starts_is_one_line_and_exit_130(entry: str, tmp_path: Path) -> None:
    """A Ctrl-C while the commands load, before the command's handler is set (iterate passes one on to a step that
    has just started), printed a 50-line KeyboardInterrupt traceback and exited 1."""
    import subprocess
    import sys

    # What the default SIGINT handler does in the middle of an import, at a fixed place.
    code = ("import runpy, sys\n"
            "class CtrlC:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ssogen.cli.main': raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "sys.argv = ['ssogen', 'stats', 'data']\n" + entry + "\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "error: interrupted while ssogen started; nothing was done\n"
    assert list(tmp_path.iterdir()) == []
