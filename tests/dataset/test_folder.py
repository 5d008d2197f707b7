"""`OutputFolder`: the layout, the configs round trip, the manifest, the stored library and `--overwrite`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssogen.dataset.folder import CONFIGS, OutputFolder
from ssogen.dataset.splits import SplitSpec
from ssogen.dataset.triplet_files import in_batches
from ssogen.errors import UserError
from ssogen.principles import load_library
from ssogen.testing.folders import make_record, row_counts, write_dataset


def test_the_layout_is_a_hub_dataset_repository_plus_hidden_state(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    assert folder.config_file("dpo") == tmp_path / "data" / "dpo" / "train-00000-of-00001.parquet"
    assert OutputFolder.data_files("sso") == "data/sso/*.parquet"
    assert [folder.relative(p) for p in (folder.card, folder.manifest, folder.resolved_config, folder.library_file,
                                         folder.stats, folder.plots, folder.fingerprint, folder.score_cache("k"))] \
        == ["README.md", "manifest.json", "config.resolved.yaml", "library.yaml", "stats.json", "plots",
            ".ssogen/fingerprint.json", ".ssogen/score/k"]


def test_configs_round_trip_and_empty_configs_keep_their_types(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    records = [make_record(0), make_record(1, kept=False, drop_reason="equal_responses", lp_good_plain=-1.5)]
    assert folder.write_configs(records) == {"triplets": 2, "dpo": 1, "sso": 1, "reward": 1, "pairs": 3}
    assert folder.read_triplets() == records
    assert row_counts(folder.root) == {"triplets": 2, "dpo": 1, "sso": 1, "reward": 1, "pairs": 3}
    folder.write_configs([records[1]])  # nothing kept: the pair configs are empty but typed
    schema = pq.read_schema(folder.config_file("dpo"))
    assert str(schema.field("chosen").type) == "list<element: struct<role: string, content: string>>"
    assert set(folder.schemas()) == set(CONFIGS)
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_and_corrupt_files_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        OutputFolder(tmp_path / "nope").read_manifest()
    with pytest.raises(UserError, match=r"not an ssogen output folder \(missing data/triplets/"):
        OutputFolder(tmp_path).read_triplets()
    with pytest.raises(UserError, match=r"missing manifest.json"):
        OutputFolder(tmp_path).read_manifest()
    (tmp_path / "manifest.json").write_text('{\n  "model": \n}')
    with pytest.raises(UserError, match=r"manifest.json:3: invalid JSON"):
        OutputFolder(tmp_path).read_manifest()
    folder = OutputFolder(tmp_path)
    folder.config_file("triplets").parent.mkdir(parents=True)
    folder.config_file("triplets").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="corrupt parquet file"):
        folder.read_triplets()


def test_the_library_comes_from_the_stored_file_then_the_manifest(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", [make_record(0)], library={"name": "no-such-library"})
    folder = OutputFolder(out)
    assert folder.library() is None
    folder.write_manifest({**folder.read_manifest(), "library": {"name": "default"}})
    assert folder.library().name == "default"  # the bundled library by its name
    custom = load_library("default").text.replace("name: default", "name: stored-copy", 1)
    folder.write_library(custom)
    assert folder.library_file.read_text() == custom  # stored byte for byte (the manifest's sha256 holds)
    assert folder.library().name == "stored-copy"


def test_mark_incomplete_flips_the_status_of_a_finished_run(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    folder.mark_incomplete()
    assert folder.read_manifest()["status"] == "in_progress"
    OutputFolder(tmp_path / "fresh").mark_incomplete()  # no manifest yet: nothing to do
    assert not (tmp_path / "fresh").exists()


def test_remove_run_outputs_removes_exactly_what_a_run_wrote(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    folder.write_library(load_library("default").text)
    folder.write_resolved_config("seed: 0\n")
    folder.write_stats({})
    folder.write_judge({"metrics": {}})
    folder.plots.mkdir()
    (folder.plots / "lengths.png").write_bytes(b"png")
    folder.logs.mkdir()
    (folder.logs / "generate-20250101T120000Z.log").write_text("log")
    (folder.logs / "score-20250101T120000Z-2.log").write_text("log")
    (folder.config_dir("dpo") / "test-00000-of-00001.parquet").write_bytes(b"a held-out split")
    folder.work_dir.mkdir()
    (folder.work_dir / "rows-00000.jsonl").write_text("{}\n")
    (folder.root / "notes.txt").write_text("mine")
    folder.remove_run_outputs()
    assert sorted(p.name for p in folder.root.iterdir()) == [".ssogen", "notes.txt"]
    assert list(folder.work_dir.iterdir()) == []
    shutil.rmtree(folder.root)
    folder.remove_run_outputs()  # a folder that does not exist: nothing to remove


def test_a_card_a_person_wrote_survives_overwrite(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    folder.card.write_text("# written by hand\n")
    folder.remove_run_outputs()
    assert folder.card.read_text() == "# written by hand\n" and not folder.manifest.exists()


def test_overwrite_removes_nothing_behind_a_link_or_outside_the_configs(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    outside = tmp_path / "outside"
    shard = outside / "archive" / "train-00000-of-00001.parquet"
    log = outside / "logs" / "generate-20200101T000000Z.log"
    for path in (shard, log):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not ours")
    (folder.root / "data" / "archive").symlink_to(outside / "archive")  # data/* named like a config, behind a link
    folder.logs.symlink_to(outside / "logs")
    mine = folder.root / "data" / "mine" / "train-00000-of-00001.parquet"  # a folder of the user's own
    mine.parent.mkdir()
    mine.write_text("kept")
    torn = folder.root / ".manifest.json.1234.tmp"  # a write cut short at the top of the folder
    torn.write_text("{")
    folder.remove_run_outputs()
    assert shard.read_text() == log.read_text() == "not ours" and mine.read_text() == "kept"
    assert not torn.exists()
    assert not folder.config_file("dpo").exists()  # ssogen's own files went


# -- the held-out split (--test-size) ---------------------------------------------------------------------------

def _split_rows() -> list:  # type: ignore[type-arg]
    records = [make_record(i) for i in range(20)]
    records.append(make_record(20, prompt="question 4"))  # a query asked twice: both rows in one split
    records.append(make_record(21, kept=False, drop_reason="equal_responses"))
    return records


def test_a_test_split_holds_whole_queries_drawn_with_the_seed(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "a")
    records = _split_rows()
    counts = folder.write_configs(records, SplitSpec(test_size=0.25, seed=5))
    assert counts == {"triplets": 22, "dpo": 21, "sso": 21, "reward": 21, "pairs": 63}
    assert sorted(folder.split_files("dpo")) == ["test", "train"]
    test_prompts = folder.read_config("triplets", split="test").column("prompt").to_pylist()
    train_prompts = folder.read_config("triplets", split="train").column("prompt").to_pylist()
    assert len(set(test_prompts)) == 5 and not set(test_prompts) & set(train_prompts)  # round(0.25 x 21 queries)
    assert test_prompts.count("question 4") in (0, 2)
    dpo_test = {p[-1]["content"] for p in folder.read_config("dpo", split="test").column("prompt").to_pylist()}
    assert dpo_test <= set(test_prompts)
    assert folder.read_triplets() == sorted(records, key=lambda r: r.position)  # every split, input order
    assert row_counts(folder.root) == counts
    # The same seed draws the same queries in another folder; another seed others.
    other = OutputFolder(tmp_path / "b")
    other.write_configs(list(reversed(records)), SplitSpec(test_size=0.25, seed=5))
    assert sorted(other.read_config("triplets", split="test").column("prompt").to_pylist()) == sorted(test_prompts)
    other.write_configs(records, SplitSpec(test_size=0.25, seed=6))
    assert sorted(other.read_config("triplets", split="test").column("prompt").to_pylist()) != sorted(test_prompts)
    # Without a split the test files go: one train split again.
    folder.write_configs(records)
    assert list(folder.split_files("dpo")) == ["train"] and row_counts(folder.root)["dpo"] == 21


def test_the_three_pairs_of_a_query_are_in_its_split_together(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    folder.write_configs(_split_rows(), SplitSpec(test_size=0.25, seed=5))
    for split in ("train", "test"):
        ids = folder.read_config("dpo", split=split).column("id").to_pylist()
        pairs = folder.read_config("pairs", split=split)
        assert ids and pairs.column("id").to_pylist() == [row_id for row_id in ids for _ in range(3)]
        assert pairs.column("pair").to_pylist() == ["P1", "P2", "P3"] * len(ids)


def test_pairs_are_written_a_piece_at_a_time_with_the_rows_of_one_table(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`pairs` (three long rows per query) is the largest config: it is built and written in pieces, never held
    whole, and holds the rows it would as one table."""
    from ssogen.dataset import configs

    monkeypatch.setattr(configs, "READ_BACK_ROWS", 2)
    monkeypatch.setattr(configs, "PAIRS_PIECE_ROWS", 9)
    records = _split_rows()
    folder = OutputFolder(tmp_path)
    folder.write_configs(records, SplitSpec(test_size=0.25, seed=5))
    train = folder.config_file("pairs")
    # 16 kept queries of 3 rows, read back 2 queries at a time: a piece once 9 rows are made, 12 each
    assert pq.ParquetFile(train).metadata.num_row_groups == 4
    by_id = {row["id"]: row for row in configs.config_rows(records)["pairs"][::3]}
    for split in ("train", "test"):
        written = folder.read_config("pairs", split=split).to_pylist()
        ids = [row["id"] for row in written[::3]]
        one_table = [row for r in sorted(records, key=lambda r: r.position) if r.id in ids
                     for row in configs.config_rows([r])["pairs"]]
        assert ids and set(ids) <= set(by_id) and written == one_table


