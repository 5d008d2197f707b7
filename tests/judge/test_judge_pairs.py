"""`ssogen judge --config pairs`: P1, P2 and P3 of a seeded sample of queries, judged by a scripted engine that
always prefers y+ (so each kind's accuracy is known), reported over all pairs and for each kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.engine import GenerationRequest
from ssogen.judge.run import JudgeOptions, judge_folder
from ssogen.testing.engines import ScriptedEngine
from ssogen.testing.folders import make_record, write_dataset

RECORDS = [make_record(i) for i in range(6)] + [make_record(6, kept=False, drop_reason="identical_good_bad")]


class PrefersGood(ScriptedEngine):
    """Picks whichever answer is y+ ("good answer N"): P1 and P2 prefer y+, P3 prefers yo over y+."""

    def answer(self, request: GenerationRequest) -> str:
        text = self.tokenizer.decode(request.prompt_token_ids)
        a = text[text.index("### Answer A"):text.index("### Answer B")]
        return "Verdict: A" if "good answer" in a else "Verdict: B"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    from ssogen.dataset.card import write_card

    out = write_dataset(tmp_path / "data", RECORDS)
    write_card(out)
    return out


def _judge(folder: Path, tiny_model: Path, config: str, sample: int = 2) -> tuple[dict[str, Any], PrefersGood]:
    from transformers import AutoTokenizer

    engine = PrefersGood(AutoTokenizer.from_pretrained(tiny_model))
    options = JudgeOptions(judge_model=str(tiny_model), sample=sample, seed=3, config=config)  # type: ignore[arg-type]
    return judge_folder(folder, options, engine=engine), engine


def test_pairs_are_sampled_by_query_and_reported_per_kind(folder: Path, tiny_model: Path) -> None:
    written, engine = _judge(folder, tiny_model, "pairs")
    pairs = written["pairs"]
    # Two queries drawn, each with its three pairs in order; every request named apart (ids repeat per query).
    ids = list(dict.fromkeys(p["id"] for p in pairs))
    assert len(ids) == 2 and [(p["id"], p["pair"]) for p in pairs] == [(i, k) for i in ids for k in ("P1", "P2", "P3")]
    assert len(engine.requests) == 12 and len({r.key for r in engine.requests}) == 12
    m = written["metrics"]
    assert (m["queries"], m["pairs"], m["pairs_judged"], m["judgments"]) == (2, 6, 6, 12)
    by_pair = m["by_pair"]
    assert list(by_pair) == ["P1", "P2", "P3"] and all(k["pairs_judged"] == 2 for k in by_pair.values())
    for kind, accuracy in (("P1", 1.0), ("P2", 1.0), ("P3", 0.0)):
        assert by_pair[kind]["accuracy_chosen_first"] == by_pair[kind]["accuracy_chosen_second"] == accuracy, kind
        assert by_pair[kind]["both_orders_chosen_rate"] == accuracy and by_pair[kind]["position_bias_rate"] == 0.0
    assert m["both_orders_chosen"] == 4 and m["both_orders_chosen_rate"] == pytest.approx(4 / 6)
    assert json.loads((folder / "judge.json").read_text())["metrics"]["by_pair"] == by_pair
    # P2 and P3 are judged under the context they are preferred under: S+ / S- at the top of the request.
    prompts = {r.key: engine.tokenizer.decode(r.prompt_token_ids) for r in engine.requests}
    first = {kind: prompts[f"{ids[0]}:{kind}:chosen_first"] for kind in ("P1", "P2", "P3")}
    assert "be good" in first["P2"] and "be bad" in first["P3"]
    assert not any(s in first["P1"] for s in ("be good", "be bad")) and "be bad" not in first["P2"]
    card = (folder / "README.md").read_text()
    assert "| measure | all | P1 | P2 | P3 |" in card and "The sample is 2 queries" in card
    assert "| chosen wins in both orders (of judged pairs) | 66.7% | 100.0% | 100.0% | 0.0% |" in card
    # The same seed draws the same queries as in dpo, whose judge.json keeps its shape: no kinds, no `pair`.
    dpo, _ = _judge(folder, tiny_model, "dpo")
    assert [p["id"] for p in dpo["pairs"]] == ids
    assert "by_pair" not in dpo["metrics"] and "queries" not in dpo["metrics"]
    assert all("pair" not in p for p in dpo["pairs"])
    assert "| measure | value |" in (folder / "README.md").read_text()


def test_the_judge_sees_the_same_request_whether_the_template_took_a_system_role(tmp_path: Path,
                                                                                  tiny_model: Path) -> None:
    # A policy template without a system role got S+ / S- merged into the user turn, and so do the pairs' prompts.
    prompts = []
    for merged in (False, True):
        out = write_dataset(tmp_path / f"merged-{merged}", RECORDS, system_role_merged=merged)
        _, engine = _judge(out, tiny_model, "pairs", sample=6)
        prompts.append([engine.tokenizer.decode(r.prompt_token_ids) for r in engine.requests])
    assert len(prompts[0]) == 36 and prompts[1] == prompts[0]


def test_the_cli_prints_each_kind_and_an_old_folder_is_told_it_has_no_pairs(
        folder: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from ssogen.engine import launch

    monkeypatch.setattr(launch, "make_engine", lambda *args, **kwargs: PrefersGood(
        AutoTokenizer.from_pretrained(tiny_model)))
    result = CliRunner().invoke(app, ["judge", str(folder), "--judge-model", str(tiny_model), "--config", "pairs",
                                      "--sample", "2"])
    assert result.exit_code == 0, result.output
    assert "on 6 pairs (pairs), 2 queries" in result.output
    both = next(line for line in result.output.splitlines() if "chosen wins in both" in line)
    assert both.split() == ["chosen", "wins", "in", "both", "orders", "66.7%", "100.0%", "100.0%", "0.0%"]
    # Five columns in 80 (CliRunner's width, a pipe's): a label that wrapped left a line of its end alone.
    table = result.output.split("\nwrote judge.json")[0].splitlines()
    assert len(table) == 10 and max(map(len, table)) <= 80  # title, header, rule, seven measures
    # A folder an earlier ssogen wrote: no data/pairs/, four configs in its manifest.
    old = write_dataset(tmp_path / "old", RECORDS, configs={"triplets": 7, "dpo": 6, "sso": 6, "reward": 6})
    shutil.rmtree(old / "data" / "pairs")
    result = CliRunner().invoke(app, ["judge", str(old), "--judge-model", str(tiny_model), "--config", "pairs"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: --config pairs: {old} has no pairs config (an earlier ssogen wrote it, "
                                     "before that config existed); judge its dpo or reward config")
