"""Fast parts of `ssogen generate` without an engine: inputs, config precedence, selection, filters,
the engine settings, and the one-line errors of the CLI (the shard store's tests are in tests/dataset)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.engine.options import DEFAULT_CPU_KV_CACHE_BYTES, EngineOptions
from ssogen.engine.seeds import derive_seed
from ssogen.engine.vllm_llm import vllm_llm_kwargs
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig, resolve_config
from ssogen.generate.filters import apply_filters, leaked_prefix_pattern
from ssogen.generate.inputs import read_prompts
from ssogen.generate.skips import skip_report
from ssogen.generate.steps.principle_writing import parse_principle_json
from ssogen.generate.steps.selection import finish_selection, guided_regex, parse_feature_names
from ssogen.principles import load_library
from ssogen.testing.tiny_model import copy_without_chat_template

LIBRARY = load_library("default").library
runner = CliRunner()


# -- inputs
def test_reads_jsonl_json_csv_parquet_and_datasets_folder(tmp_path: Path) -> None:
    import datasets

    rows = [{"prompt": "a"}, {"prompt": "b"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "p.csv").write_text("prompt\na\nb\n")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("p.jsonl", "p.json", "p.csv", "p.parquet", "saved"):
        read = read_prompts(str(tmp_path / name))
        assert [(r.position, r.text) for r in read.rows] == [(0, "a"), (1, "b")], name
        # What the manifest says of the input: a file's name and sha256, a folder's name, no path.
        assert read.public == ({"source": "saved", "origin": "local folder"} if name == "saved" else {
            "source": name, "origin": "local file",
            "sha256": hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()}), name
    # --split names a split; none of these has any, so another one was silently read as all the rows
    with pytest.raises(UserError, match=r"^--split test: .*saved holds one dataset, which has no splits$"):
        read_prompts(str(tmp_path / "saved"), split="test")
    with pytest.raises(UserError, match=r"^--split test: .*p\.csv is a file, which has no splits"):
        read_prompts(str(tmp_path / "p.csv"), split="test")


@pytest.mark.parametrize(("name", "text"), [("bom.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n'),
                                          ("bom.json", '[{"prompt": "a"}, {"prompt": "b"}]'),
                                          ("bom.csv", "prompt\na\nb\n")])
def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path: Path, name: str, text: str) -> None:
    # Windows tools save UTF-8 with a BOM: json refused the first line, and csv's first column lost its name.
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [r.text for r in read_prompts(str(tmp_path / name)).rows] == ["a", "b"]


@pytest.mark.parametrize(("name", "text", "error"), [
    # An unquoted comma cut the prompt at it, and the rest went to a column without a name.
    ("commas.csv", "prompt,id\n\"Hi, there\",1\nWhat is 2, 3?,2\n",
     r"commas\.csv:3: 3 cells where the header has 2; put a cell that holds a comma or a line break in double quotes"),
    # An unquoted line break made two rows of one prompt, the second without its id.
    ("breaks.tsv", "prompt\tid\nfirst line\nsecond line\t1\n", r"breaks\.tsv:2: 1 cell where the header has 2; "
     "put a cell that holds a tab"),
    # Only the last of two columns of one name was kept.
    ("twice.csv", "prompt,prompt\na,b\n", r"twice\.csv:1: the header names column\(s\) 'prompt' twice"),
])
def test_a_table_row_that_does_not_fit_its_header_is_refused_at_its_line(tmp_path: Path, name: str, text: str,
                                                                         error: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=error):
        read_prompts(str(tmp_path / name))
    # Quoted cells and blank lines are fine, and so are the unnamed empty columns a spreadsheet export adds.
    (tmp_path / "fine.csv").write_text('prompt,id,,\n"Hi, there",1,,\n\n"two\nlines",2,,\n')
    assert [r.text for r in read_prompts(str(tmp_path / "fine.csv")).rows] == ["Hi, there", "two\nlines"]


def test_a_corrupt_parquet_file_is_named_as_pyarrow_names_it(tmp_path: Path) -> None:
    """Parsed from the bytes already read (one read gives the rows and the sha256), the message still names the
    file where pyarrow, reading from memory, says '<Buffer>'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(pa.ArrowInvalid) as direct:
        pq.read_table(path)
    with pytest.raises(UserError) as ours:
        read_prompts(str(path))
    assert str(ours.value) == f"{path}: cannot read parquet ({direct.value})"


