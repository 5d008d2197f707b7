"""A line of text on stdout stays one line in a pipe: rich wrapped plain lines at 80 columns there, so `ssogen
score` printed "configs: triplets \\n64, dpo 63", `push-to-hub` could split its commit URL and `ssogen stats` its
length-ratio line, which a script reading the output (or a person grepping a log) then missed."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import ssogen.cli.common as common
from ssogen.cli import app
from ssogen.testing.folders import make_record, write_dataset


def test_show_keeps_a_text_line_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = Console(file=StringIO(), width=40, color_system=None)
    monkeypatch.setattr(common, "console", narrow)
    line = "pushed 11 files to my-org/sso-qwen-iter1 in one commit: https://huggingface.co/datasets/x/commit/abc"
    common.show(line, highlight=False, markup=False)
    assert narrow.file.getvalue() == line + "\n"  # type: ignore[attr-defined]


def test_stats_lines_are_not_broken_at_80_columns(tmp_path: Path) -> None:
    features = ["Comprehensiveness", "Literariness", "Helpfulness", "Logicality", "Engagement", "Accuracy"]
    out = write_dataset(tmp_path / "a-folder-with-a-rather-long-name-for-its-dataset",
                        [make_record(i, features=features[i % 6:] + features[:i % 6]) for i in range(6)])
    result = CliRunner().invoke(app, ["stats", str(out), "--no-plots", "--no-card"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("duplicate prompts:") and line.endswith("of pairs") for line in lines), lines
    assert any(line.startswith("features (kept rows):") and "Accuracy 6" in line for line in lines), lines


def test_what_stats_wrote_is_one_line_on_stderr_naming_the_whole_folder(tmp_path: Path) -> None:
    """`wrote stats.json in FOLDER` on stderr broke the folder's path at 80 columns (as judge's `wrote` line)."""
    out = write_dataset(tmp_path / ("a-folder-with-a-rather-long-name-" * 3), [make_record(i) for i in range(3)])
    result = CliRunner().invoke(app, ["stats", str(out), "--no-plots", "--no-card"])
    assert result.exit_code == 0, result.output
    assert f"wrote stats.json in {out}" in result.stderr.splitlines()
