"""`ssogen score`: log-probs equal transformers' float32 values, the likelihood filter equals a hand computation,
the run resumes from its cache, and the CLI rewrites the configs with drop reasons."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.likelihood import LikelihoodFilterOptions, apply_likelihood_filter, likelihood_filter
from ssogen.dataset.score import ScoreProgress, score_folder
from ssogen.dataset.score_requests import SCORED, build_requests
from ssogen.errors import UserError
from ssogen.records import TripletRecord
from ssogen.testing.folders import damage_pages, make_record, snapshot, write_dataset

# --- the filter: a pure function against a hand computation ----------------------------------------------


def lp_row(n: int, gp: float, gg: float, gb: float, bp: float, bb: float, bg: float, **kw: object) -> TripletRecord:
    """gp = lp(y+|x), gg = lp(y+|x+), gb = lp(y+|x-), bp = lp(y-|x), bb = lp(y-|x-), bg = lp(y-|x+)."""
    return make_record(n, lp_good_plain=gp, lp_good_good=gg, lp_good_bad=gb, lp_bad_plain=bp, lp_bad_bad=bb,
                       lp_bad_good=bg, lp_raw_plain=-1.0, **kw)


# Hand computation:
#   row 0..4 satisfy the ordering; row 5 breaks y+ (gp > gg), row 6 breaks y- (bg > bp).
#   stage 2 means over rows 0..4: gp = (-1 -2 -1 -1.5 -3)/5 = -1.7, bp = (-1 -1 -2 -1.2 -1)/5 = -1.24
#     row 0: -1 >= -1.7, -1 >= -1.24 keep; row 1: -2 < -1.7 drop; row 2: bp -2 < -1.24 drop;
#     row 3: -1.5 >= -1.7, -1.2 >= -1.24 keep; row 4: -3 drop.
#   stage 3 over rows 0, 3: y+ contrast gg - gb: row 0: -0.5 - -3 = 2.5, row 3: -1 - -2 = 1.0, mean 1.75;
#     y- contrast bb - bg: row 0: -0.5 - -2 = 1.5, row 3: -0.2 - -4.2 = 4.0, mean 2.75;
#     row 0: 2.5 > 1.75 but 1.5 < 2.75 drop; row 3: 1.0 < 1.75 drop.   -> with all stages nothing survives,
#   so the test also checks each stage alone and a margin.
HAND_ROWS = [
    lp_row(0, gp=-1.0, gg=-0.5, gb=-3.0, bp=-1.0, bb=-0.5, bg=-2.0),
    lp_row(1, gp=-2.0, gg=-1.0, gb=-3.0, bp=-1.0, bb=-0.5, bg=-2.0),
    lp_row(2, gp=-1.0, gg=-0.5, gb=-2.0, bp=-2.0, bb=-1.0, bg=-3.0),
    lp_row(3, gp=-1.5, gg=-1.0, gb=-2.0, bp=-1.2, bb=-0.2, bg=-4.2),
    lp_row(4, gp=-3.0, gg=-2.0, gb=-4.0, bp=-1.0, bb=-0.9, bg=-1.1),
    lp_row(5, gp=-0.5, gg=-1.0, gb=-3.0, bp=-1.0, bb=-0.5, bg=-2.0),
    lp_row(6, gp=-1.0, gg=-0.5, gb=-3.0, bp=-1.0, bb=-0.5, bg=-0.8),
]


def test_filter_all_stages_hand_computation() -> None:
    assert likelihood_filter(HAND_ROWS) == [
        "likelihood:contrast", "likelihood:off_policy", "likelihood:off_policy", "likelihood:contrast",
        "likelihood:off_policy", "likelihood:ordering", "likelihood:ordering"]


def test_filter_stages_alone_and_margins() -> None:
    ordering_only = LikelihoodFilterOptions(on_policy=False, contrast=False)
    assert [r is None for r in likelihood_filter(HAND_ROWS, ordering_only)] == [True] * 5 + [False] * 2
    with_margin = LikelihoodFilterOptions(ordering_margin=0.45, on_policy=False, contrast=False)
    # margin 0.45: rows 0..4 have every step > 0.45 except row 4 (bb - bp = 0.1, bp - bg = 0.1).
    assert [r is None for r in likelihood_filter(HAND_ROWS, with_margin)] == [True] * 4 + [False] * 3
    # ordering + contrast without the on-policy stage: means over rows 0..4 of gg - gb = (2.5 2 1.5 1 2) -> 1.8,
    # bb - bg = (1.5 1.5 2 4 0.2) -> 1.84; with contrast margin -0.5 the thresholds are 1.3 and 1.34:
    # row 0: 2.5, 1.5 keep; row 1: 2, 1.5 keep; row 2: 1.5, 2 keep; row 3: 1 < 1.3 drop; row 4: 0.2 < 1.34 drop.
    no_policy = LikelihoodFilterOptions(on_policy=False, contrast_margin=-0.5)
    assert likelihood_filter(HAND_ROWS, no_policy) == [
        None, None, None, "likelihood:contrast", "likelihood:contrast", "likelihood:ordering",
        "likelihood:ordering"]
    # on-policy with margin: means over rows 0..4 are -1.7 and -1.24; margin 0.5 -> need gp >= -1.2 and
    # bp >= -0.74: no row has bp >= -0.74.
    assert [r for r in likelihood_filter(HAND_ROWS, LikelihoodFilterOptions(on_policy_margin=0.5))][:5] == [
        "likelihood:off_policy"] * 5


def test_filter_keeps_rows_a_hand_computation_keeps() -> None:
    # Four ordered rows where the stages leave exactly one: means gp (-1 -1 -2 -2)/4 = -1.5, bp (-1 -1 -1 -3)/4
    # = -1.5 -> rows 0, 1 on-policy; contrasts over rows 0, 1: y+ 3, 1 (mean 2), y- 3, 1 (mean 2) -> row 0 only.
    rows = [lp_row(0, gp=-1, gg=0, gb=-3, bp=-1, bb=0, bg=-3),
            lp_row(1, gp=-1, gg=-0.5, gb=-1.5, bp=-1, bb=-0.5, bg=-1.5),
            lp_row(2, gp=-2, gg=-1, gb=-3, bp=-1, bb=0, bg=-2),
            lp_row(3, gp=-2, gg=-1, gb=-3, bp=-3, bb=-2, bg=-4)]
    assert likelihood_filter(rows) == [None, "likelihood:contrast", "likelihood:off_policy",
                                       "likelihood:off_policy"]


def test_ordering_is_strict_and_on_policy_keeps_rows_at_the_mean() -> None:
    # Ordering is strict (">"): row 1 has lp(y+|x+) == lp(y+|x) and fails it; the rest pass.
    # On-policy keeps rows "at or above" the mean: over rows 0, 2, 3 lp(y+|x) = -1, -2, -3 (mean -2) and
    # lp(y-|x) = -1, -2, -3 (mean -2), so row 2, exactly at both means, stays; row 3 goes.
    rows = [lp_row(0, gp=-1, gg=0, gb=-3, bp=-1, bb=0, bg=-3),
            lp_row(1, gp=-1, gg=-1, gb=-3, bp=-1, bb=0, bg=-3),
            lp_row(2, gp=-2, gg=-1, gb=-4, bp=-2, bb=-1, bg=-4),
            lp_row(3, gp=-3, gg=-2, gb=-5, bp=-3, bb=-2, bg=-5)]
    assert likelihood_filter(rows, LikelihoodFilterOptions(contrast=False)) == [
        None, "likelihood:ordering", None, "likelihood:off_policy"]


def test_contrast_means_are_over_the_rows_that_passed_the_earlier_stages() -> None:
    # Rows 0, 1 pass ordering; row 2 fails it (gp > gg) but has huge contrasts. y+ contrasts gg - gb:
    # rows 0, 1: 3 and 1 (mean 2); with row 2 (contrast 20) the mean would be 8 and row 0 would go too.
    # y- contrasts bb - bg: 3 and 1 (mean 2); row 2: 20. Survivors' means keep row 0 only.
    rows = [lp_row(0, gp=-1, gg=0, gb=-3, bp=-1, bb=0, bg=-3),
            lp_row(1, gp=-1, gg=-0.5, gb=-1.5, bp=-1, bb=-0.5, bg=-1.5),
            lp_row(2, gp=0, gg=-1, gb=-21, bp=-1, bb=0, bg=-20)]
    assert likelihood_filter(rows, LikelihoodFilterOptions(on_policy=False)) == [
        None, "likelihood:contrast", "likelihood:ordering"]


def test_apply_rejudges_likelihood_drops_and_keeps_other_drops() -> None:
    rows = [
        HAND_ROWS[0].model_copy(update={"kept": False, "drop_reason": "likelihood:contrast"}),
        HAND_ROWS[5],
        HAND_ROWS[1].model_copy(update={"kept": False, "drop_reason": "equal_responses"}),
        make_record(9),  # kept by the cheap filters but never scored
    ]
    out = apply_likelihood_filter(rows, LikelihoodFilterOptions(on_policy=False, contrast=False))
    assert [(r.kept, r.drop_reason) for r in out] == [
        (True, None), (False, "likelihood:ordering"), (False, "equal_responses"), (False, "likelihood:unscored")]


# --- scoring on the tiny model ---------------------------------------------------------------------------

SYSTEM_GOOD = "You are an assistant whose response must be Helpful and Accurate. Answer with care."
SYSTEM_BAD = "You are an assistant whose response must be Unhelpful and Inaccurate. Answer carelessly."


def tiny_rows() -> list[TripletRecord]:
    texts = [("How do I boil an egg?", "Put it in boiling water for nine minutes.", "Eggs are round.",
              "Boil water, add the egg, wait."),
             ("Name a prime number.", "Seven is prime.", "Four, probably.", "Two."),
             ("Write one line of Python.", "print('hello world')", "def", "x = 1 + 2"),
             ("What is the capital of France?", "Paris.", "Berlin, I think.", "It is Paris."),
             ("Explain rain briefly.", "Water vapour condenses and falls.", "Rain is sad.", "Clouds drop water.")]
    rows = [make_record(i, q, system_good=SYSTEM_GOOD, system_bad=SYSTEM_BAD, response_good=g, response_bad=b,
                        response_raw=o) for i, (q, g, b, o) in enumerate(texts)]
    rows.append(make_record(5, "dropped early", response_good="same", response_bad="same", kept=False,
                            drop_reason="equal_responses"))
    return rows


def reference_logprobs(model_dir: Path, records: list[TripletRecord]) -> dict[str, dict[str, float]]:
    """Independent float32 transformers computation: one unpadded forward per sequence, full log-softmax."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssogen.chat import context_messages, render_prompt, supports_system_role

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    system_ok = supports_system_role(tokenizer)
    result: dict[str, dict[str, float]] = {}
    for record in records:
        systems = {"plain": None, "good": record.system_good, "bad": record.system_bad}
        result[record.id] = {}
        for name, context, response in SCORED:
            prompt = render_prompt(tokenizer, context_messages(record.prompt, systems[context]),
                                   system_supported=system_ok)
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r = tokenizer(getattr(record, f"response_{response}"), add_special_tokens=False)["input_ids"]
            if getattr(record, f"finish_reason_{response}") != "length":  # complete: the ChatML turn end follows
                r = [*r, tokenizer.convert_tokens_to_ids("<|im_end|>")]
            with torch.no_grad():
                logits = model(torch.tensor([p + r])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            result[record.id][name] = float(sum(logp[len(p) + j - 1, t] for j, t in enumerate(r)) / len(r))
    return result


def max_diff(records: list[TripletRecord], reference: dict[str, dict[str, float]]) -> float:
    diffs = [abs(getattr(r, name) - reference[r.id][name]) for r in records if r.id in reference
             for name, _, _ in SCORED]
    assert len(diffs) == len(reference) * len(SCORED)
    return max(diffs)


def test_requests_group_each_context(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    requests = build_requests(tiny_rows()[0], tokenizer, system_supported=True)
    contexts = [context for _, context, _ in SCORED]
    assert contexts == sorted(contexts, key=["plain", "good", "bad"].index)  # each context's requests adjacent
    assert [r.prompt_ids for r in requests[:3]] == [requests[0].prompt_ids] * 3
    assert all(r.response_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for r in requests)


def test_complete_responses_end_with_the_turn_end_and_cut_ones_with_nothing(tiny_model_base_eos: Path,
                                                                             tmp_path: Path) -> None:
    """eos (<|endoftext|>) is not where a ChatML answer stops: <|im_end|> follows complete responses only."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_base_eos)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    record = tiny_rows()[0].model_copy(update={"finish_reason_bad": "length"})
    for request, (_, _, response) in zip(build_requests(record, tokenizer, system_supported=True), SCORED,
                                         strict=True):
        text_ids = tokenizer(getattr(record, f"response_{response}"), add_special_tokens=False)["input_ids"]
        assert request.response_ids == (text_ids if response == "bad" else [*text_ids, im_end])
    rows = tiny_rows()[:3]
    rows[1] = rows[1].model_copy(update={"finish_reason_good": "length", "finish_reason_raw": "length"})
    out = write_dataset(tmp_path / "out", rows)
    score_folder(out, str(tiny_model_base_eos), engine="transformers")
    records = OutputFolder(out).read_triplets()
    assert max_diff(records, reference_logprobs(tiny_model_base_eos, records)) < 1e-4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["score"]["end_of_turn"] == {"tokens": ["<|im_end|>"], "ids": [im_end], "source": "chat template"}


def test_vllm_scores_equal_transformers_float32(tiny_model: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows())
    report = score_folder(out, str(tiny_model), engine="vllm")
    assert (report.rows, report.scored_now, report.from_cache, report.too_long) == (5, 5, 0, 0)
    records = OutputFolder(out).read_triplets()
    kept = [r for r in records if r.kept]
    assert max_diff(kept, reference_logprobs(tiny_model, kept)) < 1e-3
    assert records[5].lp_good_plain is None  # rows the cheap filters dropped are not scored
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["score"]["engine"] == "vllm" and manifest["score"]["rows_scored"] == 5
    assert manifest["score"]["engine_settings"]["dtype"] == "float32"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["scoring"]["scored_rows"] == 5
    assert "plots/on_policy.png" in stats["plots"]
    card = (out / "README.md").read_text()
    assert "Scoring (`ssogen score`)" in card and "| engine | vllm |" in card


def test_transformers_engine_resumes_from_cache(tiny_model: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows())
    calls: list[int] = []

    def interrupt_after_first_chunk(update: ScoreProgress) -> None:
        calls.append(update.rows_done)
        if update.rows_done:  # the first call comes before the engine loads, with the cached rows (none yet)
            raise KeyboardInterrupt

    with pytest.raises(UserError) as info:
        score_folder(out, str(tiny_model), engine="transformers", chunk_rows=2,
                     progress=interrupt_after_first_chunk)
    assert info.value.exit_code == 130 and calls == [0, 2]
    assert OutputFolder(out).read_triplets()[0].lp_good_plain is None  # configs untouched until the run completes

    report = score_folder(out, str(tiny_model), engine="transformers", chunk_rows=2)
    assert (report.from_cache, report.scored_now) == (2, 3)
    records = [r for r in OutputFolder(out).read_triplets() if r.kept]
    assert max_diff(records, reference_logprobs(tiny_model, records)) < 1e-4

    again = score_folder(out, str(tiny_model), engine="transformers", chunk_rows=2)
    assert (again.from_cache, again.scored_now) == (5, 0)


def test_a_fully_cached_folder_loads_no_engine(tiny_model: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ssogen.engine import launch

    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    first = score_folder(out, str(tiny_model), engine="transformers")

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("an engine was loaded although every row was in the cache")

    monkeypatch.setattr(launch, "make_scorer", no_engine)
    again = score_folder(out, str(tiny_model), engine="vllm")  # the cache does not depend on the engine
    assert (again.from_cache, again.scored_now) == (first.rows, 0)
    # The manifest names the engine that made the scores, beside its settings, not the flag of this run.
    score = json.loads((out / "manifest.json").read_text())["score"]
    assert score["engine"] == "transformers" and score["engine_settings"]["device"] == "cpu"


def test_a_score_stopped_while_rewriting_the_data_leaves_the_folder_marked_unfinished(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssogen.dataset.publishable import check_publishable
    from ssogen.train.inputs import sso_files

    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    from ssogen.dataset import folder as folder_module

    write_file = folder_module.write_parquet_pieces_atomic

    def stop_after_triplets(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.parent.name != "triplets":
            raise KeyboardInterrupt  # as a kill between two of the files
        return write_file(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "write_parquet_pieces_atomic", stop_after_triplets)
    keep_all = LikelihoodFilterOptions(ordering=False, on_policy=False, contrast=False)
    with pytest.raises(KeyboardInterrupt):
        score_folder(out, str(tiny_model), engine="transformers", filter_options=keep_all)
    assert OutputFolder(out).read_manifest()["status"] == "in_progress"
    with pytest.raises(UserError, match="not complete"):
        check_publishable(out)
    with pytest.raises(UserError, match="not complete"):
        sso_files(out)
    monkeypatch.setattr(folder_module, "write_parquet_pieces_atomic", write_file)
    # The rerun, even without --filter, finishes the filter begun (triplets already hold its drops): the manifest
    # named no filter.
    score_folder(out, str(tiny_model), engine="transformers")
    manifest = OutputFolder(out).read_manifest()
    assert manifest["status"] == "complete" and "rewriting" not in manifest and "rewriting_with" not in manifest
    assert manifest["score"]["filter"] == keep_all.model_dump()
    assert check_publishable(out)["dpo"] == 3


def test_a_rerun_scores_again_rows_a_larger_max_model_len_fits_or_of_another_dtype(tiny_model: Path,
                                                                                     tmp_path: Path) -> None:
    from ssogen.engine.options import EngineOptions

    rows = [make_record(i, f"question number {i} " * (30 if i == 0 else 1)) for i in range(3)]
    out = write_dataset(tmp_path / "out", rows)
    short = score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(max_model_len=80))
    assert (short.scored_now, short.too_long) == (3, 1)
    again = score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(max_model_len=80))
    assert (again.from_cache, again.scored_now, again.too_long) == (3, 0, 1)  # the same limit: nothing to retry
    longer = score_folder(out, str(tiny_model), engine="transformers")  # the model's own limit
    assert (longer.from_cache, longer.scored_now, longer.too_long) == (2, 1, 0)
    assert OutputFolder(out).read_triplets()[0].lp_good_plain is not None
    # Another --dtype scores every row again: one filter never mixes float32 and bfloat16 scores.
    other = score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(dtype="bfloat16"))
    assert (other.from_cache, other.scored_now) == (0, 3)
    assert score_folder(out, str(tiny_model), engine="transformers",
                        engine_options=EngineOptions(dtype="bfloat16")).from_cache == 3


def test_template_without_system_role(tiny_model_no_system: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows()[:2], system_role_merged=True)
    score_folder(out, str(tiny_model_no_system), engine="transformers")
    records = OutputFolder(out).read_triplets()
    assert max_diff(records, reference_logprobs(tiny_model_no_system, records)) < 1e-4
    assert records[0].lp_good_good != records[0].lp_good_plain  # the merged system text changes the context
    # The rewritten `pairs` config keeps S+ / S- in the user turn, as the policy got them.
    prompts = OutputFolder(out).read_config("pairs").column("prompt").to_pylist()
    assert {m["role"] for prompt in prompts for m in prompt} == {"user"}
    assert prompts[1][0]["content"].startswith(records[0].system_good)


def test_cli_filter_records_reasons(tiny_model: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows())
    result = CliRunner().invoke(app, ["score", str(out), "--model", str(tiny_model), "--engine", "transformers",
                                      "--filter", "likelihood", "--no-contrast", "--no-on-policy"])
    assert result.exit_code == 0, result.output
    records = OutputFolder(out).read_triplets()
    scored = records[:5]
    expected = likelihood_filter(scored, LikelihoodFilterOptions(on_policy=False, contrast=False))
    assert [r.drop_reason for r in scored] == expected
    assert records[5].drop_reason == "equal_responses"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["score"]["filter"]["contrast"] is False
    assert manifest["score"]["configs"]["dpo"] == sum(r is None for r in expected)
    assert manifest["configs"] == manifest["score"]["configs"]  # the top-level counts follow the data files
    # Again without --filter, every row from the cache: the earlier filter still shapes the data, and the engine
    # settings are those of the run that scored the rows (they were null).
    result = CliRunner().invoke(app, ["score", str(out), "--model", str(tiny_model), "--engine", "transformers"])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "manifest.json").read_text())
    assert [r.drop_reason for r in OutputFolder(out).read_triplets()[:5]] == expected
    assert again["score"]["filter"] == manifest["score"]["filter"]
    assert again["score"]["engine_settings"] == manifest["score"]["engine_settings"] == {
        "dtype": "float32", "max_model_len": 4096, "device": "cpu"}
    # Turning the filter's stages off again restores every scored row.
    result = CliRunner().invoke(app, ["score", str(out), "--model", str(tiny_model), "--engine", "transformers",
                                      "--filter", "likelihood", "--no-ordering", "--no-contrast",
                                      "--no-on-policy"])
    assert result.exit_code == 0, result.output
    assert all(r.kept for r in OutputFolder(out).read_triplets()[:5])


def test_bad_input_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(tmp_path), "--model", str(tiny_model), "--engine", "transformers"])
    assert result.exit_code == 2 and "not an ssogen output folder" in result.stderr
    result = runner.invoke(app, ["score", str(tmp_path), "--model", str(tiny_model), "--engine", "onnx"])
    assert result.exit_code == 2 and "--engine" in result.stderr
    out = write_dataset(tmp_path / "out", tiny_rows()[:1])
    result = runner.invoke(app, ["score", str(out), "--model", str(tmp_path / "missing-model"),
                                 "--engine", "transformers"])
    assert result.exit_code == 2 and "--model" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_damaged_page_is_one_line_before_anything_is_written(tiny_model: Path, tmp_path: Path) -> None:
    """A triplets file (here of the test split) whose footer reads but whose pages do not decode: score failed once
    it had opened its log (which stays in a folder ssogen had marked before), with Arrow's message on three lines."""
    out = write_dataset(tmp_path / "out", tiny_rows())
    folder = OutputFolder(out)
    folder.write_config("triplets", folder.read_config("triplets").slice(0, 1), split="test")
    with folder.claim("ssogen generate"):  # marked, as generate leaves its folder
        damage_pages(file := folder.config_file("triplets", "test"))
    before = snapshot(out)
    result = CliRunner().invoke(app, ["score", str(out), "--model", str(tiny_model), "--engine", "transformers"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {file}: corrupt parquet file (") and line.isprintable(), line
    assert snapshot(out) == before  # no lock, no marker, no log


def test_cli_shows_rate_and_time_left_and_logs(tiny_model: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows())
    result = CliRunner().invoke(app, ["score", str(out), "--model", str(tiny_model), "--engine", "transformers",
                                      "--chunk-rows", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"score .* 5/5 rows [\d.]+ rows/s, 0 s left", result.stderr), result.stderr  # the bar: stderr
    assert "rows/s" not in result.stdout and "scored 5 rows (0 from the cache" in result.stdout
    (log,) = (out / "logs").glob("score-*.log")
    assert len(re.findall(r"INFO ssogen.score: \d of 5 rows scored: [\d.]+ rows/s", log.read_text())) == 3


def test_a_fully_scored_folder_is_found_without_torch_or_transformers(tiny_model: Path, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    score_folder(out, str(tiny_model), engine="transformers")
    probe = ("import sys\nfrom ssogen.dataset.score import score_folder\n"
             f"report = score_folder({str(out)!r}, {str(tiny_model)!r})\n"
             "print(report.from_cache, report.scored_now, [m for m in ('torch', 'transformers', 'vllm') "
             "if m in sys.modules])\n")
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    # Found by the model's files alone: neither the tokenizer nor any engine was loaded, so it takes a second or two.
    assert again.stdout.split("\n")[-2] == "3 0 []"
    # Changed weights are another model: the tokenizer path decides, and nothing is reused.
    weights = tmp_path / "changed"
    shutil.copytree(tiny_model, weights)
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[:-4] + bytes(4))
    assert score_folder(out, str(weights), engine="transformers").scored_now == 3


def test_a_test_split_keeps_its_queries_through_scoring(tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.dataset.splits import SplitSpec

    records = tiny_rows()
    out = write_dataset(tmp_path / "out", records, split={"test_size": 0.4, "seed": 1, "by": "prompt text"})
    folder = OutputFolder(out)
    folder.write_configs(records, SplitSpec(test_size=0.4, seed=1))
    def ids() -> dict[str, list[str]]:
        return {split: folder.read_config("triplets", split=split).column("id").to_pylist()
                for split in ("train", "test")}

    before = ids()
    score_folder(out, str(tiny_model), engine="transformers", filter_options=LikelihoodFilterOptions())
    assert ids() == before and before["test"]


def test_a_score_run_hashes_the_model_once(tiny_model: Path, tmp_path: Path, weight_hashes: list[Path]) -> None:
    """The cache lookup, the cache key and the manifest's entry hashed the model's files each (two or three reads of
    the weights per run): once now, in a first run and in a rerun from the cache."""
    from ssogen import fingerprint

    hashed = weight_hashes
    out = write_dataset(tmp_path / "out", tiny_rows()[:2])
    first = score_folder(out, str(tiny_model), engine="transformers")
    assert first.scored_now == 2 and len(hashed) == 1
    again = score_folder(out, str(tiny_model), engine="transformers")
    assert again.from_cache == 2 and len(hashed) == 2
    assert json.loads((out / "manifest.json").read_text())["score"]["model_fingerprint"] == \
        fingerprint.folder_fingerprint(tiny_model)