def test_prompt_field_messages_blank_and_missing_rows(tmp_path: Path) -> None:
    rows = [{"q": "first"}, {"other": 1}, {"q": "  "},
            {"messages": [{"role": "user", "content": "old"}, {"role": "assistant", "content": "x"},
                          {"role": "user", "content": "last turn"}]}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_prompts(str(path), prompt_field="q")
    assert [(r.position, r.text) for r in read.rows] == [(0, "first"), (3, "last turn")]
    assert read.skipped == {"missing_field": 1, "blank_prompt": 1} and (read.rows_read, read.input_rows) == (4, 4)
    limited = read_prompts(str(path), prompt_field="q", limit=1)
    # --limit stops reading at the first usable row: the rows after it are neither read nor counted as skipped.
    assert [r.text for r in limited.rows] == ["first"] and limited.skipped == {}
    assert (limited.rows_read, limited.input_rows) == (1, 4)
    two = read_prompts(str(path), prompt_field="q", limit=2)
    assert [r.text for r in two.rows] == ["first", "last turn"] and two.rows_read == 4 and two.skipped == {
        "missing_field": 1, "blank_prompt": 1}


def test_skipped_rows_are_named_by_their_file_line_or_their_row(tmp_path: Path) -> None:
    """The summary said `missing_field 1, blank_prompt 1`: which rows, a user could not find. A JSONL or CSV file's
    rows are named by their line (blank lines are no rows: a row's index is not its line), other inputs' by their
    index from 0 (their `position`); the first 3 of each reason, among the rows read."""
    import datasets

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n\n[1, 2]\n\n{"prompt": 42}\n' + '{"prompt": " "}\n' * 4 + '{"other": 1}\n')
    read = read_prompts(str(jsonl))
    assert read.skipped == {"not_an_object": 1, "not_text": 1, "blank_prompt": 4, "missing_field": 1}
    assert (read.places, read.skipped_first) == ("line", {"not_an_object": [3], "not_text": [5],
                                                          "blank_prompt": [6, 7, 8], "missing_field": [10]})
    assert skip_report(read.skipped, read.skipped_first, read.places, "prompt") == (
        "1 not an object (line 3), 1 'prompt' is neither text nor a message list (line 5), 4 blank (lines 6, 7, 8, "
        "…), 1 no 'prompt' value (line 10)")
    assert read_prompts(str(jsonl), limit=1).skipped_first == {}  # --limit: the rows after it are not read
    # The rows used (and so the queries' digest) are those of the same file without the bad rows.
    assert [(r.position, r.text) for r in read.rows] == [(0, "a")]
    # A CSV row is named by the line it starts at: a quoted line break makes a row of two lines; a blank line is no row.
    (tmp_path / "p.csv").write_text('prompt,id\n"two\nlines",1\n\n" \n ",2\n,3\nok,4\n')
    table = read_prompts(str(tmp_path / "p.csv"))
    assert (table.places, table.skipped_first) == ("line", {"blank_prompt": [5, 7]})
    rows = [{"prompt": "a"}, {"prompt": ""}, {"prompt": "b"}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("p.json", "p.parquet", "saved"):
        other = read_prompts(str(tmp_path / name))
        assert (other.places, other.skipped_first) == ("row", {"blank_prompt": [1]}), name
        assert skip_report(other.skipped, other.skipped_first, other.places, "prompt") == "1 blank (row 1)", name
    # No usable row at all: the error names where they are.
    (tmp_path / "bad.jsonl").write_text('\n[1]\n{"q": 4}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl: no usable prompt in 2 rows: 1 not an object \(line 2\), 1 'q' is "
                       r"neither text nor a message list \(line 3\)$"):
        read_prompts(str(tmp_path / "bad.jsonl"), prompt_field="q")


def test_the_summary_names_where_the_skipped_rows_are(tmp_path: Path) -> None:
    from ssogen.cli.generate import _rows_in
    from ssogen.generate.summary import summarize

    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "a"}\n\n[1]\n{"q": "b"}\n{"q": ""}\n')
    summary = summarize([], read_prompts(str(path), prompt_field="q"), wall_s=1.0, tokens=0)
    assert summary["rows_skipped"] == {"not_an_object": 1, "blank_prompt": 1}
    assert summary["rows_skipped_at"] == {"unit": "line", "first": {"not_an_object": [3], "blank_prompt": [5]}}
    assert _rows_in(summary, None, "q") == "2 / 2: 1 not an object (line 3), 1 blank (line 5)"
    # The manifest of a run of an earlier version has the counts alone (its summary is shown when it is finished).
    earlier = {key: value for key, value in summary.items() if key != "rows_skipped_at"}
    assert _rows_in(earlier, None, "q") == "2 / 2: 1 not an object, 1 blank"
    assert _rows_in({**summary, "rows_skipped": {}, "rows_skipped_at": {"unit": "line", "first": {}}}, None,
                    "q") == "2 / 0"


def test_a_turn_given_as_text_parts_is_its_joined_text(tmp_path: Path) -> None:
    def turn(*parts: dict[str, str]) -> dict[str, object]:
        return {"prompt": [{"role": "user", "content": list(parts)}]}

    rows = [turn({"type": "text", "text": "Describe"}, {"type": "text", "text": "a cat."}),
            turn({"type": "text", "text": "What is in"}, {"type": "image_url", "image_url": "x.png"})]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_prompts(str(path))
    assert [r.text for r in read.rows] == ["Describe\na cat."] and read.skipped == {"not_text": 1}


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty file"),
    ('{"text": "x"}\n', "no row has a 'prompt' field"),
    ('{"prompt": " "}\n', "all 1 prompts are blank"),
    ('{"prompt": "ok"}\n{broken\n', r"p.jsonl:2: invalid JSON"),
])
def test_bad_prompt_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_prompts(str(path))


