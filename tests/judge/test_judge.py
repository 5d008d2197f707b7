"""`ssogen judge` end to end: the tiny model judges its own kind of data through vLLM; a scripted engine checks
that each order's verdict is credited to the right answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.engine import GenerationRequest, GenerationResult
from ssogen.judge.run import JudgeOptions, judge_folder
from ssogen.testing.folders import make_record, write_dataset


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    records = [make_record(i) for i in range(6)] + [make_record(6, kept=False, drop_reason="identical_good_bad")]
    out = write_dataset(tmp_path / "data", records)
    from ssogen.dataset.card import write_card

    write_card(out)
    return out


class ScriptedJudge:
    """Always answers with the same text: a judge that only ever looks at the position."""

    name = "scripted"

    def __init__(self, tokenizer: Any, answer: str) -> None:
        self.tokenizer, self.answer, self.max_model_len = tokenizer, answer, 4096
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return [GenerationResult(r.key, self.answer, 3, "stop") for r in requests]


def test_tiny_model_judges_its_own_kind_of_data_through_vllm(folder: Path, tiny_model: Path) -> None:
    result = CliRunner().invoke(app, ["judge", str(folder), "--judge-model", str(tiny_model), "--sample", "4",
                                      "--seed", "1", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    judged = json.loads((folder / "judge.json").read_text())
    m = judged["metrics"]
    assert judged["engine"] == "vllm" and judged["sample"] == 4
    # A local judge is named by its folder and fingerprint: judge.json is published, its path must not be.
    assert (judged["judge_model"], judged["judge_model_origin"]) == (tiny_model.name, "local folder")
    assert str(tiny_model) not in (folder / "judge.json").read_text()
    assert m["pairs"] == m["pairs_judged"] == 4 and m["judgments"] == 8 and len(judged["pairs"]) == 4
    # A random tiny model rambles: whatever it says is either a clear verdict or counted as unparseable.
    parsed = sum(p[o]["verdict"] is not None for p in judged["pairs"] for o in ("chosen_first", "chosen_second"))
    assert m["unparseable"] == 8 - parsed
    assert all(p[o]["answer"] is not None for p in judged["pairs"] for o in ("chosen_first", "chosen_second"))
    card = (folder / "README.md").read_text()
    assert "## Judged by a model" in card and f"`{tiny_model.name}`" in card
    assert "ssogen judge" in result.output or "chosen wins" in result.output
    # The judge engine was shut down on the way out: in-process its torch.distributed group would otherwise stay
    # up and make a later in-process `train` think it runs distributed.
    import torch

    assert not torch.distributed.is_initialized()


def test_each_order_credits_the_answer_in_the_named_position(folder: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    engine = ScriptedJudge(AutoTokenizer.from_pretrained(tiny_model), "Looks better.\nVerdict: A")
    written = judge_folder(folder, JudgeOptions(judge_model=str(tiny_model), sample=3, seed=0), engine=engine)
    m = written["metrics"]
    assert len(engine.requests) == 6 and all(r.temperature == 0.0 for r in engine.requests)
    assert m["accuracy_chosen_first"] == 1.0 and m["accuracy_chosen_second"] == 0.0
    assert m["both_orders_chosen"] == 0 and m["position_bias_rate"] == 1.0 and m["first_position_rate"] == 1.0
    prompts = {r.key: engine.tokenizer.decode(r.prompt_token_ids) for r in engine.requests}
    pair = written["pairs"][0]["id"]
    first, second = prompts[f"{pair}:chosen_first"], prompts[f"{pair}:chosen_second"]
    assert first.index("good answer") < first.index("bad answer")
    assert second.index("bad answer") < second.index("good answer")


def test_unfinished_or_empty_folders_are_refused(tmp_path: Path, tiny_model: Path) -> None:
    out = write_dataset(tmp_path / "partial", [make_record(0)], status="in_progress")
    result = CliRunner().invoke(app, ["judge", str(out), "--judge-model", str(tiny_model)])
    assert result.exit_code == 2 and "the run in this folder is not complete" in result.output
    empty = write_dataset(tmp_path / "empty", [make_record(0, kept=False, drop_reason="identical_good_bad")])
    result = CliRunner().invoke(app, ["judge", str(empty), "--judge-model", str(tiny_model)])
    assert result.exit_code == 2 and "no pairs" in result.output
    result = CliRunner().invoke(app, ["judge", str(empty), "--judge-model", str(tiny_model), "--config", "sso"])
    assert result.exit_code == 2 and "--config" in result.output


def test_an_engine_that_refuses_its_settings_says_why(folder: Path, tiny_model: Path) -> None:
    """vLLM checks its settings with pydantic, whose first line only says "1 validation error for VllmConfig": judge
    printed that, while generate gave the reason. Now judge and score give it too."""
    for args in (["judge", str(folder), "--judge-model", str(tiny_model)], ["score", str(folder), "--model",
                                                                           str(tiny_model)]):
        result = CliRunner().invoke(app, [*args, "--tp", "4"])
        assert result.exit_code == 2, result.output
        assert "must be divisible by tensor parallel size (4)" in result.stderr.strip().splitlines()[-1]


def test_a_context_longer_than_the_model_allows_is_blamed_on_the_flag(folder: Path, tiny_model: Path) -> None:
    # As in generate: not "--judge-model ...: cannot load it", which sends the user to the wrong option.
    for args in (["judge", str(folder), "--judge-model", str(tiny_model)], ["score", str(folder), "--model",
                                                                           str(tiny_model)]):
        result = CliRunner().invoke(app, [*args, "--max-model-len", "100000"])
        assert result.exit_code == 2, result.output
        last = result.stderr.strip().splitlines()[-1]  # judge's check of config.json, or vLLM's reason (score)
        assert re.match(r"error: --max-model-len 100000: (longer than the model's context|User-specified "
                        r"max_model_len \(100000\) is greater)", last), last


def test_dp2_gives_the_answers_of_dp1(folder: Path, tiny_model: Path, tmp_path: Path) -> None:
    # iterate hands the generate config's --dp to judge: the answers must not depend on it (greedy, each request
    # seeded by pair and order, whichever engine of the pool runs it). The transformers engine keeps this cheap.
    import shutil

    answers = []
    for dp in (1, 2):
        copy = shutil.copytree(folder, tmp_path / f"dp{dp}")
        result = CliRunner().invoke(app, ["judge", str(copy), "--judge-model", str(tiny_model), "--sample", "4",
                                          "--max-tokens", "8", "--engine", "transformers", "--dp", str(dp)])
        assert result.exit_code == 0, result.output
        answers.append(json.loads((copy / "judge.json").read_text())["pairs"])
    assert len(answers[0]) == 4 and answers[1] == answers[0]


def test_ctrl_c_says_that_nothing_was_saved(folder: Path, tiny_model: Path) -> None:
    """The sample is judged in one engine call, so a Ctrl-C keeps no answer; the CLI's default line said "finished
    work is kept", as if the rerun went on from somewhere."""
    import signal

    from transformers import AutoTokenizer

    from ssogen.errors import Interrupted, UserError

    class Stopped(ScriptedJudge):
        def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
            raise Interrupted(signal.SIGINT)

    engine = Stopped(AutoTokenizer.from_pretrained(tiny_model), "Verdict: A")
    with pytest.raises(UserError) as stopped:
        judge_folder(folder, JudgeOptions(judge_model=str(tiny_model), sample=3, seed=0), engine=engine)
    assert stopped.value.exit_code == 130
    assert "no judgment was saved (3 pairs are judged in one batch)" in str(stopped.value)
    assert "from the start" in str(stopped.value) and not (folder / "judge.json").exists()
