"""The tokenized training rows: compact in memory, read once, and collated exactly as plain token lists are."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

from ssogen.dataset.folder import OutputFolder
from ssogen.errors import UserError
from ssogen.records import SSO_TEXT_COLUMNS
from ssogen.testing.synthetic import synthetic_sso_rows, write_synthetic_sso
from ssogen.train.collator import SSOCollator
from ssogen.train.config import TrainConfig
from ssogen.train.data import encode_rows
from ssogen.train.inputs import check_training_inputs, read_sso_rows


def tokenizer_of(model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def test_tokenized_rows_hold_a_few_bytes_per_token(tiny_model: Path) -> None:
    """Python int lists cost ~36 bytes per token (a pointer and an int object) and hold each context twice and y+
    three times; the dataset holds each context and response once, 4 bytes per token."""
    tokenizer = tokenizer_of(tiny_model)
    rows = synthetic_sso_rows(40, response_repeat=10)
    encode_rows(rows[:1], tokenizer, max_length=4096, max_prompt_length=1024)  # the template's one-time caches
    tracemalloc.start()
    try:
        dataset, _, _ = encode_rows(rows, tokenizer, max_length=4096, max_prompt_length=1024)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    tokens = sum(len(sequence) for example in dataset for sequence in example["sequences"])
    assert tokens > 40 * 1000  # long enough rows that per-row bookkeeping does not decide the ratio
    assert held < 3 * tokens, f"{held / tokens:.1f} bytes per sequence token"


def test_collated_batches_are_those_of_plain_token_lists(tiny_model: Path) -> None:
    """Tensors cut from the compact arrays, and the same tokens as lists, give identical batches in both layouts
    (values, dtypes and shapes), with prompt and response cuts in play."""
    tokenizer = tokenizer_of(tiny_model)
    rows = synthetic_sso_rows(6, seed=2, response_repeat=3)
    rows[0]["response_raw"] = ""
    rows[1]["truncated_good"] = True
    dataset, counts, _ = encode_rows(rows, tokenizer, max_length=70, max_prompt_length=45)
    assert counts.prompts and counts.responses and counts.cut_in_data == 1
    examples = list(dataset)
    as_lists = [{**example, "sequences": [s.tolist() for s in example["sequences"]]} for example in examples]
    for packing in (False, True):
        for multiple in (None, 16):
            collator = SSOCollator(pad_token_id=tokenizer.pad_token_id, packing=packing,
                                   pad_to_multiple_of=multiple, line_multiple=multiple)
            got, expected = collator(examples), collator(as_lists)
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_checking_the_inputs_builds_no_python_rows(tiny_model: Path, tmp_path: Path) -> None:
    """The check before training reads the Arrow columns; the rows become Python
    objects once, when they are tokenized. (The peak left is hashing's 1 MiB read blocks.)"""
    data = write_synthetic_sso(tmp_path / "data", count=2000, response_repeat=10)
    text = sum(len(row[c]) for row in read_sso_rows(data) for c in SSO_TEXT_COLUMNS)
    config = TrainConfig(data=data, model=str(tiny_model), out=tmp_path / "out")
    check_training_inputs(config)  # imports and caches once
    tracemalloc.start()
    try:
        check_training_inputs(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < text / 2, f"peak {peak} bytes for {text} characters of text"


@pytest.mark.parametrize("column", ["prompt", "response_bad"])
def test_a_null_text_is_refused_before_training_naming_the_row(tiny_model: Path, tmp_path: Path, column: str) -> None:
    rows = synthetic_sso_rows(3)
    rows[2]["system_good"] = None
    rows[1][column] = None
    data = write_synthetic_sso(tmp_path / "data", count=3, rows=rows)
    with pytest.raises(UserError, match=rf"row 1: column {column} is null$"):
        check_training_inputs(TrainConfig(data=data, model=str(tiny_model), out=tmp_path / "out"))
    with pytest.raises(UserError, match=rf"row 1: column {column} is null$"):
        read_sso_rows(data)


def test_a_text_column_of_another_type_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    schema = pa.schema([(c, pa.int64() if c == "prompt" else pa.string()) for c in SSO_TEXT_COLUMNS])
    row = {c: 1 if c == "prompt" else "text" for c in SSO_TEXT_COLUMNS}
    OutputFolder(tmp_path / "data").write_config("sso", [row], schema)
    with pytest.raises(UserError, match=r"column prompt holds int64, not text$"):
        check_training_inputs(TrainConfig(data=tmp_path / "data", model=str(tiny_model), out=tmp_path / "out"))


class _CountingTokenizer:
    """The tokenizer, with its calls counted by what they tokenize (a text, or a list of texts)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls = {"text": 0, "list": 0}

    def __call__(self, text: Any, **kwargs: Any) -> Any:
        self.calls["list" if isinstance(text, list) else "text"] += 1
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_rows_are_tokenized_a_group_per_call_with_the_ids_of_one_call_per_text(
        tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts that a tokenizer may treat differently (unicode, empty, a special token written as text, very long,
    whitespace) give the ids of one call per text (as score tokenizes), across the groups' boundaries."""
    from ssogen.chat import response_token_ids, sso_context_ids
    from ssogen.train import data
    from ssogen.train.loss import SEQUENCE_PARTS

    monkeypatch.setattr(data, "ROWS_PER_CALL", 3)
    tokenizer = tokenizer_of(tiny_model)
    rows = synthetic_sso_rows(8, seed=3, response_repeat=2)
    rows[0]["response_raw"] = ""
    rows[1]["prompt"] = "héllo wörld — 你好 🙂 ﬁ Ω\n\n\t  spaced  "
    rows[2]["response_good"] = "<|im_end|> a special token as text <|endoftext|>"
    rows[3]["response_bad"] = "long " * 5000 + "end"
    rows[4]["system_good"] = ""
    rows[5]["truncated_bad"] = True
    rows[6]["truncated_raw"], rows[6]["response_raw"] = True, ""  # cut and empty: still ends with the end ids
    rows[7]["response_good"] = "\u200b\u00a0 \r\n"
    counting = _CountingTokenizer(tokenizer)
    dataset, counts, supported = encode_rows(rows, counting, max_length=10**6, max_prompt_length=10**6)
    assert counting.calls["list"] == 3 and counting.calls["text"] <= 2  # 8 rows in groups of 3; the end probes
    assert counts.cut_in_data == 2
    end_ids = data.end_of_turn(tokenizer).ids
    for row, example in zip(rows, dataset, strict=True):
        prompts = sso_context_ids(tokenizer, row["prompt"], row["system_good"], row["system_bad"],
                                  system_supported=supported)
        responses = {name: response_token_ids(tokenizer, row[column], end_ids,
                                              complete=not row.get(f"truncated_{name}", False))
                     for name, column in data.RESPONSES.items()}
        expected = [prompts[context] + responses[response] for context, response in SEQUENCE_PARTS]
        assert [s.tolist() for s in example["sequences"]] == expected
        assert example["response_lengths"] == [len(responses[response]) for _, response in SEQUENCE_PARTS]


# The six (context, response) sequences of a row as SPEC §2.2 lists the reference log-probs, written out here and
# not taken from ssogen.train.loss: a swap there (P3 as y+ over yo, say) must fail this test.
SIX_BY_HAND = [(None, "response_good"), (None, "response_bad"),  # (x, y+), (x, y-)
               ("system_good", "response_good"), ("system_good", "response_bad"),  # (x+, y+), (x+, y-)
               ("system_bad", "response_raw"), ("system_bad", "response_good")]  # (x-, yo), (x-, y+)


def test_each_of_the_six_sequences_is_its_own_context_followed_by_its_own_response(tiny_model: Path) -> None:
    tokenizer = tokenizer_of(tiny_model)
    row = {"id": "r", "prompt": "QUERY text", "system_good": "GOODSYS text", "system_bad": "BADSYS text",
           "response_good": "YPLUS answer", "response_bad": "YMINUS answer", "response_raw": "YO answer",
           "truncated_good": False, "truncated_bad": False, "truncated_raw": False}
    dataset, _, _ = encode_rows([row], tokenizer, max_length=512, max_prompt_length=384)
    example = dataset[0]
    assert len(example["sequences"]) == len(SIX_BY_HAND)
    for sequence, length, (system, response) in zip(example["sequences"], example["response_lengths"],
                                                    SIX_BY_HAND, strict=True):
        ids = sequence.tolist()
        messages = ([{"role": "system", "content": row[system]}] if system else []) + [
            {"role": "user", "content": row["prompt"]}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(ids[:-length]) == prompt, (system, response)
        assert tokenizer.decode(ids[-length:]) == row[response] + "<|im_end|>", (system, response)