def test_every_prompts_file_type_is_named_in_help_and_in_the_error_for_another(tmp_path: Path) -> None:
    """A .tsv file is read, but neither `generate --help` nor the error for a .txt file named it."""
    path = tmp_path / "queries.txt"
    path.write_text("a question\n")
    with pytest.raises(UserError, match="unsupported file type .txt") as refused:
        read_prompts(str(path))
    help_text = RunConfig.model_fields["prompts"].description or ""
    for suffix in (".jsonl", ".json", ".parquet", ".csv", ".tsv"):
        assert suffix in str(refused.value) and suffix in help_text
    tsv = tmp_path / "queries.tsv"
    tsv.write_text("prompt\tsource\nHow are you?\tme\n")
    assert [r.text for r in read_prompts(str(tsv)).rows] == ["How are you?"]


def test_demo_queries_are_the_default() -> None:
    demo = read_prompts(None)
    assert len(demo.rows) >= 20 and demo.public == {"source": "demo queries", "origin": "bundled"}


# -- config
def test_precedence_defaults_then_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\ntemperature: 0.5\nmax-tokens: 99\n")
    config = resolve_config({"temperature": 0.9, "top_p": None}, path)
    assert (config.temperature, config.max_tokens, config.top_p) == (0.9, 99, 0.8)


def test_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\ntemprature: 0.5\n")
    with pytest.raises(UserError, match="unknown key.*temprature"):
        resolve_config({}, path)
    with pytest.raises(UserError, match="--model is required"):
        resolve_config({"out": "o"})
    with pytest.raises(UserError, match="--top-p"):
        resolve_config({"model": "m", "out": "o", "top_p": 2.0})


