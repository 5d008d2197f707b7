"""generate for any chat template and any conversational input: sampling stops on the template's end-of-turn
token (recorded in the manifest), the `sso` config says which responses were cut, message lists work under any
--prompt-field with what was left out counted, and empty responses are counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.stats import compute_stats
from ssogen.engine import stop_token_ids_of
from ssogen.errors import UserError
from ssogen.generate.inputs import PromptsRead, read_prompts
from ssogen.generate.summary import summarize
from ssogen.testing.folders import make_record

CONVERSATIONS = [
    {"conversation": [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "How do I boil an egg?"}]},
    {"conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "Name a prime number."}]},
    {"conversation": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "Paris."}]},
    {"conversation": [{"role": "system", "content": "Only a system turn."}]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_any_field_holding_message_lists_gives_the_last_user_turn(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS)
    read = read_prompts(str(path), prompt_field="conversation")
    assert [r.text for r in read.rows] == ["How do I boil an egg?", "Name a prime number.",
                                           "What is the capital of France?"]
    assert read.reduced == {"system_turn": 1, "earlier_turns": 1, "later_turns": 1}
    assert read.skipped == {"no_user_turn": 1}
    # The field named `messages` works like any other (it used to fail with a self-contradicting error).
    renamed = write_jsonl(tmp_path / "messages.jsonl", [{"messages": c["conversation"]} for c in CONVERSATIONS])
    assert [r.text for r in read_prompts(str(renamed), prompt_field="messages").rows] == [r.text for r in read.rows]


def test_a_field_that_holds_neither_text_nor_messages_is_one_clear_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "numbers.jsonl", [{"q": 1}, {"q": [1, 2]}])
    with pytest.raises(UserError, match=r"no usable prompt in 2 rows: 2 'q' is neither text nor a message list "
                                        r"\(lines 1, 2\)$"):
        read_prompts(str(path), prompt_field="q")


def test_stop_ids_include_the_template_turn_end_when_generation_config_lists_only_eos(
        tiny_model_base_eos: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_base_eos)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert GenerationConfig.from_pretrained(tiny_model_base_eos).eos_token_id == [endoftext]
    assert stop_token_ids_of(str(tiny_model_base_eos), tokenizer) == [endoftext, im_end]


def test_generate_on_a_base_eos_model_from_message_lists(tiny_model_base_eos: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", "--model", str(tiny_model_base_eos), "--out", str(out), "--prompts", str(prompts),
        "--prompt-field", "conversation", "--engine", "transformers", "--max-tokens", "8", "--keep-truncated"])
    assert result.exit_code == 0, result.output
    table = " ".join(re.sub("[│┌┐└┘├┤┬┴┼─]", " ", result.stdout).split())  # the summary table, unwrapped
    assert ("system turn dropped: 1 row; multi-turn history dropped: 1 row; turns after it dropped: 1 row"
            in table)
    assert "empty responses y+ / y- / yo 0 / 0 / 0 (rows dropped)" in table
    assert "rows in / skipped 3 / 1: 1 a message list without a user turn (line 4)" in table
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompts"]["conversation_parts_dropped"] == {"system_turn": 1, "earlier_turns": 1,
                                                                 "later_turns": 1}
    assert manifest["summary"]["rows_skipped"] == {"no_user_turn": 1}
    from transformers import AutoTokenizer

    im_end = AutoTokenizer.from_pretrained(tiny_model_base_eos).convert_tokens_to_ids("<|im_end|>")
    assert manifest["end_of_turn"] == {"tokens": ["<|im_end|>"], "ids": [im_end], "source": "chat template"}
    assert im_end in manifest["sampling"]["stop_token_ids"]
    triplets = {r["id"]: r for r in pq.read_table(OutputFolder(out).config_file("triplets")).to_pylist()}
    sso = pq.read_table(OutputFolder(out).config_file("sso")).to_pylist()
    assert sso
    for row in sso:
        for variant in ("good", "bad", "raw"):
            assert row[f"truncated_{variant}"] == (triplets[row["id"]][f"finish_reason_{variant}"] == "length")


def test_a_model_folder_given_with_a_tilde_keeps_its_generation_config_stop_ids(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model=~/m` (no shell expands it there) or `model: ~/m` in a YAML file: the folder was found, but the stop
    ids were read from the unexpanded name, so generation_config's eos ids were silently missing."""
    from transformers import AutoTokenizer, GenerationConfig

    monkeypatch.setenv("HOME", str(tiny_model.parent))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", f"--model=~/{tiny_model.name}", "--out", str(out), "--engine", "transformers",
        "--max-tokens", "4", "--limit", "1", "--keep-truncated"])
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    only_in_generation_config = set(GenerationConfig.from_pretrained(tiny_model).eos_token_id) - {
        tokenizer.eos_token_id}
    stop_ids = json.loads((out / "manifest.json").read_text())["sampling"]["stop_token_ids"]
    assert only_in_generation_config and only_in_generation_config <= set(stop_ids)
    assert stop_ids == stop_token_ids_of(str(tiny_model), tokenizer)


def test_empty_responses_are_counted_in_summary_and_stats() -> None:
    records = [make_record(0, response_bad="", flags=["empty_bad"], kept=False, drop_reason="empty_response"),
               make_record(1, response_good="", response_raw="", flags=["empty_good", "empty_raw"]),
               make_record(2)]
    summary = summarize(records, PromptsRead(source="x", rows=[], input_rows=3, rows_read=3), wall_s=1.0, tokens=0)
    assert summary["empty_responses"] == {"good": 1, "bad": 1, "raw": 1}
    assert compute_stats(records).funnel.empty_responses == {"good": 1, "bad": 1, "raw": 1}
