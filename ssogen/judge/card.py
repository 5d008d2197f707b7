"""The judge section of the dataset card, from OUT/judge.json (empty when the folder was never judged)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JUDGE_FILE = "judge.json"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def judge_card_lines(out: str | Path) -> list[str]:
    """Markdown lines: who judged how many pairs, and the accuracy in each order, agreement and position bias."""
    path = Path(out) / JUDGE_FILE
    try:
        judged = json.loads(path.read_text(encoding="utf-8"))
        m = judged["metrics"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return []
    rows = [
        ("chosen wins when shown first", _pct(m.get("accuracy_chosen_first"))),
        ("chosen wins when shown second", _pct(m.get("accuracy_chosen_second"))),
        ("share of all judgments for chosen", _pct(m.get("share_of_judgments_chosen"))),
        ("chosen wins in both orders (of judged pairs)", _pct(m.get("both_orders_chosen_rate"))),
        ("position bias (same letter in both orders)", _pct(m.get("position_bias_rate"))),
        ("unparseable answers (not counted as either)", f"{m.get('unparseable')} of {m.get('judgments')}"),
    ]
    lines = ["## Judged by a model", "",
             f"`ssogen judge` asked `{judged.get('judge_model')}` to compare chosen and rejected on "
             f"{m.get('pairs_judged')} pairs of the `{judged.get('config')}` config (seeded sample, seed "
             f"{judged.get('seed')}; {m.get('pairs_too_long', 0)} pairs too long for the judge left out), each "
             "pair twice with the two answers' positions swapped. Every answer is in `judge.json`.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return lines