def test_fingerprint_ignores_only_what_does_not_change_rows() -> None:
    model = {"weights": "w", "config": "c"}
    base = RunConfig(model="m", out="a").fingerprint("lib", "t", model, "q", "float32")
    # Where and in what memory the rows are computed, and paths whose contents are fingerprinted instead; the
    # field and split giving the queries are in the queries' digest (each usable row's position and text).
    same = RunConfig(model="elsewhere/m", out="b", chunk_size=3, limit=5, dp=2, tp=2, kv_cache_gb=0.5,
                     gpu_memory_utilization=0.5, ray_address="auto", principles="moved.yaml", templates="moved",
                     prompts="moved/queries.jsonl", prompt_field="question", split="test")
    assert same.fingerprint("lib", "t", model, "q", "float32") == base
    # The precision the engine runs at is fingerprinted, not --dtype as typed (`RunPlan.dtype` resolves it).
    assert RunConfig(model="m", out="a", dtype="float").fingerprint("lib", "t", model, "q", "float32") == base
    assert RunConfig(model="m", out="a").fingerprint("lib", "t", model, "q", "bfloat16") != base
    for changed in ({"seed": 1}, {"temperature": 0.5}, {"max_model_len": 512}, {"engine": "transformers"},
                    {"max_tokens": 8}):
        assert RunConfig(model="m", out="a", **changed).fingerprint("lib", "t", model, "q", "float32") != base, \
            changed
    assert RunConfig(model="m", out="a").fingerprint("other library", "t", model, "q", "float32") != base
    assert RunConfig(model="m", out="a").fingerprint("lib", "other templates", model, "q", "float32") != base
    assert RunConfig(model="m", out="a").fingerprint("lib", "t", {**model, "weights": "w2"}, "q", "float32") != base
    assert RunConfig(model="m", out="a").fingerprint("lib", "t", model, "other queries", "float32") != base


# -- engine settings
def test_cpu_settings_for_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu = vllm_llm_kwargs("m", EngineOptions(max_model_len=512), cpu=True)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] is True
    assert cpu["enable_chunked_prefill"] is False and cpu["kv_cache_memory_bytes"] == DEFAULT_CPU_KV_CACHE_BYTES
    assert cpu["max_model_len"] == 512 and cpu["enable_prefix_caching"] is True
    gpu = vllm_llm_kwargs("m", EngineOptions(tensor_parallel_size=2, gpu_memory_utilization=0.5), cpu=False)
    assert "enable_chunked_prefill" not in gpu and gpu["enforce_eager"] is False
    assert (gpu["tensor_parallel_size"], gpu["gpu_memory_utilization"], gpu["dtype"]) == (2, 0.5, "auto")


def test_the_cpu_kv_cache_is_the_flag_else_vllm_s_variable_else_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's CPU build let VLLM_CPU_KVCACHE_SPACE replace --kv-cache-gb without a word (the dry run and the log
    named the flag's size); ssogen now resolves the size itself, in this order."""
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert vllm_llm_kwargs("m", EngineOptions(), cpu=True)["kv_cache_memory_bytes"] == 2 * 2**30
    flag = EngineOptions(kv_cache_memory_bytes=100 * 2**20)
    assert vllm_llm_kwargs("m", flag, cpu=True)["kv_cache_memory_bytes"] == 100 * 2**20
    assert "kv_cache_memory_bytes" not in vllm_llm_kwargs("m", EngineOptions(), cpu=False)  # vLLM's own on GPU
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "0")  # vLLM's "not set"
    assert vllm_llm_kwargs("m", EngineOptions(), cpu=True)["kv_cache_memory_bytes"] == DEFAULT_CPU_KV_CACHE_BYTES
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1.5")
    with pytest.raises(UserError, match=r"^VLLM_CPU_KVCACHE_SPACE='1.5': not a whole number of GiB$"):
        vllm_llm_kwargs("m", EngineOptions(), cpu=True)


