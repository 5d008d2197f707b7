"""What `ssogen train` prints: a value that rounds to zero reads 0, never -0."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from ssogen.train.config import TrainConfig
from ssogen.train.report import TrainOutcome, print_settings, summary_table


def _text(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_summary_shows_a_small_negative_rounded_to_zero_as_0() -> None:
    # The trainer logs each term rounded to 6 decimals: round(-3e-7, 6) is -0.0, which `:.4g` wrote as -0.
    logged = {"loss": 0.5, "rewards/p1/rejected": -0.0, "rewards/p1/margin": round(-3e-7, 6), "W": -0.25}
    outcome = TrainOutcome(out=Path("o"), steps=1, train_metrics={}, log_history=[logged], reference_reused=False,
                           reference_file="r", reference_loaded_from=None, truncation={})
    shown = _text(summary_table(outcome))
    assert "-0 " not in shown and "-0\n" not in shown and "-0.25" in shown
    assert [line.split("│")[2:4] for line in shown.splitlines() if "rewards/p1/margin" in line] == [
        ["         0 ", "        0 "]]


def test_the_settings_show_zero_given_as_minus_zero_as_zero() -> None:
    config = TrainConfig(data=Path("d"), model="m", out=Path("o"), warmup_ratio=-0.0, alpha=-0.0)
    console = Console(file=io.StringIO(), width=200)
    print_settings(console, config, rows=2, truncation={"prompts_truncated": 0, "responses_truncated": 0,
                                                        "sequences": 12, "rows_affected": 0}, system_supported=True)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "warmup 0," in shown and not re.search(r"(?<![\w-])-0(?![\w.])|-0\.0", shown), shown
