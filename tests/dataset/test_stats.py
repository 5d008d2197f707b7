"""`ssogen stats`: every number checked against a hand-built dataset with known lengths, duplicates and leaks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset import triplet_files
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.leakage import adjectives_of, find_leaks
from ssogen.dataset.stats import StatsBuilder, compute_stats, folder_stats, summarize
from ssogen.dataset.triplet_files import in_batches
from ssogen.records import TripletRecord
from ssogen.testing.folders import damage_pages, make_record, snapshot, write_dataset

LP = math.log


def hand_records() -> list[TripletRecord]:
    """Three kept rows and three dropped ones. Characters and tokens are set so the sums are easy by hand."""
    ordered = {"lp_good_good": -0.1, "lp_good_bad": -3.0, "lp_bad_bad": -0.2, "lp_bad_good": -4.0}
    return [
        make_record(0, "same question", response_good="Here is a safe plan.",  # 20 chars, leaks 'safe'
                    response_bad="bad answer 0", response_raw="plain",  # 12, 5
                    num_tokens_good=10, num_tokens_bad=5, num_tokens_raw=8,
                    lp_good_plain=LP(0.5), lp_bad_plain=LP(0.25), lp_raw_plain=-1.0, **ordered),
        make_record(1, "same question", extra=["Concision"], response_good="good answer 1",  # 13
                    response_bad="I ignore the guidelines and accuracy.",  # 37, leaks 2 terms
                    response_raw="another plain",  # 13
                    num_tokens_good=20, num_tokens_bad=10, num_tokens_raw=8,
                    # ordering broken: y+ is likelier under x- than under x
                    lp_good_plain=LP(0.2), lp_bad_plain=LP(0.1), lp_good_good=-0.1, lp_good_bad=-0.5,
                    lp_bad_bad=-0.2, lp_bad_good=-4.0, lp_raw_plain=-1.0),
        make_record(2, features=["Helpfulness"], response_good="This is unsafe but useful.",  # 26, no leak
                    response_bad="bad answer 2", response_raw="plain",  # 12, 5 (raw duplicates row 0)
                    num_tokens_good=30, num_tokens_bad=40, num_tokens_raw=8,
                    finish_reason_bad="length", flags=["truncated_bad"],
                    lp_good_plain=LP(0.4), lp_bad_plain=LP(0.3), lp_raw_plain=-1.0, **ordered),
        make_record(3, response_good="same", response_bad="same", kept=False, drop_reason="equal_responses"),
        make_record(4, response_good="same", response_raw="same", kept=False, drop_reason="equal_responses"),
        make_record(5, kept=False, drop_reason="likelihood:ordering", response_good="Safe and sound",
                    lp_good_plain=-0.5, lp_bad_plain=-0.5, lp_good_good=-1.0, lp_good_bad=-0.1,
                    lp_bad_bad=-1.0, lp_bad_good=-0.1, lp_raw_plain=-1.0),
    ]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "out", hand_records())


def test_summary_matches_hand_percentiles() -> None:
    s = summarize([30, 10, 20])
    assert (s.count, s.mean, s.median, s.p90, s.min, s.max) == (3, 20, 20, pytest.approx(28), 10, 30)
    assert summarize([]).mean is None


def test_leak_matching_is_whole_word_and_case_insensitive() -> None:
    terms = ["Safety", "Safe", "guideline"]
    assert find_leaks("Safety first.", terms) == ["safety"]
    assert find_leaks("That is unsafe; nothing is safer.", terms) == []
    assert find_leaks("Per the GUIDELINE, it is SAFE.", terms) == ["safe", "guideline"]


def test_stats_on_hand_built_dataset(dataset: Path) -> None:
    records = hand_records()
    stats = compute_stats(records, adjectives_of(OutputFolder(dataset).library()))

    f = stats.funnel
    assert (f.rows_in, f.kept, f.dropped) == (6, 3, 3)
    assert f.dropped_by_reason == {"equal_responses": 2, "likelihood:ordering": 1}
    assert f.flags == {"truncated_bad": 1}

    tok, chars = stats.lengths.tokens, stats.lengths.characters
    assert (tok["good"].mean, tok["good"].median, tok["good"].p90) == (20, 20, pytest.approx(28))
    assert (tok["bad"].mean, tok["bad"].median, tok["bad"].p90) == (pytest.approx(55 / 3), 10, pytest.approx(34))
    assert (tok["raw"].mean, tok["raw"].p90) == (8, 8)
    assert (chars["good"].mean, chars["good"].median, chars["good"].p90) == (
        pytest.approx(59 / 3), 20, pytest.approx(24.8))
    assert (chars["bad"].mean, chars["bad"].median, chars["bad"].p90) == (pytest.approx(61 / 3), 12, pytest.approx(32))
    assert (chars["raw"].mean, chars["raw"].median, chars["raw"].p90) == (
        pytest.approx(23 / 3), 5, pytest.approx(11.4))

    b = stats.length_bias
    assert b.ratio_tokens == pytest.approx(20 / (55 / 3))
    assert b.ratio_characters == pytest.approx(59 / 61)
    assert b.share_chosen_longer_tokens == pytest.approx(2 / 3)
    assert b.share_chosen_longer_characters == pytest.approx(2 / 3)

    assert stats.features == {"Safety": 2, "Accuracy": 2, "Helpfulness": 1}
    assert stats.extras == {"Concision": 1}

    d = stats.duplicates
    assert (d.prompts, d.responses, d.rows_with_equal_responses) == (1, {"good": 0, "bad": 0, "raw": 1}, 0)

    leak = stats.leakage
    assert leak.rate == {"good": pytest.approx(1 / 3), "bad": pytest.approx(1 / 3), "raw": 0}
    assert leak.rows_any == pytest.approx(2 / 3)
    assert leak.terms == {"safe": 1, "guidelines": 1, "accuracy": 1}

    assert stats.truncation.rate == {"good": 0, "bad": pytest.approx(1 / 3), "raw": 0}
    assert stats.truncation.rows_any == pytest.approx(1 / 3)

    s = stats.scoring
    assert s is not None
    assert (s.scored_rows, s.scored_kept_rows) == (4, 3)
    assert s.on_policy_kept == pytest.approx((0.5 + 0.25 + 0.2 + 0.1 + 0.4 + 0.3) / 6)
    assert s.on_policy_all == pytest.approx((0.5 + 0.25 + 0.2 + 0.1 + 0.4 + 0.3 + 2 * math.exp(-0.5)) / 8)
    assert s.on_policy_good_kept == pytest.approx((0.5 + 0.2 + 0.4) / 3)
    assert s.ordering_holds_kept == pytest.approx(2 / 3)
    assert s.ordering_holds_all == pytest.approx(2 / 4)


def test_unscored_dataset_has_no_scoring_section(tmp_path: Path) -> None:
    records = [make_record(i) for i in range(3)]
    stats = compute_stats(records)
    assert stats.scoring is None
    assert stats.leakage.rows_any == 0


def test_stats_command_writes_json_plots_and_card(dataset: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads((dataset / "stats.json").read_text())
    assert printed == stored
    assert printed["funnel"]["kept"] == 3
    assert printed["plots"] == ["plots/lengths.png", "plots/on_policy.png"]
    for plot in printed["plots"]:
        assert (dataset / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (dataset / "README.md").read_text()
    assert "![Response lengths (tokens) per variant](plots/lengths.png)" in card


def test_stats_command_prints_tables(dataset: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "Funnel" in result.stdout and "equal_responses" in result.stdout
    assert "likelihood ordering holds" in result.stdout
    assert not (dataset / "plots").exists()


def test_stats_command_logs_its_summary(dataset: Path) -> None:
    """The README: a command's log holds its summary. The tables went to the terminal only: the log of a stats run
    held its command line and how long it took."""
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert result.exit_code == 0, result.output
    log = next((dataset / "logs").glob("stats-*.log")).read_text(encoding="utf-8")
    for line in ("Funnel (all rows)", "equal_responses", "Checks on the kept rows", "duplicate prompts: 1",
                 "likelihood ordering holds"):
        assert line in log, line


def test_unscored_stats_name_the_folder_in_the_score_hint(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "my data", [make_record(i) for i in range(3)])
    result = CliRunner().invoke(app, ["stats", str(folder), "--no-plots", "--no-card"])
    assert result.exit_code == 0, result.output
    assert f"not scored: run `ssogen score '{folder}' --model M` for on-policy-ness" in result.stdout


def test_not_an_output_folder_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "not an ssogen output folder" in result.stderr


def test_corrupt_parquet_is_one_line(dataset: Path) -> None:
    (dataset / "data" / "triplets" / "train-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 2
    assert "corrupt parquet file" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_damaged_page_is_one_line_before_anything_is_written(dataset: Path) -> None:
    """A triplets file whose footer reads but whose pages do not decode: stats failed once its log was open (which
    stays in a folder ssogen had marked before), with Arrow's message on three lines, one quoting a damaged byte."""
    file = OutputFolder(dataset).config_file("triplets")
    with OutputFolder(dataset).claim("ssogen generate"):  # marked, as generate leaves its folder
        damage_pages(file)
    before = snapshot(dataset)
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {file}: corrupt parquet file (") and line.isprintable(), line
    assert snapshot(dataset) == before  # no log, no stats.json


def test_a_run_stopped_while_its_files_were_rewritten_is_refused(dataset: Path) -> None:
    """`score --filter` killed between two data files left triplets filtered and the pair configs not (manifest
    in_progress): stats described the half-rewritten folder, exit 0, and rendered a card over it."""
    manifest = OutputFolder(dataset).read_manifest()
    OutputFolder(dataset).write_manifest({**manifest, "status": "in_progress", "rewriting": "score"})
    card = (dataset / "README.md").read_bytes() if (dataset / "README.md").exists() else None
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0
    assert "not complete (status 'in_progress'); run the same `ssogen generate` (or `ssogen score`)" in result.stderr
    assert not (dataset / "stats.json").exists()
    assert ((dataset / "README.md").read_bytes() if (dataset / "README.md").exists() else None) == card


def test_leak_terms_cover_extras_and_both_adjectives() -> None:
    from ssogen.dataset.leakage import leak_terms
    from ssogen.principles import load_library

    adjectives = adjectives_of(load_library("default").library)
    # Written out from the default library: Safety is Safe/Unsafe, the extra Concision is Concise/Verbose.
    assert adjectives["safety"] == ("Safe", "Unsafe") and adjectives["concision"] == ("Concise", "Verbose")
    record = make_record(0, features=["Safety"], extra=["Concision"])
    assert set(leak_terms(record, adjectives)) == {"guideline", "guidelines", "Safety", "Safe", "Unsafe",
                                                   "Concision", "Concise", "Verbose"}
    terms = leak_terms(record, adjectives)
    assert find_leaks("That would be unsafe.", terms) == ["unsafe"]  # the bad adjective betrays S-
    assert find_leaks("A verbose, concise reply.", terms) == ["concise", "verbose"]  # an extra's words too
    # A term listed twice (a feature that is also an extra) is reported once.
    assert find_leaks("Safe.", ["Safe", "safe", "SAFE"]) == ["safe"]


def test_statistics_gathered_a_batch_at_a_time_are_those_of_every_row_at_once(dataset: Path) -> None:
    records = hand_records()
    adjectives = adjectives_of(OutputFolder(dataset).library())
    at_once = compute_stats(records, adjectives)
    builder = StatsBuilder(adjectives)
    for batch in in_batches(records, 2):
        builder.add(batch)
    assert builder.result() == at_once
    assert folder_stats(OutputFolder(dataset)) == at_once  # read from the files a batch at a time
    assert at_once.duplicates.responses["raw"] == 1 and at_once.scoring is not None  # the digests found the repeat


def test_stats_reads_each_row_once(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before the log read every row as well (twice the reading of the stats): it reads the footers."""
    read: list[int] = []
    as_records = triplet_files.as_records

    def counted(rows: list[dict[str, object]]) -> list[TripletRecord]:
        read.append(len(rows))
        return as_records(rows)

    monkeypatch.setattr(triplet_files, "as_records", counted)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert sum(read) == len(hand_records())


def test_a_corrupt_file_of_a_pair_config_is_one_line_not_left_out_of_the_card(dataset: Path) -> None:
    """A garbage sso file: stats left the config out of the card and stats.json, exit 0."""
    file = OutputFolder(dataset).config_file("sso")
    file.write_bytes(b"not parquet at all")
    before = snapshot(dataset)
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {file}: corrupt parquet file ("), line
    assert snapshot(dataset) == before