def test_the_kv_cache_flag_wins_over_vllm_s_variable_in_a_real_engine(tiny_model: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ssogen.engine.vllm_engine import VLLMEngine

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = VLLMEngine(str(tiny_model), EngineOptions(kv_cache_memory_bytes=128 * 2**20))
    try:
        assert engine.settings["kv_cache_memory_bytes"] == 128 * 2**20
    finally:
        engine.close()
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"  # hidden from vLLM only while it built its config


# -- selection
def test_parse_keeps_library_names_case_insensitively_without_duplicates() -> None:
    answer = " safety, Accuracy,  nonsense , SAFETY\nLogicality ### Helpfulness"
    assert parse_feature_names(answer, LIBRARY) == ["Safety", "Accuracy", "Logicality"]


def test_finish_selection_is_seeded_fills_and_rolls_extras() -> None:
    names = ["Safety", "Accuracy", "Logicality"]
    first = finish_selection(names, LIBRARY, 2, run_seed=0, row_id="r1", extra_prob=None)
    assert first == finish_selection(names, LIBRARY, 2, run_seed=0, row_id="r1", extra_prob=None)
    assert set(first.features) <= set(names) and not first.filled and len(first.features) == 2
    filled = finish_selection(["Safety"], LIBRARY, 3, run_seed=0, row_id="r1", extra_prob=0.0)
    assert filled.filled and "Safety" in filled.features and len(set(filled.features)) == 3 and filled.extra == []
    assert finish_selection([], LIBRARY, 2, run_seed=0, row_id="r1", extra_prob=1.0).extra == ["Concision"]
    orders = {tuple(finish_selection(names, LIBRARY, 3, run_seed=0, row_id=f"r{i}", extra_prob=0).features)
              for i in range(20)}
    assert len(orders) > 1  # the shuffle depends on the row


def test_seeds_depend_on_run_row_and_variant() -> None:
    seeds = {derive_seed(s, r, v) for s in (0, 1) for r in ("a", "b") for v in ("good", "bad", "raw")}
    assert len(seeds) == 12 and derive_seed(0, "a", "good") == derive_seed(0, "a", "good")


def test_guided_regex_accepts_only_names() -> None:
    import re

    pattern = re.compile(guided_regex(LIBRARY, 2))
    assert pattern.fullmatch("Safety, Accuracy") and pattern.fullmatch(" Accuracy, Safety")
    assert not pattern.fullmatch("Safety") and not pattern.fullmatch(", ".join(LIBRARY.feature_names))
    assert not pattern.fullmatch("Safety, Nonsense") and not pattern.fullmatch("Nonsense")


def test_principle_json() -> None:
    assert parse_principle_json('Sure: {"good": "Do A.", "bad": "Do B."} done') == ("Do A.", "Do B.")
    assert parse_principle_json('{"good": "", "bad": "x"}') is None
    assert parse_principle_json("no json") is None
    # Braces inside a string and nested objects used to end the match early: the row fell back to library text.
    assert parse_principle_json('{"good": "Use a {placeholder} for names.", "bad": "Leave names out."}') == (
        "Use a {placeholder} for names.", "Leave names out.")
    assert parse_principle_json('{"feature": {"name": "x"}, "good": "G", "bad": "B"}') == ("G", "B")
    assert parse_principle_json('{"note": 1} then {"good": "G", "bad": "B"}') == ("G", "B")


# -- filters
def test_filters_strip_prefix_and_record_reasons() -> None:
    prefix = leaked_prefix_pattern(LIBRARY)
    stop = {"good": "stop", "bad": "stop", "raw": "stop"}
    outcome = apply_filters({"good": "safe Response: Hi", "bad": "Illogical response:  No", "raw": "Hey"}, stop,
                            prefix=prefix, keep_truncated=False)
    assert outcome.responses == {"good": "Hi", "bad": "No", "raw": "Hey"} and outcome.kept
    assert outcome.flags == ["prefix_stripped_good", "prefix_stripped_bad"]
    same = apply_filters({"good": "A", "bad": "B", "raw": " A "}, stop, prefix=prefix, keep_truncated=False)
    assert (same.kept, same.drop_reason) == (False, "identical_responses")
    cut = {"good": "length", "bad": "stop", "raw": "stop"}
    truncated = apply_filters({"good": "A", "bad": "B", "raw": "C"}, cut, prefix=prefix, keep_truncated=False)
    assert (truncated.kept, truncated.drop_reason, truncated.flags) == (False, "truncated", ["truncated_good"])
    assert apply_filters({"good": "A", "bad": "B", "raw": "C"}, cut, prefix=prefix, keep_truncated=True).kept
    empty = apply_filters({"good": "A", "bad": "  ", "raw": "C"}, stop, prefix=prefix, keep_truncated=True)
    assert (empty.kept, empty.drop_reason) == (False, "empty_response")


# -- CLI: dry run and one-line errors
def test_dry_run_renders_prompts_and_writes_nothing(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--limit", "3",
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Qualities:" in result.output and "You are an assistant whose response must be" in result.output
    assert "3 rows" in result.output and not out.exists() and "not looked up" not in result.output
    # Online, a hub id is not looked up (that would ask the hub): the plan says so rather than looking fine.
    hub = runner.invoke(app, ["generate", "--model", "no-such-org/model", "--out", str(out), "--limit", "1",
                              "--dry-run"], env={"COLUMNS": "200", "HF_HUB_OFFLINE": "0"})
    assert hub.exit_code == 0 and "model no-such-org/model (vllm, a hub id: not looked up by --dry-run)" in hub.output
    # The requests counted: the policy's principle writing too (it was left out).
    plain = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--limit", "3",
                                "--dry-run"], env={"COLUMNS": "300"})
    assert "requests: 3 selection + 9 sampling;" in plain.output
    policy = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--limit", "3",
                                 "--principle-source", "policy", "--dry-run"], env={"COLUMNS": "300"})
    assert "requests: 3 selection + at least 6 principle writing + 9 sampling;" in policy.output