def test_training_reads_the_train_split_only(tmp_path: Path) -> None:
    from ssogen.train.inputs import read_sso_rows

    folder = OutputFolder(tmp_path)
    folder.write_configs(_split_rows(), SplitSpec(test_size=0.25, seed=5))
    train_ids = folder.read_config("sso", split="train").column("id").to_pylist()
    assert folder.read_config("sso", split="test").num_rows > 0
    assert [row["id"] for row in read_sso_rows(folder.root)] == train_ids


def test_training_refuses_an_sso_file_that_lost_one_truncation_column(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from ssogen.errors import UserError
    from ssogen.train.inputs import read_sso_rows

    folder = OutputFolder(tmp_path)
    folder.write_configs([make_record(0, finish_reason_raw="length")])
    path = folder.config_file("sso")
    pq.write_table(pq.read_table(path).drop_columns(["truncated_raw"]), path)  # yo would read as complete
    with pytest.raises(UserError, match=r"missing column\(s\) truncated_raw beside truncated_good, truncated_bad$"):
        read_sso_rows(folder.root)
    pq.write_table(pq.read_table(path).drop_columns(["truncated_good", "truncated_bad"]), path)
    assert read_sso_rows(folder.root)[0]["truncated_raw"] is False  # none at all: an older file, read as complete


def test_a_split_without_rows_in_a_config_gets_no_file(tmp_path: Path) -> None:
    from ssogen.dataset.splits import test_prompts

    folder = OutputFolder(tmp_path)
    records = [make_record(0), make_record(1, kept=False, drop_reason="equal_responses")]
    # The first seed that draws the dropped row's query for the test split.
    seed = next(s for s in range(100) if test_prompts([r.prompt for r in records],
                                                      SplitSpec(test_size=0.5, seed=s)) == {records[1].prompt})
    folder.write_configs(records, SplitSpec(test_size=0.5, seed=seed))
    assert folder.read_config("triplets", split="test").column("kept").to_pylist() == [False]
    # Its pair configs have no test rows, so no test file: datasets cannot read an empty parquet split.
    assert list(folder.split_files("dpo")) == ["train"] and list(folder.split_files("triplets")) == ["train", "test"]


def test_files_of_other_tools_count_as_train(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    folder.write_config("dpo", [])
    folder.config_file("dpo").rename(folder.config_dir("dpo") / "part-0.parquet")
    assert folder.split_files("dpo") == {"train": [folder.config_dir("dpo") / "part-0.parquet"]}


# -- logs -------------------------------------------------------------------------------------------------------

def test_log_files_are_named_by_command_and_utc_time(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    first = folder.log_file("generate")
    assert re.fullmatch(r"logs/generate-\d{8}T\d{6}Z\.log", folder.relative(first))
    first.parent.mkdir()
    first.write_text("")
    second = folder.log_file("generate")
    assert second != first and second.parent == first.parent  # a second one in the same second


def test_a_folder_of_logs_only_is_empty_and_overwrite_spares_the_log_being_written(tmp_path: Path) -> None:
    from ssogen.runlog import command_log

    folder = OutputFolder(tmp_path / "out")
    old = folder.log_file("generate")
    old.parent.mkdir(parents=True)
    old.write_text("an earlier command that stopped early\n")
    assert not folder.holds_anything()  # a failed start leaves logs only: the folder is still free
    (folder.root / "notes.txt").write_text("mine")
    assert folder.holds_anything()
    (folder.root / "notes.txt").unlink()
    (folder.logs / "mine.log").write_text("a person's log")  # not a name ssogen gives: the folder is not free
    assert folder.holds_anything()
    current = folder.root / "logs" / "generate-now.log"
    with command_log(current, "generate", capture_fds=False, import_transformers=False):
        folder.remove_run_outputs()
        assert current.exists() and not old.exists() and (folder.logs / "mine.log").exists()
    assert "finished in" in current.read_text()


@pytest.mark.parametrize(("test_size", "expected"), [
    (0.29, 3),  # round(2.9) = 3 (not the floor, 2)
    (0.35, 4),  # round(3.5) = 4
    (0.01, 1),  # round(0.1) = 0, but the test split gets at least one query
    (0.99, 9),  # round(9.9) = 10, but at least one query is left for train
])
def test_the_test_split_holds_round_of_size_times_queries_within_bounds(test_size: float, expected: int) -> None:
    from ssogen.dataset.splits import test_prompts

    prompts = [f"query {i}" for i in range(10)] * 2  # ten distinct queries, each twice
    held_out = test_prompts(prompts, SplitSpec(test_size=test_size, seed=3))
    assert len(held_out) == expected and held_out <= set(prompts)


def test_configs_written_a_batch_of_rows_at_a_time_are_byte_for_byte_those_of_one_batch(tmp_path: Path) -> None:
    # Distinct responses past parquet's 1 MB dictionary limit: a file written from many chunks per column falls back
    # to plain encoding at another row and its bytes differ; dropped rows and a test split: every config is batched.
    records = [make_record(i, f"question {i % 50}", response_good=f"{i} " + "word " * 600, kept=i % 7 != 0,
                           drop_reason=None if i % 7 else "equal_responses") for i in range(1000)]
    one, batched = OutputFolder(tmp_path / "one"), OutputFolder(tmp_path / "batched")
    split = SplitSpec(test_size=0.3, seed=2)
    counts = one.write_configs(records, split)  # fewer rows than a batch: one batch
    assert batched.write_configs(lambda: in_batches(records, 100), split) == counts
    files = sorted(path.relative_to(one.root) for path in one.root.rglob("*.parquet"))
    assert len(files) == 10
    assert [(batched.root / f).read_bytes() == (one.root / f).read_bytes() for f in files] == [True] * len(files)


def test_triplets_are_read_a_batch_at_a_time_in_input_order_from_every_split(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "a")
    records = _split_rows()
    folder.write_configs(records, SplitSpec(test_size=0.25, seed=5))  # test rows interleave with train rows
    batches = list(folder.triplet_batches(size=4))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 2]
    assert [r for b in batches for r in b] == records
    other = OutputFolder(tmp_path / "b")  # a file out of input order (not ssogen's): read whole and sorted
    other.write_configs(list(reversed(records)), SplitSpec(test_size=0.25, seed=5))
    assert [r for b in other.triplet_batches(size=4) for r in b] == records
