"""The dataset card's loading snippet runs as written, from the folder that holds the dataset (the snippet names the
dataset by its folder's name), also when no row was kept and the pair configs are empty."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssogen.dataset.refresh import refresh
from ssogen.testing.folders import make_record, write_dataset
from tests.dataset.test_stats import hand_records


def loading_snippet(card: str) -> str:
    section = card.split("## Loading", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, section[:500]
    return match.group(1)


def run_snippet(out: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    refresh(out)
    card = (out / "README.md").read_text()
    monkeypatch.chdir(out.parent)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(loading_snippet(card), namespace)  # noqa: S102 - the card's own snippet, as a user pastes it
    return namespace


def test_the_loading_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = write_dataset(tmp_path / "run1", hand_records())
    namespace = run_snippet(out, monkeypatch, tmp_path)
    assert len(namespace["dpo"]) == 3 and len(namespace["triplets"]) == 6
    assert namespace["pairs"]["pair"] == ["P1", "P2", "P3"] * 3  # every SSO pair of the three kept rows


def test_the_loading_snippet_and_the_default_config_work_when_no_row_was_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import load_dataset

    out = write_dataset(tmp_path / "empty", [make_record(0, kept=False, drop_reason="equal_responses"),
                                             make_record(1, kept=False, drop_reason="truncated")])
    namespace = run_snippet(out, monkeypatch, tmp_path)
    assert len(namespace["triplets"]) == 2  # the drop reasons, which is all there is to load
    assert "dpo" not in namespace and "pairs" not in namespace  # an empty config cannot be loaded: not named
    card = (out / "README.md").read_text()
    assert "No row was kept" in card
    default = load_dataset("empty")  # the card's default config: one that has rows
    assert default["train"].num_rows == 2