def test_dry_run_names_where_the_skipped_rows_are(tiny_model: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n\n{"prompt": " "}\n{"prompt": "b"}\n')
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--prompts",
                                 str(prompts), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "2 rows (read 3 of 3, skipped: 1 blank (line 3)); chunks of" in " ".join(result.output.split())


def test_dry_run_counts_what_a_resume_keeps_and_clips_a_long_prompt(tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.dataset.folder import OutputFolder
    from ssogen.dataset.shards import ShardStore
    from ssogen.generate.plan import plan_run

    out, prompts = tmp_path / "out", tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in ("long " * 2000, "a", "b")))
    plan = plan_run(RunConfig(model=str(tiny_model), out=str(out), prompts=str(prompts)))
    with OutputFolder(out).claim("ssogen generate"):  # a run stopped with row 0 done and row 1 selected
        store = ShardStore(out)
        store.prepare(plan.fingerprint(), overwrite=False)
        store.append("selection", [{"id": plan.rows[0].id}, {"id": plan.rows[1].id}])
        store.append("rows", [{"id": plan.rows[0].id}])
        store.close()
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--prompts",
                                 str(prompts), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"resumes the run in {out}: 1 of 3 rows done, 1 selection of the others kept" in result.output
    assert "requests: 1 selection + 6 sampling;" in result.output  # was 3 + 9, as if nothing were done
    assert re.search(r"\(\d+ characters left out\)", result.output) and len(result.output) < 20_000


def test_dry_run_of_a_finished_run_says_it_is_finished(tiny_model: Path, tmp_path: Path) -> None:
    """It said `resumes the run in OUT: 2 of 2 rows done, 0 selections of the others kept`."""
    from ssogen.dataset.folder import OutputFolder
    from ssogen.dataset.shards import ShardStore
    from ssogen.generate.plan import plan_run

    out = tmp_path / "out"
    plan = plan_run(RunConfig(model=str(tiny_model), out=str(out), limit=2))
    with OutputFolder(out).claim("ssogen generate"):  # every row done
        store = ShardStore(out)
        store.prepare(plan.fingerprint(), overwrite=False)
        store.append("rows", [{"id": row.id} for row in plan.rows])
        store.close()
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--limit", "2",
                                 "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert (f"the run in {out} is finished: 2 of 2 rows done; nothing to generate (--overwrite generates it again)"
            in result.output)
    assert "resumes" not in result.output and "requests: 0 selection + 0 sampling;" in result.output


def _error_of(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, ["generate", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip()


def test_bad_inputs_give_one_clear_line(tiny_model: Path, tmp_path: Path) -> None:
    base = ["--model", str(tiny_model), "--out", str(tmp_path / "o")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad_library = tmp_path / "lib.yaml"
    bad_library.write_text("name: x\nversion: 1\n")
    bad_config = tmp_path / "run.yaml"
    bad_config.write_text("temprature: 0.5\n")
    no_template = copy_without_chat_template(tiny_model, tmp_path / "no-template")
    cases = [
        (base + ["--prompts", str(tmp_path / "missing.jsonl")], "no such file"),
        (base + ["--prompts", str(empty)], "empty file"),
        (base + ["--principles", str(bad_library)], "invalid library"),
        (["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")], "no such folder"),
        (["--model", str(no_template), "--out", str(tmp_path / "o3")], "no chat template"),
        (base + ["--selection", "maybe"], "--selection"),
        (base + ["--features-per-query", "9"], "only 7 features"),
        (["--out", str(tmp_path / "o")], "--model is required"),
        (base + ["--config", str(bad_config)], "unknown key(s): temprature"),
    ]
    for args, message in cases:
        code, output = _error_of(args)
        assert code == 2 and message in output and len(output.splitlines()) == 1, (args, output)
    # No hub here: the machine, not the input (exit 1, as for a hub model).
    code, output = _error_of(base + ["--prompts", "no-such-org/no-such-dataset"])
    assert code == 1 and "loading it as a hub dataset failed" in output and len(output.splitlines()) == 1, output


def _hub_answers(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """The hub (huggingface_hub's dataset_info) fails with `error`; `datasets` must not be reached after it."""
    import datasets
    from huggingface_hub import HfApi

    def dataset_info(self: object, name: str, **kwargs: object) -> None:
        raise error

    def load_dataset(*args: object, **kwargs: object) -> None:
        raise AssertionError("datasets.load_dataset was called (it retries an unreachable hub for ~25 s)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_a_hub_dataset_the_hub_cannot_give_is_one_line_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError

    failed = "--prompts org/data: no such file, and loading it as a hub dataset failed: "
    _hub_answers(monkeypatch, httpx2.ConnectError("[Errno -2] Name or service not known"))
    with pytest.raises(UserError) as info:
        read_prompts("org/data")
    assert info.value.exit_code == 1 and str(info.value) == (
        f"{failed}the hub cannot be reached (ConnectError: [Errno -2] Name or service not known); check the network "
        "or give a file")
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/datasets/org/data"))
    _hub_answers(monkeypatch, RepositoryNotFoundError("404 Client Error", response=response))
    with pytest.raises(UserError) as info:
        read_prompts("org/data")
    assert info.value.exit_code == 2 and str(info.value) == (
        f"{failed}no such dataset on the hub (a private one needs HF_TOKEN)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        read_prompts("org/data")
    assert info.value.exit_code == 1 and str(info.value).startswith(f"{failed}HF_HUB_OFFLINE is set")


def test_run_warnings_start_above_a_fifth_of_the_sampled_rows() -> None:
    from ssogen.generate.summary import run_warnings
    from ssogen.testing.folders import make_record

    def rows(truncated: int, filled: int) -> list:  # type: ignore[type-arg]
        records = [make_record(i, flags=["truncated_good"] if i < truncated else [], selection_filled=i < filled)
                   for i in range(10)]
        # Rows never sampled (prompt too long) count in neither share.
        return records + [make_record(10 + i, kept=False, drop_reason="prompt_too_long", selection_filled=True,
                                      flags=["truncated_good"]) for i in range(5)]

    assert run_warnings(rows(2, 2), max_tokens=64) == []  # 20%: no warning
    truncated, filled = run_warnings(rows(3, 3), max_tokens=64)
    assert truncated.startswith("3 of 10 rows (30%) have a response cut at --max-tokens 64")
    assert filled.startswith("feature selection fell back to a random pick for 3 of 10 rows (30%)")
    assert run_warnings(rows(0, 3), max_tokens=64) == [filled]
    assert filled.endswith("(try --selection guided or fewer --features-per-query)")
    # A guided run is not told to turn guided selection on.
    guided = [r.model_copy(update={"selection_mode": "guided"}) for r in rows(0, 3)]
    assert run_warnings(guided, max_tokens=64)[0].endswith(
        "(try a larger --selection-max-tokens or fewer --features-per-query)")
    written = [r.model_copy(update={"principle_fallback": i < 3}) for i, r in enumerate(rows(0, 0))]
    assert run_warnings(written, max_tokens=64) == [
        "--principle-source policy: the policy wrote no usable principle text for 3 of 10 rows (30%), so they use "
        "the library's text (try a stronger policy, or --principle-source library)"]


def test_the_next_steps_are_left_out_inside_iterate(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Inside iterate they named commands (`--out DATA-model`) that iterate does not run."""
    from types import SimpleNamespace

    from ssogen.cli.generate import _print_next_steps

    plan = SimpleNamespace(config=SimpleNamespace(out="data", model="m"))
    _print_next_steps(plan, {"configs": {"sso": 3}})
    assert "ssogen train --data data --model m --out data-model" in capsys.readouterr().out
    monkeypatch.setenv("SSOGEN_STEP_OF_ITERATE", "1")
    _print_next_steps(plan, {"configs": {"sso": 3}})
    assert capsys.readouterr().out == ""
